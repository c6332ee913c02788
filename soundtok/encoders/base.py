"""The common interface of feature encoders, their output, and the registry behind
:func:`soundtok.encoders.load_encoder`.

A feature encoder maps a batch of mono waveforms to continuous hidden states, one tensor per requested layer, at
a fixed frame rate. It is the front end of the semantic tokenizer (k-means over a layer) and the continuous upper
reference of the probes. Shapes: ``B`` batch, ``T`` samples, ``T'`` frames, ``D`` feature dimension.

- **Input**: ``wav [B, T]`` (or ``[B, 1, T]``) float at the encoder's ``sample_rate`` (16 kHz for every encoder
  here), with ``lengths [B]`` in samples; samples after ``lengths[b]`` are ignored, whatever they hold.
- **Layers** are numbered ``0..num_layers``: 0 is the input of the first transformer block (the encoder's
  embeddings), ``i`` the output of block ``i``. Negative numbers count from the end (-1 = the last layer).
  Each encoder's module docstring says exactly what layer 0 and the last layer contain.
- **Output**: :class:`FeatureOutput` with ``hidden[k] [B, T', D]`` for the ``k``-th requested layer and
  ``lengths [B]``: item ``b`` has ``lengths[b] = encoder.num_frames(samples)`` valid frames and zeros after them.
- **Batching**: every encoder returns, for each item, the features it would return for that item alone (within
  float tolerance); encoders whose network cannot be masked run items in equal-length groups to keep that promise.
- Encoders are frozen: :meth:`FeatureEncoder.forward` runs without gradients, in eval mode.

Example (converts Whisper tiny.en into the cache on first use)::

    encoder = load_encoder("whisper-tiny.en", layers=[2, -1])
    out = encoder(wav, lengths)              # wav [B, T] at 16 kHz, lengths [B] in samples
    out.layer(2).shape, out.lengths          # [B, T', 384], valid frames per item
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Self

import torch
from torch import nn

from soundtok.errors import InvalidAudioError, SoundtokError

log = logging.getLogger(__name__)


class EncoderUnavailableError(SoundtokError):
    """A feature encoder needs a package or an asset that is not installed."""


class UnknownEncoderError(SoundtokError, KeyError):
    """No registered feature encoder has that name, and it is not a folder."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclass
class FeatureOutput:
    """Hidden states of a batch, one tensor per requested layer.

    hidden: ``[B, T', D]`` per entry of ``layers``; frames at or after ``lengths[b]`` are zero.
    lengths: ``[B]`` valid frames per item (int64).
    layers: the layer index of each entry of ``hidden`` (non-negative, in the order requested).
    frame_rate: frames per second.
    """

    hidden: list[torch.Tensor]
    lengths: torch.Tensor
    layers: tuple[int, ...]
    frame_rate: float

    def layer(self, index: int) -> torch.Tensor:
        """The ``[B, T', D]`` features of layer ``index`` (as numbered by the encoder, not the position in
        ``hidden``)."""
        if index not in self.layers:
            raise KeyError(f"layer {index} was not computed; this output holds layers {list(self.layers)}")
        return self.hidden[self.layers.index(index)]

    def item(self, b: int) -> list[torch.Tensor]:
        """Item ``b``'s valid frames, ``[lengths[b], D]`` per layer."""
        n = int(self.lengths[b])
        return [h[b, :n] for h in self.hidden]


class FeatureEncoder(nn.Module, ABC):
    """Base of every feature encoder. Subclasses set the attributes below in ``__init__`` and implement
    :meth:`num_frames` and :meth:`_encode`; validation, layer selection and zeroing after lengths live here."""

    #: registry name (``whisper-base``) or folder the encoder was loaded from
    name: str
    #: Hz the input must have
    sample_rate: int
    #: output frames per second
    frame_rate: float
    #: transformer blocks; valid layer numbers are ``0..num_layers``
    num_layers: int
    #: feature dimension ``D``
    dim: int
    #: layers returned when ``forward`` is not told which
    layers: tuple[int, ...]

    @abstractmethod
    def num_frames(self, samples: torch.Tensor) -> torch.Tensor:
        """Valid output frames ``[B]`` for inputs of ``samples [B]`` samples."""

    @abstractmethod
    def _encode(self, wav: torch.Tensor, lengths: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Hidden states ``[B, T', D]`` per layer for validated ``wav [B, T]`` and ``lengths [B]`` (samples).

        ``T'`` must be at least ``num_frames(lengths).max()``; frames after each item's own count may hold
        anything (the caller zeroes them) but the valid ones must not depend on the other items of the batch.
        """

    def train(self, mode: bool = True) -> Self:
        """Feature encoders are frozen: they stay in eval mode (no dropout, no SpecAugment) even inside a module
        being trained."""
        return super().train(False)

    @property
    def min_samples(self) -> int:
        """The shortest input that gives at least one frame."""
        return 1

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def resolve_layers(self, layers: int | Sequence[int] | None) -> tuple[int, ...]:
        """Normalise layer numbers (negative counts from the end) and check their range."""
        if layers is None:
            return tuple(range(self.num_layers + 1))
        wanted = [layers] if isinstance(layers, int) else list(layers)
        if not wanted:
            raise ValueError("layers is empty; ask for at least one layer (0..num_layers, or -1 for the last)")
        resolved = []
        for layer in wanted:
            if not isinstance(layer, int) or isinstance(layer, bool):
                raise ValueError(f"layer numbers must be integers, got {layer!r}")
            if not -(self.num_layers + 1) <= layer <= self.num_layers:
                raise ValueError(
                    f"{self.name} has layers 0..{self.num_layers} (0 = embeddings, {self.num_layers} = last "
                    f"block), got {layer}"
                )
            resolved.append(layer % (self.num_layers + 1))
        return tuple(resolved)

    @torch.no_grad()
    def forward(
        self,
        wav: torch.Tensor,
        lengths: torch.Tensor | Sequence[int] | None = None,
        *,
        sample_rate: int | None = None,
        layers: int | Sequence[int] | None = None,
    ) -> FeatureOutput:
        """Features of ``wav [B, T]`` (or ``[B, 1, T]``) at ``self.sample_rate``.

        ``lengths [B]``: samples per item (default: all ``T``). ``sample_rate``: pass the audio's rate to have it
        checked (``None`` means it is already ``self.sample_rate``). ``layers``: override ``self.layers``.
        """
        wanted = self.layers if layers is None else self.resolve_layers(layers)
        wav, samples = self._check_input(wav, lengths, sample_rate)
        frames = self.num_frames(samples)  # [B]
        hidden = self._encode(wav.to(self.device), samples, wanted)
        longest = int(frames.max())
        valid = torch.arange(longest, device=hidden[0].device)[None, :] < frames.to(hidden[0].device)[:, None]
        hidden = [h[:, :longest] * valid[:, :, None] for h in hidden]  # [B, T', D], zero after lengths
        return FeatureOutput(hidden=hidden, lengths=frames, layers=wanted, frame_rate=self.frame_rate)

    def _check_input(
        self, wav: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None, sample_rate: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate and return ``wav [B, T]`` (float32) and ``lengths [B]`` (int64, on the CPU)."""
        if not isinstance(wav, torch.Tensor):
            raise InvalidAudioError(f"audio must be a torch.Tensor shaped [B, T], got {type(wav).__name__}")
        if wav.ndim == 3:
            if wav.shape[1] != 1:
                raise InvalidAudioError(
                    f"{self.name} takes mono audio; got {wav.shape[1]} channels in {tuple(wav.shape)}: mix to "
                    "mono first (soundtok.audio.io.convert_channels(wav, 1))"
                )
            wav = wav[:, 0]
        if wav.ndim != 2:
            hint = " (for one clip of shape [T] use wav[None])" if wav.ndim == 1 else ""
            raise InvalidAudioError(f"expected audio shaped [B, T] or [B, 1, T], got {tuple(wav.shape)}{hint}")
        if not wav.is_floating_point():
            raise InvalidAudioError(f"audio must be floating point in [-1, 1], got dtype {wav.dtype}")
        if wav.shape[0] == 0 or wav.shape[1] == 0:
            raise InvalidAudioError(f"audio is empty: shape {tuple(wav.shape)}")
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise InvalidAudioError(
                f"{self.name} takes {self.sample_rate} Hz audio, got {sample_rate} Hz; resample first with "
                f"soundtok.audio.io.resample(wav, {sample_rate}, {self.sample_rate})"
            )
        if not bool(torch.isfinite(wav).all()):
            raise InvalidAudioError("audio contains NaN or Inf samples; clean or clip the signal first")
        batch, total = wav.shape
        if lengths is None:
            samples = torch.full((batch,), total, dtype=torch.int64)
        else:
            samples = torch.as_tensor(lengths).detach().cpu()
            if samples.is_floating_point() or samples.dtype == torch.bool:
                raise InvalidAudioError(f"lengths must be integers (samples per item), got dtype {samples.dtype}")
            samples = samples.to(torch.int64)
            if samples.shape != (batch,):
                raise InvalidAudioError(f"lengths must have shape [B] = [{batch}], got {tuple(samples.shape)}")
            if bool((samples > total).any()) or bool((samples <= 0).any()):
                raise InvalidAudioError(f"lengths must lie in 1..T = 1..{total}, got {samples.tolist()}")
        if bool((samples < self.min_samples).any()):
            raise InvalidAudioError(
                f"{self.name} needs at least {self.min_samples} samples ({self.min_samples / self.sample_rate:.3f} "
                f"s) per item to give one frame, got lengths {samples.tolist()}; pad short clips"
            )
        return wav.float(), samples


#: registry name -> factory(layers=..., **options)
ENCODERS: dict[str, Callable[..., FeatureEncoder]] = {}
#: registry name -> one-line description
DESCRIPTIONS: dict[str, str] = {}


def register_encoder(name: str, description: str, factory: Callable[..., FeatureEncoder]) -> None:
    """Make ``load_encoder(name)`` call ``factory(layers=..., **options)``."""
    if name in ENCODERS:
        raise ValueError(f"feature encoder {name!r} is registered twice")
    ENCODERS[name] = factory
    DESCRIPTIONS[name] = description


def list_encoders() -> dict[str, str]:
    """Registered encoder names and their descriptions (a local model folder is always accepted too)."""
    return dict(sorted(DESCRIPTIONS.items()))


def require_transformers() -> None:
    """Raise :class:`EncoderUnavailableError` with the install command when transformers is missing."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise EncoderUnavailableError(
            "feature encoders need the transformers package: pip install 'soundtok[encoders]'"
        ) from None
