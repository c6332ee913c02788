"""Frame-rate networks over STFT frames (Vocos, Siuzdak 2023): the mel vocoder, and the codec's ``encoder: stft``
and ``decoder: istft``.

A ConvNeXt backbone runs at the STFT frame rate. The decoders predict, per frame, a log-magnitude and a phase for
every bin, and :func:`overlap_add` turns them into a waveform; the codec's encoder reads log-magnitude frames.
There is no convolution stack at the sample rate, which makes these networks cheap on a CPU and quick to train
from spectral losses alone: the phase is predicted per frame instead of being built up sample by sample.

Two frame conventions, both with Hann windows and ``n_fft`` a multiple of ``hop``:

* ``centred`` (the vocoder, like ``torch.istft(center=True)``): frame ``i`` is centred on sample ``i * hop``;
  ``F`` frames give ``(F - 1) * hop`` samples.
* ``owned`` (the codec): frame ``i`` is centred on the middle of the hop it owns, samples
  ``[i * hop, (i + 1) * hop)``; ``F`` frames give ``F * hop`` samples, as a waveform codec's contract wants.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from soundtok.nn.conv import PaddedConv1d, PaddedConvTranspose1d, Reach

FrameConvention = Literal["centred", "owned"]


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> LayerNorm -> pointwise MLP (GELU) -> layer scale, with a residual connection."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, D, F]
        h = self.norm(self.dwconv(x).transpose(1, 2))  # [B, F, D]
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + h.transpose(1, 2)


def overlap_add(
    spectrum: torch.Tensor,
    window: torch.Tensor,
    hop: int,
    frame_lengths: torch.Tensor | None = None,
    frames: FrameConvention = "centred",
) -> torch.Tensor:
    """Inverse STFT of ``spectrum [B, n_fft // 2 + 1, F]`` -> ``[B, 1, (F - 1) * hop]`` (``centred``) or
    ``[B, 1, F * hop]`` (``owned``; ``hop`` must be even).

    Like ``torch.istft``, but each item is normalised by the window envelope of its own frames
    (``frame_lengths``) and zeroed past its end, so padding frames never leak into an item.
    """
    batch, _, count = spectrum.shape
    n_fft = window.shape[0]
    if frame_lengths is None:
        frame_lengths = torch.full((batch,), count, device=spectrum.device)
    frame_lengths = frame_lengths.to(spectrum.device)
    mask = (torch.arange(count, device=spectrum.device)[None, :] < frame_lengths[:, None]).to(window.dtype)
    chunks = torch.fft.irfft(spectrum, n=n_fft, dim=1) * window[None, :, None]  # [B, n_fft, F]
    total = n_fft + hop * (count - 1)

    def fold(columns: torch.Tensor) -> torch.Tensor:  # [B, n_fft, F] -> [B, total]
        return F.fold(columns, output_size=(1, total), kernel_size=(1, n_fft), stride=(1, hop))[:, 0, 0]

    signal = fold(chunks)
    envelope = fold(window.square()[None, :, None] * mask[:, None, :])
    wav = signal / envelope.clamp(min=1e-11)
    if frames == "centred":
        start, length, valid = n_fft // 2, hop * (count - 1), (frame_lengths - 1) * hop
    else:  # frame i's centre, at n_fft / 2 + i * hop in the fold, becomes sample i * hop + hop / 2
        start, length, valid = n_fft // 2 - hop // 2, hop * count, frame_lengths * hop
    wav = wav[:, start : start + length]
    samples = torch.arange(wav.shape[-1], device=wav.device)[None, :]
    return (wav * (samples < valid[:, None]))[:, None]


def hann_window(n_fft: int, win_length: int | None = None) -> torch.Tensor:
    """A periodic Hann window of ``win_length`` (default ``n_fft``), zero-padded and centred in ``n_fft``."""
    win_length = n_fft if win_length is None else win_length
    window = torch.hann_window(win_length, periodic=True)
    left = (n_fft - win_length) // 2
    return F.pad(window, (left, n_fft - win_length - left))


class _FrameNetwork(nn.Module):
    """What the codec's STFT encoder and iSTFT decoder share: STFT frames ``ratio`` per codec frame (STFT hop
    ``hop / ratio``, Hann window ``4 x`` that), a conv embedding of ``in_channels``, and ``num_layers`` ConvNeXt
    blocks between two LayerNorms, masked per item."""

    window: torch.Tensor  # the STFT window (a buffer, not saved)

    def __init__(
        self, in_channels: int, hop: int, ratio: int, dim: int, intermediate_dim: int, num_layers: int, kernel_size: int
    ) -> None:
        super().__init__()
        if hop % ratio or (hop // ratio) % 2:
            raise ValueError(f"the codec hop ({hop}) must be an even multiple of 2 x the STFT ratio ({ratio})")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.hop, self.ratio, self.kernel_size, self.num_layers = hop, ratio, kernel_size, num_layers
        self.stft_hop = hop // ratio
        self.n_fft = 4 * self.stft_hop
        self.embed = nn.Conv1d(in_channels, dim, kernel_size, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate_dim, kernel_size, 1.0 / max(num_layers, 1)) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        self.register_buffer("window", hann_window(self.n_fft), persistent=False)

    def _order_modules(self, *names: str) -> None:
        """Put the submodules in this order. ``parameters()`` follows it, and so does every optimizer state a run
        saved (Adam's moments are stored by parameter position): keep the first release's order, or the states of
        runs begun before would resume onto the wrong parameters."""
        for name in names:
            if name in self._modules:
                self._modules[name] = self._modules.pop(name)  # re-inserted last

    def frame_counts(self, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Valid codec frames and STFT frames ``[B]`` of items of ``lengths`` samples."""
        latent_frames = torch.div(lengths + self.hop - 1, self.hop, rounding_mode="floor")
        return latent_frames, latent_frames * self.ratio

    def backbone(self, x: torch.Tensor, stft_frames: torch.Tensor) -> torch.Tensor:
        """``x [B, dim, F]`` (embedded, at the STFT rate) through the norm and the blocks; final_norm not applied."""
        x = _mask(self.norm(x.transpose(1, 2)).transpose(1, 2), stft_frames)
        for block in self.blocks:
            x = _mask(block(x), stft_frames)
        return x


class STFTEncoder(_FrameNetwork):
    """The codec's spectral encoder: ``[B, 1, T] -> [B, latent_dim, T / hop]`` (T a multiple of ``hop``).

    Log-magnitude STFT frames (``owned`` frames as in :func:`overlap_add`), a conv embedding, ``num_layers``
    ConvNeXt blocks at the STFT frame rate, a strided conv down to the codec's frame rate and a projection to the
    latent. Given ``lengths``, every frame past an item's last latent frame is zeroed after every layer, so a
    batched item encodes exactly as alone.
    """

    def __init__(
        self,
        latent_dim: int,
        hop: int,
        *,
        dim: int = 256,
        intermediate_dim: int = 768,
        num_layers: int = 4,
        kernel_size: int = 7,
        downsample: int = 2,
    ) -> None:
        n_bins = (hop // downsample) * 2 + 1  # n_fft / 2 + 1 with n_fft = 4 x the STFT hop
        super().__init__(n_bins, hop, downsample, dim, intermediate_dim, num_layers, kernel_size)
        self.down = PaddedConv1d(dim, dim, 2 * downsample, stride=downsample) if downsample > 1 else None
        self.project = nn.Conv1d(dim, latent_dim, 1)
        self._order_modules("embed", "norm", "blocks", "down", "final_norm", "project")

    def receptive_field(self) -> Reach:
        """How far a latent frame looks beyond the samples it owns, on each side (an upper bound)."""
        window = self.n_fft // 2 - self.stft_hop // 2  # an STFT frame's reach beyond the hop it owns
        convs = (self.kernel_size // 2) * (1 + self.num_layers) * self.stft_hop
        down = self.down.reach(self.stft_hop) if self.down is not None else Reach()
        return Reach(window + convs, window + convs) + down

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths``: valid samples per item (default: all)."""
        batch, _, samples = wav.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, device=wav.device)
        latent_frames, stft_frames = self.frame_counts(lengths.to(wav.device))  # [B] each
        shift = self.n_fft // 2 - self.stft_hop // 2  # frame i covers [i * hop_s - shift, i * hop_s - shift + n_fft)
        padded = F.pad(wav[:, 0].float(), (shift, shift))
        spectrum = torch.stft(padded, self.n_fft, self.stft_hop, window=self.window, center=False, return_complex=True)
        log_magnitude = torch.log(spectrum.abs().clamp(min=1e-5))  # [B, n_bins, T / hop_s]
        x = self.backbone(self.embed(_mask(log_magnitude, stft_frames)), stft_frames)  # [B, dim, F]
        if self.down is not None:
            x = _mask(self.down(x), latent_frames)  # [B, dim, T / hop]
        x = self.final_norm(x.transpose(1, 2)).transpose(1, 2)
        return _mask(self.project(x), latent_frames)  # [B, latent_dim, T / hop]


class ISTFTDecoder(_FrameNetwork):
    """The codec's Vocos-style decoder: ``[B, D, T'] -> [B, 1, T' * hop]``.

    A conv embeds the latent frames, a transposed conv upsamples them ``upsample`` times to the STFT frame rate,
    ``num_layers`` ConvNeXt blocks run there, and a linear head predicts each frame's log-magnitudes and phases for
    :func:`overlap_add` (``owned`` frames: STFT frame ``j`` covers the middle of its own hop). Given ``lengths``,
    activations past each item's end are zeroed after every layer and the inverse STFT is normalised per item, so
    a batched item decodes exactly as alone. Not causal: every layer looks both ways.
    """

    def __init__(
        self,
        latent_dim: int,
        hop: int,
        *,
        dim: int = 256,
        intermediate_dim: int = 768,
        num_layers: int = 8,
        kernel_size: int = 7,
        upsample: int = 2,
        max_log_magnitude: float = math.log(100.0),
    ) -> None:
        super().__init__(latent_dim, hop, upsample, dim, intermediate_dim, num_layers, kernel_size)
        self.max_log_magnitude = max_log_magnitude
        self.up = PaddedConvTranspose1d(dim, dim, upsample) if upsample > 1 else None
        self.head = nn.Linear(dim, (self.n_fft // 2 + 1) * 2)  # log-magnitude and phase per bin
        self._order_modules("embed", "up", "norm", "blocks", "final_norm", "head")

    def receptive_field_frames(self) -> int:
        """Latent frames an output sample may depend on beyond its own frame, on either side (an upper bound)."""
        reach = self.kernel_size // 2  # the embedding conv, in latent frames
        reach += 1 if self.up is not None else 0  # each upsampled frame mixes two latent frames
        stft_frames = self.num_layers * (self.kernel_size // 2) + self.n_fft // (2 * self.stft_hop) + 1
        return reach + -(-stft_frames // self.ratio)

    def forward(self, z: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths``: valid output samples per item (default: all)."""
        batch, _, frames = z.shape
        if lengths is None:
            lengths = torch.full((batch,), frames * self.hop, device=z.device)
        latent_frames, stft_frames = self.frame_counts(lengths.to(z.device))  # [B] each
        x = self.embed(_mask(z, latent_frames))  # [B, dim, T']
        if self.up is not None:
            x = self.up(_mask(x, latent_frames))  # [B, dim, T' * upsample]
        x = self.backbone(x, stft_frames)
        h = self.head(self.final_norm(x.transpose(1, 2)))  # [B, F, 2 * n_bins]
        log_magnitude, phase = h.transpose(1, 2).float().chunk(2, dim=1)  # [B, n_bins, F] each
        magnitude = torch.exp(log_magnitude.clamp(max=self.max_log_magnitude))
        spectrum = _mask(torch.polar(magnitude, phase), stft_frames)  # padding frames add nothing
        wav = overlap_add(spectrum, self.window, self.stft_hop, stft_frames, frames="owned")  # [B, 1, F * hop_s]
        samples = torch.arange(wav.shape[-1], device=z.device)[None, None, :]
        return wav * (samples < lengths.to(z.device)[:, None, None])


def _mask(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Zero ``x [B, C, F]`` past ``frames[b]`` frames per item."""
    return x * (torch.arange(x.shape[-1], device=x.device)[None, None, :] < frames[:, None, None])
