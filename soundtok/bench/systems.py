"""What ``soundtok bench`` compares: registered tokenizers (presets, ``preset@k`` for the first k codebooks,
checkpoint folders) and Opus as a classical reference codec.

A :class:`System` turns one 16 kHz clip into its decoded version and says what that cost. Its ``fingerprint``
identifies the exact codes it makes (tokenizers: the registry fingerprint of config + weights + codebooks used;
Opus: settings + the ffmpeg build), so a cached result is reused only for the very same system.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from dataclasses import dataclass, field

import torch

from soundtok.errors import SoundtokError
from soundtok.types import Tokens

#: families whose presets also run at fewer codebooks by default (preset name -> extra codebook counts)
DEFAULT_CODEBOOK_VARIANTS = {"codec": (1, 3)}
#: Opus references (bit/s) that join the default systems when ffmpeg with libopus is installed
DEFAULT_OPUS = (6000, 12000)


@dataclass
class Output:
    wav: torch.Tensor  # [T] at 16 kHz, the input's length
    encode_s: float
    decode_s: float
    tokens: Tokens | None = None  # None for a reference codec


@dataclass
class System:
    name: str
    kind: str  # "tokenizer" or "reference codec"
    fingerprint: str
    bitrate: float  # nominal bit/s
    token_rate: float | None  # tokens per second (None: not a tokenizer)
    parameters: int | None
    description: str = ""
    _tokenizer: object | None = field(default=None, repr=False)
    _opus_bitrate: int | None = field(default=None, repr=False)

    def run(self, wav: torch.Tensor, sample_rate: int) -> Output:
        """Encode and decode ``wav`` ([T] float32 at ``sample_rate``); the output is at ``sample_rate`` too."""
        from soundtok.audio.io import resample

        if self._opus_bitrate is not None:
            from soundtok.eval.opus import opus_transcode

            start = time.perf_counter()
            out = opus_transcode(wav, sample_rate, self._opus_bitrate)
            return Output(out.wav, time.perf_counter() - start, 0.0)
        tok = self._tokenizer
        from soundtok.tokenizers.base import AudioTokenizer

        assert isinstance(tok, AudioTokenizer)
        with torch.inference_mode():
            start = time.perf_counter()
            tokens = tok.encode(wav[None, None], sample_rate)
            middle = time.perf_counter()
            decoded = tok.decode(tokens)[0]
            end = time.perf_counter()
        y = resample(decoded, tok.sample_rate, sample_rate).mean(0)
        y = torch.nn.functional.pad(y, (0, max(0, wav.shape[-1] - y.shape[-1])))[: wav.shape[-1]]
        return Output(y.float(), middle - start, end - middle, tokens)


def tokenizer_system(spec: str) -> System:
    """A preset (``codec-16k``), a preset at its first k codebooks (``codec-16k@3``), or a checkpoint folder."""
    from soundtok.registry import load

    base, _, k = spec.partition("@")
    tok = load(base)
    if k:
        set_num_codebooks = getattr(type(tok), "set_num_codebooks", None)
        if set_num_codebooks is None:
            raise SoundtokError(f"{base!r} has a fixed number of codebooks; drop '@{k}' from {spec!r}")
        if not k.isdigit():
            raise SoundtokError(f"{spec!r}: the part after '@' must be a number of codebooks")
        try:
            set_num_codebooks(tok, int(k))
        except ValueError as exc:
            raise SoundtokError(f"{spec!r}: {exc}") from None
    tok.eval()
    return System(
        name=spec,
        kind="tokenizer",
        fingerprint=tok.identity.fingerprint,
        bitrate=float(tok.bitrate),
        token_rate=float(tok.token_rate),
        parameters=sum(t.numel() for t in [*tok.parameters(), *tok.buffers()]),
        description=f"{tok.family} tokenizer, {tok.num_levels} level(s) at {tok.sample_rate} Hz",
        _tokenizer=tok,
    )


def opus_system(bitrate: int) -> System:
    """Opus at ``bitrate`` bit/s through ffmpeg (see :mod:`soundtok.eval.opus`)."""
    from soundtok.eval.opus import default_application, ffmpeg_version

    version = ffmpeg_version()
    if version is None:
        raise SoundtokError("the Opus reference needs ffmpeg with libopus (apt-get install ffmpeg)")
    app = default_application(bitrate)
    return System(
        name=f"opus-{bitrate // 1000}k",
        kind="reference codec",
        fingerprint=hashlib.sha256(f"opus {bitrate} {app} {version}".encode()).hexdigest()[:16],
        bitrate=float(bitrate),
        token_rate=None,
        parameters=None,
        description=f"Opus {bitrate / 1000:g} kbit/s ({app}), {version}",
        _opus_bitrate=bitrate,
    )


def load_system(spec: str) -> System:
    """``opus-6k`` style names are Opus references; anything else goes to :func:`tokenizer_system`."""
    match = re.fullmatch(r"opus-(\d+)k", spec)
    return opus_system(int(match.group(1)) * 1000) if match else tokenizer_system(spec)


def default_systems() -> tuple[list[str], list[str]]:
    """(names to run, notes on what was left out): every available registered preset, the codebook variants of
    :data:`DEFAULT_CODEBOOK_VARIANTS`, and the Opus references when ffmpeg is installed."""
    from soundtok.registry import available, list_presets

    names, notes = [], []
    for preset in list_presets():
        reason = available(preset)
        if reason:
            notes.append(f"{preset.name}: left out ({reason})")
            continue
        names.append(preset.name)
        names += [f"{preset.name}@{k}" for k in DEFAULT_CODEBOOK_VARIANTS.get(preset.family, ())]
    if shutil.which("ffmpeg"):
        names += [f"opus-{b // 1000}k" for b in DEFAULT_OPUS]
    else:
        notes.append("opus: left out (ffmpeg is not installed: apt-get install ffmpeg)")
    return names, notes
