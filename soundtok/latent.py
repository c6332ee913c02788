"""Frozen continuous latent autoencoders: the space the Make Some Noise tokenizer (``msn``) quantizes.

Shapes: B batch items, T samples, D latent channels, F latent frames.

A :class:`LatentAutoencoder` maps audio to a sequence of continuous latent frames and back. It is *frozen*: the
tokenizer trains on top of it and never changes it. The contract, at ``sample_rate``:

* ``encode(wav [B, T], lengths [B] | None) -> latents [B, D, F]`` with ``F = T // hop_length``; frame ``f``
  describes the audio around samples ``[f * hop, (f + 1) * hop)``; item ``b`` has ``ceil(lengths[b] / hop)`` valid
  frames (the rest describe padding);
* ``decode(latents [B, D, F], frame_lengths [B] | None) -> wav [B, 1, F * hop_length]``, zero after each item's
  ``frame_lengths[b] * hop`` samples, and an item's audio must not depend on the other items of the batch;
* ``context_frames``: how many frames of neighbouring signal one latent frame depends on, on each side (so the
  tokenizer can encode long audio in windows and get exactly what one pass would give).

Implementations:

* :class:`MelLatentAutoencoder`, the default: soundtok's one log-mel (:mod:`soundtok.audio.mel`; 80 channels at
  62.5 frames/s for 16 kHz) as the encoder and a mel vocoder (:mod:`soundtok.vocoder`) as the decoder. The vocoder
  is named (``"vocoder-16k"``, the shipped one; ``"griffin-lim"``, no training but lower quality, used only when
  asked for; or a vocoder checkpoint folder) and loaded on first use, so training on the latents never needs it.
* a user's own autoencoder in a folder (:func:`load_latent_autoencoder`). The paper (arXiv 2503.22275) uses the
  Stable Audio Open VAE; its weights are gated behind a licence click-through on the Hugging Face Hub and cannot
  be had offline, so soundtok ships the mel autoencoder instead. Anyone with the weights (or any other VAE) can
  wrap it in a class implementing the protocol, register it in code and save it in this folder format::

      @register_autoencoder("my-vae")
      class MyVAE(nn.Module): ...

  ``config.json``::

      {"format": "soundtok-latent-autoencoder", "version": 2, "kind": "my-vae", "kwargs": {"latent_dim": 64}}

  ``model.safetensors``: the module's ``state_dict()``, loaded strictly.

  A folder names a *registered* kind, never code: the loader looks the name up in the registry's latent
  autoencoder families (:data:`soundtok.registry.LATENT_AUTOENCODERS`, filled by :func:`register_autoencoder`; so
  the package defining it must be imported first), checks ``kwargs`` against the constructor's parameters (JSON
  scalars or lists of them, numbers finite and bounded), builds the model on the ``meta`` device to compare its
  tensor shapes with the weights file's header (so a config cannot allocate more than its weights), and only
  then builds it for real, loads the weights strictly and puts it in eval mode with gradients off. Version 1
  folders named ``"package.module:Class"``; they load when that string is a registered class's own name (no
  import ever happens). :func:`save_latent_autoencoder` writes the folder.

>>> import torch
>>> ae = MelLatentAutoencoder(vocoder="griffin-lim")
>>> z = ae.encode(torch.zeros(2, 16000 // 256 * 256))  # [B, T] -> [B, 80, 62]
>>> z.shape, ae.decode(z).shape
(torch.Size([2, 80, 62]), torch.Size([2, 1, 15872]))
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from soundtok.audio.mel import MelConfig, log_mel
from soundtok.checkpoint import WEIGHTS_FILE, build_matching_weights, load_weights
from soundtok.config import check_value
from soundtok.errors import (
    CheckpointError,
    InvalidAudioError,
    OutputExistsError,
    TokenizerUnavailableError,
    UnknownTokenizerError,
)
from soundtok.fileio import atomic_write
from soundtok.registry import LATENT_AUTOENCODERS, Family, add_family
from soundtok.vocoder import GriffinLim, MelVocoder, load_vocoder

AUTOENCODER_FORMAT = "soundtok-latent-autoencoder"
AUTOENCODER_VERSION = 2  # version 1 named a "module:Class"; it still loads when that is a registered class
CONFIG_FILE = "config.json"


@runtime_checkable
class LatentAutoencoder(Protocol):
    """A frozen audio <-> continuous latent frames model; see the module docstring for the contract."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def hop_length(self) -> int: ...

    @property
    def latent_dim(self) -> int: ...

    @property
    def context_frames(self) -> int: ...

    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor: ...


A = TypeVar("A", bound=type[nn.Module])


def register_autoencoder(kind: str) -> Callable[[A], A]:
    """Class decorator: let folders name this autoencoder class as ``kind`` (a family of the registry's latent
    autoencoder kind, rebuilt from its constructor's keyword arguments). Registering the same class again is a
    no-op.

    >>> @register_autoencoder("doc-example")
    ... class MyVAE(nn.Module): ...
    >>> LATENT_AUTOENCODERS.families.pop("doc-example").cls is MyVAE
    True
    """

    def wrap(cls: A) -> A:
        known = LATENT_AUTOENCODERS.families.get(kind)
        if known is None:
            add_family(Family(kind, cls, config_class=None), LATENT_AUTOENCODERS)
        elif known.cls is not cls:
            raise ValueError(f"latent autoencoder kind {kind!r} is registered twice")
        return cls

    return wrap


def _registered() -> dict[str, type[nn.Module]]:
    """The registered autoencoder classes, by kind."""
    return {kind: family.cls for kind, family in LATENT_AUTOENCODERS.families.items()}


def _legacy_kind(class_path: str) -> str | None:
    """The registered kind whose class a version-1 folder named as ``"module:Class"``, if any. Only registered
    classes are compared (by the name they were saved under), so nothing is ever imported."""
    by_path = {f"{cls.__module__}:{cls.__qualname__}": kind for kind, cls in _registered().items()}
    return by_path.get(class_path)


class MelLatentAutoencoder(nn.Module):
    """soundtok's log-mel as latents, a mel vocoder back to audio.

    ``encode`` zeroes each item after its length and appends ``n_fft // 2`` zeros before the log-mel, so every
    kept frame sees real samples and zeros only (never the reflection that ``log_mel`` pads with): an item's frames
    are the same alone or in a batch padded to any length. ``decode`` repeats each item's last valid frame once
    (a vocoder turns ``F + 1`` frames into ``F`` hops of audio).
    """

    def __init__(self, vocoder: str | os.PathLike[str] | MelVocoder = "vocoder-16k", mel: MelConfig | None = None):
        super().__init__()
        self.mel = mel or MelConfig()
        named = isinstance(vocoder, (str, os.PathLike))
        self.vocoder_name = str(vocoder) if named else str(getattr(vocoder, "name", type(vocoder).__name__))
        self._vocoder: MelVocoder | None = None  # a module once set: registered, so .to(device) moves it
        if not isinstance(vocoder, (str, os.PathLike)):
            if vocoder.mel_config != self.mel:
                raise ValueError("the vocoder inverts another log-mel than this autoencoder's MelConfig")
            self._vocoder = vocoder

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def hop_length(self) -> int:
        return self.mel.hop_length

    @property
    def latent_dim(self) -> int:
        return self.mel.n_mels

    @property
    def context_frames(self) -> int:
        return -(-(self.mel.n_fft // 2) // self.mel.hop_length)  # the STFT window's half-width, in frames

    @property
    def vocoder(self) -> MelVocoder:
        """The vocoder, loaded on first use (``load_vocoder``)."""
        if self._vocoder is None:
            try:
                loaded = load_vocoder(self.vocoder_name)
            except (UnknownTokenizerError, TokenizerUnavailableError):
                raise TokenizerUnavailableError(
                    f"the mel latent autoencoder decodes through the vocoder {self.vocoder_name!r}, which is not "
                    "installed: train it (soundtok train configs/vocoder-16k.yaml RUN_DIR) and copy its export to "
                    "soundtok/checkpoints/, or choose vocoder='griffin-lim' (no training, lower quality)"
                ) from None
            if loaded.mel_config != self.mel:
                raise CheckpointError(f"vocoder {self.vocoder_name!r} inverts another log-mel than {self.mel}")
            self._vocoder = loaded.requires_grad_(False).eval()
        return self._vocoder

    def fingerprint(self) -> str:
        """Hashes the mel definition and the vocoder (its weights, or Griffin-Lim's settings)."""
        vocoder = self.vocoder
        h = hashlib.sha256(("mel:" + self.mel.to_json()).encode())
        if isinstance(vocoder, GriffinLim):
            h.update(f"griffin-lim:{vocoder.iterations}:{vocoder.momentum}:{vocoder.seed}".encode())
        else:
            h.update(module_fingerprint(vocoder).encode())  # type: ignore[arg-type]
        return h.hexdigest()[:16]

    @torch.no_grad()
    def encode(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``wav [B, T] -> [B, n_mels, T // hop]`` log-mel frames."""
        wav = _check_wav(wav)
        frames = wav.shape[-1] // self.hop_length
        if lengths is not None:
            wav = wav * (torch.arange(wav.shape[-1], device=wav.device)[None] < lengths.to(wav.device)[:, None])
        padded = F.pad(wav, (0, self.mel.n_fft // 2))
        return log_mel(padded, self.mel)[..., :frames]  # [B, n_mels, F]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``latents [B, n_mels, F] -> wav [B, 1, F * hop]`` through the vocoder."""
        check_latents(latents, self.latent_dim)
        batch, dim, frames = latents.shape
        if frame_lengths is None:
            frame_lengths = torch.full((batch,), frames)
        frame_lengths = frame_lengths.to(latents.device).clamp(1, frames)
        # each item's frames, then its last valid frame repeated: once (F + 1 frames give F hops), or up to the
        # n_fft // hop + 1 frames Griffin-Lim's STFT needs for very short items
        shortest = self.mel.n_fft // self.hop_length + 1
        extended_lengths = (frame_lengths + 1).clamp(min=shortest)  # [B]
        width = max(frames + 1, int(extended_lengths.max()))
        source = torch.minimum(torch.arange(width, device=latents.device)[None], (frame_lengths - 1)[:, None])
        extended = latents.gather(2, source[:, None, :].expand(batch, dim, width))  # [B, D, width]
        vocoder = self.vocoder
        if isinstance(vocoder, nn.Module):
            vocoder.to(latents.device)  # loaded on the CPU on first use
        wav = vocoder.synthesize(extended, extended_lengths)[..., : frames * self.hop_length]  # [B, 1, F * hop]
        samples = torch.arange(wav.shape[-1], device=wav.device)[None, None]
        return wav * (samples < frame_lengths[:, None, None] * self.hop_length)


def module_fingerprint(module: nn.Module) -> str:
    """A short hash of a module's class and weights."""
    h = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}".encode())
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def autoencoder_fingerprint(autoencoder: LatentAutoencoder) -> str:
    """What identifies an autoencoder's behaviour: its own ``fingerprint()`` if it has one, else class + weights."""
    own = getattr(autoencoder, "fingerprint", None)
    if callable(own):
        return str(own())
    if isinstance(autoencoder, nn.Module):
        return module_fingerprint(autoencoder)
    return f"{type(autoencoder).__module__}.{type(autoencoder).__qualname__}"


def resolve_autoencoder(name: str, vocoder: str = "vocoder-16k") -> LatentAutoencoder:
    """``"mel"`` -> :class:`MelLatentAutoencoder` with ``vocoder``; anything else is a folder for
    :func:`load_latent_autoencoder`."""
    if name == "mel":
        return MelLatentAutoencoder(vocoder)
    return load_latent_autoencoder(name)


def save_latent_autoencoder(
    model: nn.Module,
    folder: str | os.PathLike[str],
    *,
    kwargs: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Write ``model`` in the folder format of :func:`load_latent_autoencoder`.

    Its class must be registered (:func:`register_autoencoder`); ``kwargs`` rebuild it and must be JSON scalars or
    lists of them.
    """
    if not isinstance(model, LatentAutoencoder):
        raise TypeError(f"{type(model).__name__} does not implement soundtok.latent.LatentAutoencoder")
    kinds = [kind for kind, cls in _registered().items() if cls is type(model)]
    if not kinds:
        raise TypeError(
            f"{type(model).__qualname__} is not a registered latent autoencoder; decorate it with "
            "@soundtok.latent.register_autoencoder('a-name') so a folder can name it"
        )
    folder = Path(folder)
    if (folder / CONFIG_FILE).exists() and not force:
        raise OutputExistsError(f"{folder} already holds an autoencoder; pass force=True to overwrite it")
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format": AUTOENCODER_FORMAT, "version": AUTOENCODER_VERSION, "kind": kinds[0], "kwargs": kwargs or {}}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)), force=True)
    atomic_write(folder / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=2) + "\n"), force=True)
    return folder


def load_latent_autoencoder(folder: str | os.PathLike[str], device: str = "cpu") -> LatentAutoencoder:
    """A user's frozen latent autoencoder from ``folder`` (format and checks in the module docstring)."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{folder}: no {CONFIG_FILE}; a latent autoencoder folder holds {CONFIG_FILE} naming its kind "
            f"and {WEIGHTS_FILE} (see soundtok.latent); or use autoencoder='mel'"
        )
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{path}: corrupt JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != AUTOENCODER_FORMAT:
        raise CheckpointError(f"{path}: not a latent autoencoder config (expected format {AUTOENCODER_FORMAT!r})")
    kind = _kind(meta, path)
    cls = _registered()[kind]
    kwargs = _checked_kwargs(cls, meta.get("kwargs", {}), path)
    model = build_matching_weights(lambda: cls(**kwargs), folder, f"latent autoencoder {kind!r}")
    if not isinstance(model, LatentAutoencoder):
        raise CheckpointError(
            f"{kind!r} ({cls.__qualname__}) must implement soundtok.latent.LatentAutoencoder "
            "(sample_rate, hop_length, latent_dim, context_frames, encode, decode)"
        )
    load_weights(model, folder, f"latent autoencoder {kind!r}")
    return model.to(device).eval().requires_grad_(False)  # type: ignore[return-value]


def _kind(meta: dict[str, Any], path: Path) -> str:
    """The registered kind a config names, checked before anything is built or imported."""
    version = meta.get("version")
    if version == 1:  # "module:Class", accepted only as the saved name of a registered class
        named = meta.get("class")
        kind = _legacy_kind(named) if isinstance(named, str) else None
    elif version == AUTOENCODER_VERSION:
        named = meta.get("kind")
        kind = named if isinstance(named, str) and named in LATENT_AUTOENCODERS.families else None
    else:
        raise CheckpointError(f"{path}: version {version!r}, this soundtok reads versions 1 and {AUTOENCODER_VERSION}")
    if kind is None:
        raise CheckpointError(
            f"{path}: {named!r:.100} is not a registered latent autoencoder (registered: {sorted(_registered())}); "
            "import the package that registers it (@soundtok.latent.register_autoencoder) before loading"
        )
    return kind


def _checked_kwargs(cls: type[nn.Module], kwargs: Any, path: Path) -> dict[str, Any]:
    """``kwargs`` as JSON scalars or lists of them (finite, bounded) that ``cls``'s constructor accepts."""
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{path}: 'kwargs' must be an object, got {type(kwargs).__name__}")
    scalar = bool | int | float | str | None
    try:
        checked = {key: check_value(value, scalar | tuple[scalar, ...], key) for key, value in kwargs.items()}
        inspect.signature(cls).bind(**checked)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: kwargs {kwargs!r:.200} do not fit {cls.__qualname__} ({exc})") from None
    return checked


def check_latents(latents: torch.Tensor, latent_dim: int) -> None:
    """Raise :class:`InvalidAudioError` unless ``latents`` is a finite float ``[B, latent_dim, F]``, ``F >= 1``."""
    if not isinstance(latents, torch.Tensor) or latents.ndim != 3 or not latents.is_floating_point():
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise InvalidAudioError(f"expected float latents shaped [B, D={latent_dim}, F], got {shape}")
    if latents.shape[1] != latent_dim:
        raise InvalidAudioError(
            f"expected {latent_dim} latent channels, got {latents.shape[1]} (shape {tuple(latents.shape)}); "
            "were they made by another autoencoder? Channels go on dim 1"
        )
    if latents.shape[2] < 1:
        raise InvalidAudioError("latents hold no frames")
    if not torch.isfinite(latents).all():
        raise InvalidAudioError("latents hold NaN or infinite values")


def _check_wav(wav: torch.Tensor) -> torch.Tensor:
    if not isinstance(wav, torch.Tensor) or wav.ndim != 2 or not wav.is_floating_point():
        shape = tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
        raise InvalidAudioError(f"a latent autoencoder encodes float audio shaped [B, T], got {shape}")
    if not torch.isfinite(wav).all():
        raise InvalidAudioError("the audio holds NaN or Inf values")
    return wav
