"""Mel vocoders: waveform from soundtok's one log-mel (:mod:`soundtok.audio.mel`).

Every mel-domain model of soundtok (the Make Some Noise latent autoencoder, semantic-token resynthesis) ends in a
vocoder. Two implement the same interface, ``vocoder(mel [B, n_mels, F], frame_lengths) -> wav [B, 1, (F-1)*hop]``:

* :class:`Vocoder`, a Vocos-style network (Siuzdak, 2023): a ConvNeXt backbone at the mel frame rate predicts,
  per frame, a log-magnitude and a phase for every STFT bin, and an inverse STFT makes the waveform. There is no
  upsampling stack, so it is cheap on a CPU. Trained with the GAN recipe of the codec
  (``soundtok train configs/vocoder-16k.yaml RUN_DIR``).
* :class:`GriffinLim`, the no-training fallback: the mel is mapped back to a linear magnitude with the
  filterbank's pseudo-inverse, and the phase is found by fast Griffin-Lim (Perraudin et al., 2013).

Both are registered vocoder families (:data:`soundtok.registry.VOCODERS`), with the presets ``vocoder-16k`` (the
shipped checkpoint) and ``griffin-lim``; :func:`load_vocoder` loads a preset or a vocoder checkpoint folder.

Frame ``i`` of the mel is centred on sample ``i * hop``, so ``F`` frames give ``(F - 1) * hop`` samples; audio of
``T`` samples (a multiple of the hop) gives ``T / hop + 1`` frames and comes back with exactly ``T`` samples.

>>> import torch
>>> from soundtok.audio.mel import log_mel
>>> vocoder = Vocoder(VocoderConfig(dim=16, intermediate_dim=32, num_layers=2))
>>> mel = log_mel(torch.zeros(1, 4096))  # [1, 80, 17]
>>> vocoder.synthesize(mel).shape
torch.Size([1, 1, 4096])
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Protocol, cast

import torch
from torch import nn

from soundtok.audio.mel import MelConfig, log_mel
from soundtok.config import Config
from soundtok.errors import InvalidAudioError
from soundtok.nn.spectral import ConvNeXtBlock, hann_window, overlap_add
from soundtok.registry import CHECKPOINTS, VOCODERS, Preset, load_model, register_family, register_preset

__all__ = [
    "CHECKPOINTS",  # re-exported: where the shipped vocoder-16k lives
    "GriffinLim",
    "GriffinLimConfig",
    "MelVocoder",
    "Vocoder",
    "VocoderConfig",
    "load_vocoder",
    "overlap_add",  # re-exported: the inverse STFT the vocoder ends in
]


class MelVocoder(Protocol):
    """What the mel-domain tokenizers need from a vocoder."""

    @property
    def mel_config(self) -> MelConfig: ...

    def synthesize(self, mel: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class VocoderConfig(Config):
    """A Vocos-style vocoder: ``num_layers`` ConvNeXt blocks of width ``dim`` over the frames of ``mel``."""

    mel: MelConfig = field(default_factory=MelConfig)
    dim: int = 256
    intermediate_dim: int = 768
    num_layers: int = 8
    kernel_size: int = 7
    max_log_magnitude: float = math.log(100.0)  # Vocos clips exp(log-magnitude) at 100

    def __post_init__(self) -> None:
        if min(self.dim, self.intermediate_dim, self.num_layers) < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"invalid vocoder config {self}: sizes must be positive and kernel_size odd")
        if self.mel.n_fft % self.mel.hop_length:
            raise ValueError(f"the mel's n_fft ({self.mel.n_fft}) must be a multiple of its hop_length")

    @property
    def receptive_frames(self) -> int:
        """Mel frames on each side that one frame's spectrum depends on."""
        return (self.kernel_size // 2) * (self.num_layers + 1)


@register_family("vocoder", VocoderConfig, kind=VOCODERS)
class Vocoder(nn.Module):
    """Vocos-style mel vocoder. ``forward`` trains; :meth:`synthesize` is the batched, chunked inference call.

    Given ``frame_lengths``, activations past each item's last frame are zeroed after every layer and the
    inverse STFT normalises each item by its own window envelope, so a batched item comes out exactly as it
    would alone.
    """

    family = "vocoder"
    window: torch.Tensor  # the analysis window, padded to n_fft (a buffer, not saved)

    def __init__(self, config: VocoderConfig | None = None, name: str = "vocoder") -> None:
        super().__init__()
        self.config = config or VocoderConfig()
        self.name = name
        c = self.config
        self.embed = nn.Conv1d(c.mel.n_mels, c.dim, c.kernel_size, padding=c.kernel_size // 2)
        self.norm = nn.LayerNorm(c.dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(c.dim, c.intermediate_dim, c.kernel_size, 1.0 / c.num_layers) for _ in range(c.num_layers)
        )
        self.final_norm = nn.LayerNorm(c.dim, eps=1e-6)
        self.head = nn.Linear(c.dim, c.mel.n_freqs * 2)  # log-magnitude and phase per bin
        self.register_buffer("window", _padded_window(c.mel), persistent=False)

    @property
    def mel_config(self) -> MelConfig:
        return self.config.mel

    @property
    def sample_rate(self) -> int:
        return self.config.mel.sample_rate

    def mel(self, wav: torch.Tensor) -> torch.Tensor:
        """The log-mel this vocoder inverts: ``wav [..., T] -> [..., n_mels, T // hop + 1]``."""
        return log_mel(wav, self.config.mel)

    def forward(self, mel: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``mel [B, n_mels, F] -> wav [B, 1, (F - 1) * hop]``; ``frame_lengths [B]`` marks padded frames."""
        _check_mel(mel, self.config.mel)
        batch, _, frames = mel.shape
        if frame_lengths is None:
            frame_lengths = torch.full((batch,), frames, device=mel.device)
        mask = (torch.arange(frames, device=mel.device)[None, :] < frame_lengths[:, None].to(mel.device))[:, None]
        x = self.embed(mel * mask)
        x = self.norm(x.transpose(1, 2)).transpose(1, 2) * mask  # [B, D, F]
        for block in self.blocks:
            x = block(x) * mask
        h = self.head(self.final_norm(x.transpose(1, 2))).float()  # [B, F, 2 * n_freqs]; fp32 under autocast
        log_magnitude, phase = h.transpose(1, 2).chunk(2, dim=1)  # [B, n_freqs, F] each
        magnitude = torch.exp(log_magnitude.clamp(max=self.config.max_log_magnitude))
        spectrum = torch.polar(magnitude, phase) * mask
        return overlap_add(spectrum, self.window, self.config.mel.hop_length, frame_lengths)

    @torch.no_grad()
    def synthesize(
        self, mel: torch.Tensor, frame_lengths: torch.Tensor | None = None, *, chunk_frames: int = 4096
    ) -> torch.Tensor:
        """Inference: like ``forward`` in eval mode, in windows of ``chunk_frames`` frames (about 65 s at 62.5 frames/s)
        with enough context on each side that the result equals one pass over the whole input."""
        was_training = self.training
        self.eval()
        try:
            return _chunked(self, mel, frame_lengths, chunk_frames, self.config.receptive_frames)
        finally:
            self.train(was_training)


@dataclass(frozen=True)
class GriffinLimConfig(Config):
    """The settings of :class:`GriffinLim` (the ``griffin-lim`` preset: the defaults)."""

    mel: MelConfig = field(default_factory=MelConfig)
    iterations: int = 32
    momentum: float = 0.99
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.iterations, int) or self.iterations < 1 or not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"Griffin-Lim needs iterations >= 1 and 0 <= momentum < 1, got {self}")


@register_family(
    "griffin-lim",
    GriffinLimConfig,
    kind=VOCODERS,
    factory=lambda c, name: GriffinLim(c.mel, c.iterations, c.momentum, c.seed),
)
class GriffinLim(nn.Module):
    """The no-training vocoder: pseudo-inverse of the mel filterbank, then ``iterations`` of fast Griffin-Lim.

    Deterministic: the initial phases come from a generator seeded with ``seed``. Items are processed one by one,
    so batching never changes a result.
    """

    family = "griffin-lim"

    def __init__(self, mel: MelConfig | None = None, iterations: int = 32, momentum: float = 0.99, seed: int = 0):
        super().__init__()
        self.config = mel or MelConfig()
        self.name = "griffin-lim"
        self.iterations, self.momentum, self.seed = iterations, momentum, seed

    @property
    def mel_config(self) -> MelConfig:
        return self.config

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @torch.no_grad()
    def synthesize(self, mel: torch.Tensor, frame_lengths: torch.Tensor | None = None) -> torch.Tensor:
        _check_mel(mel, self.config)
        batch, _, frames = mel.shape
        lengths = [frames] * batch if frame_lengths is None else [int(n) for n in frame_lengths]
        out = mel.new_zeros(batch, 1, (frames - 1) * self.config.hop_length)
        for b, n in enumerate(lengths):
            if n > 1:
                out[b, 0, : (n - 1) * self.config.hop_length] = self._invert(mel[b, :, :n])
        return out

    def _invert(self, mel: torch.Tensor) -> torch.Tensor:  # [n_mels, F] -> [(F - 1) * hop]
        c = self.config
        fb = _pinv_filterbank(c).to(mel)
        magnitude = (fb @ torch.exp(mel)).clamp(min=0.0)  # [n_freqs, F]
        window = torch.hann_window(c.win_length, periodic=True, dtype=mel.dtype, device=mel.device)
        length = (mel.shape[-1] - 1) * c.hop_length

        def istft(spectrum: torch.Tensor) -> torch.Tensor:
            return torch.istft(spectrum, c.n_fft, c.hop_length, c.win_length, window, center=True, length=length)

        def stft(wav: torch.Tensor) -> torch.Tensor:
            return torch.stft(wav, c.n_fft, c.hop_length, c.win_length, window, center=True, return_complex=True)

        generator = torch.Generator().manual_seed(self.seed)
        phase = torch.rand(magnitude.shape, generator=generator, dtype=mel.dtype).to(mel.device) * 2 * math.pi
        angles = torch.polar(torch.ones_like(magnitude), phase)
        previous = torch.zeros_like(angles)
        for _ in range(self.iterations):
            rebuilt = stft(istft(magnitude * angles))
            accelerated = rebuilt - self.momentum / (1 + self.momentum) * previous
            angles = accelerated / accelerated.abs().clamp(min=1e-8)
            previous = rebuilt
        return istft(magnitude * angles)


def load_vocoder(name_or_path: str | os.PathLike[str] = "vocoder-16k", device: str = "cpu") -> Vocoder | GriffinLim:
    """A vocoder by preset name (``vocoder-16k``: the shipped one; ``griffin-lim``) or from a checkpoint folder."""
    return cast(Vocoder | GriffinLim, load_model(VOCODERS, name_or_path, device))


def _chunked(
    vocoder: Vocoder, mel: torch.Tensor, frame_lengths: torch.Tensor | None, chunk_frames: int, reach: int
) -> torch.Tensor:
    """Run ``vocoder`` over windows of ``chunk_frames`` frames plus ``context`` frames on each side."""
    _check_mel(mel, vocoder.config.mel)
    batch, _, frames = mel.shape
    hop = vocoder.config.mel.hop_length
    if frame_lengths is None:
        frame_lengths = torch.full((batch,), frames, device=mel.device)
    if frames <= chunk_frames:
        return vocoder(mel, frame_lengths)
    context = reach + vocoder.config.mel.n_fft // hop  # the backbone's reach + the frames one sample overlaps
    pieces = []
    for start in range(0, frames - 1, chunk_frames):
        stop = min(start + chunk_frames, frames - 1)  # samples [start * hop, stop * hop)
        lo, hi = max(0, start - context), min(frames, stop + context)
        local = (frame_lengths.to(mel.device) - lo).clamp(0, hi - lo)
        wav = vocoder(mel[..., lo:hi], local)  # samples [lo * hop, (hi - 1) * hop)
        pieces.append(wav[..., (start - lo) * hop : (stop - lo) * hop])
    return torch.cat(pieces, dim=-1)


def _padded_window(mel: MelConfig) -> torch.Tensor:
    """The analysis window of :func:`soundtok.audio.mel.log_mel`: Hann of ``win_length``, centred in ``n_fft``."""
    return hann_window(mel.n_fft, mel.win_length)


def _pinv_filterbank(config: MelConfig) -> torch.Tensor:
    from soundtok.audio.mel import mel_filterbank

    return torch.linalg.pinv(mel_filterbank(config, dtype=torch.float64)).float()  # [n_freqs, n_mels]


def _check_mel(mel: torch.Tensor, config: MelConfig) -> None:
    if not isinstance(mel, torch.Tensor) or mel.ndim != 3 or mel.shape[1] != config.n_mels:
        shape = tuple(mel.shape) if isinstance(mel, torch.Tensor) else type(mel).__name__
        raise InvalidAudioError(
            f"a vocoder takes a log-mel [batch, {config.n_mels}, frames] (soundtok.audio.mel.log_mel), got {shape}"
        )
    if mel.shape[-1] < 2:
        raise InvalidAudioError(f"a vocoder needs at least 2 mel frames (one hop of audio), got {mel.shape[-1]}")
    if not torch.isfinite(mel).all():
        raise InvalidAudioError("the log-mel holds NaN or infinite values; check the features fed to the vocoder")


register_preset(
    Preset(
        "vocoder-16k",
        "vocoder",
        "Vocos-style mel vocoder for soundtok's 16 kHz log-mel (decodes msn and semantic tokens)",
        checkpoint=CHECKPOINTS / "vocoder-16k",
    )
)
register_preset(
    Preset(
        "griffin-lim",
        "griffin-lim",
        "no-training fallback: filterbank pseudo-inverse + 32 iterations of fast Griffin-Lim",
        config=GriffinLimConfig(),
    )
)
