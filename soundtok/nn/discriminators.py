"""Discriminators for GAN-trained waveform codecs and vocoders (HiFi-GAN, EnCodec, DAC, Vocos family).

Every discriminator here takes a waveform ``wav [B, 1, T]`` and returns one :class:`DiscriminatorOutput` per
sub-discriminator (one per period, STFT resolution or scale), so the losses in :mod:`soundtok.nn.losses` can treat
them all alike:

* :class:`MultiPeriodDiscriminator` (HiFi-GAN MPD): the waveform folded into ``[B, 1, T / p, p]`` for each period
  ``p``, 2-D convolutions that stride along time only, so each column sees every ``p``-th sample.
* :class:`MultiResolutionSTFTDiscriminator` (DAC MRD / Vocos): complex (real and imaginary as 2 channels) or
  magnitude STFT at several ``(n_fft, hop)``, 2-D convolutions over ``[B, 2 or 1, frames, freq]`` that stride
  along frequency; like DAC, the spectrum can be split into frequency bands that get their own convolutions.
* :class:`MultiScaleDiscriminator` (MelGAN/HiFi-GAN MSD): 1-D grouped convolutions over the waveform and
  its 2x and 4x average-pooled versions. Off by default (DAC uses MPD + MRD only).

:class:`CombinedDiscriminator` concatenates their outputs; :func:`build_discriminator` builds one from a
:class:`DiscriminatorConfig`. All convolutions use weight norm and LeakyReLU(0.1), as in HiFi-GAN and DAC.

Inputs of any length ``T >= 1`` are accepted: a signal shorter than an STFT's ``n_fft`` is zero-padded at the
end to ``n_fft`` before that STFT, and a period discriminator pads ``T`` up to a multiple of its period.

Shape legend: B batch, T samples, N STFT frames, F frequency bins, C channels, p period.

>>> import torch
>>> disc = build_discriminator(DiscriminatorConfig(periods=(2, 3), stft_resolutions=((256, 64),), width=0.125))
>>> outs = disc(torch.randn(2, 1, 4096))
>>> len(outs), outs[0].logits.shape, outs[2].logits.shape  # 2 periods + 1 resolution
(3, torch.Size([2, 1, 26, 2]), torch.Size([2, 1, 65, 18]))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from soundtok.config import Config
from soundtok.errors import InvalidAudioError

LRELU_SLOPE = 0.1
#: DAC's frequency bands (fractions of the one-sided spectrum) for the multi-resolution STFT discriminator
DAC_BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


@dataclass
class DiscriminatorOutput:
    """What one sub-discriminator says about a batch.

    logits: realness scores, one per output position (shape depends on the sub-discriminator, batch first:
        ``[B, 1, T', p]`` for a period, ``[B, 1, N, F']`` for an STFT resolution, ``[B, 1, T']`` for a scale).
    features: the activation after every hidden layer (not the logits), batch first; used for feature matching.
    """

    logits: Tensor
    features: list[Tensor]


@dataclass(frozen=True)
class DiscriminatorConfig(Config):
    """Which discriminators :func:`build_discriminator` combines, and how wide they are.

    periods: one period discriminator per entry (HiFi-GAN: 2, 3, 5, 7, 11); ``()`` for none.
    stft_resolutions: ``(n_fft, hop)`` of each STFT discriminator (DAC: 2048/512, 1024/256, 512/128); ``()`` for none.
    stft_complex: feed real and imaginary parts (DAC) rather than the magnitude (Vocos, UnivNet).
    stft_bands: frequency bands, as fractions ``[lo, hi)`` of the one-sided spectrum, each with its own
        convolutions (DAC); ``((0.0, 1.0),)`` for one stack over the whole spectrum.
    num_scales: scale discriminators (MelGAN/HiFi-GAN use 3); 0 for none.
    width: multiplies every channel count (1.0 = the published sizes); tests use e.g. 1/16 for tiny models.
    """

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    stft_resolutions: tuple[tuple[int, int], ...] = ((2048, 512), (1024, 256), (512, 128))
    stft_complex: bool = True
    stft_bands: tuple[tuple[float, float], ...] = DAC_BANDS
    num_scales: int = 0
    width: float = 1.0

    def __post_init__(self) -> None:
        if any(not _is_positive_int(p) for p in self.periods) or len(set(self.periods)) != len(self.periods):
            raise ValueError(f"DiscriminatorConfig.periods must be distinct positive integers, got {self.periods}")
        for res in self.stft_resolutions:
            if len(res) != 2 or not all(_is_positive_int(v) for v in res) or res[1] > res[0]:
                raise ValueError(
                    f"DiscriminatorConfig.stft_resolutions holds (n_fft, hop) pairs of positive integers with "
                    f"hop <= n_fft, got {res!r}"
                )
        if self.stft_resolutions and not self.stft_bands:
            raise ValueError("DiscriminatorConfig.stft_bands is empty; use ((0.0, 1.0),) for one band")
        for lo, hi in self.stft_bands:
            if not 0.0 <= lo < hi <= 1.0:
                raise ValueError(f"DiscriminatorConfig.stft_bands needs 0 <= lo < hi <= 1, got ({lo}, {hi})")
            for n_fft, _ in self.stft_resolutions:
                start, stop = _band_bins(n_fft, lo, hi)
                if stop <= start:
                    raise ValueError(
                        f"band ({lo}, {hi}) holds no frequency bin at n_fft={n_fft}; use wider bands or a larger n_fft"
                    )
        if not isinstance(self.num_scales, int) or isinstance(self.num_scales, bool) or self.num_scales < 0:
            raise ValueError(f"DiscriminatorConfig.num_scales must be a non-negative integer, got {self.num_scales!r}")
        if isinstance(self.width, bool) or not isinstance(self.width, int | float) or not self.width > 0:
            raise ValueError(f"DiscriminatorConfig.width must be a positive number, got {self.width!r}")
        if self.num_outputs == 0:
            raise ValueError("DiscriminatorConfig builds no discriminator: give periods, stft_resolutions or scales")

    @property
    def num_outputs(self) -> int:
        """Sub-discriminators, i.e. the length of the list the built discriminator returns."""
        return len(self.periods) + len(self.stft_resolutions) + self.num_scales


# --- building blocks ------------------------------------------------------------------------------------------


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _band_bins(n_fft: int, lo: float, hi: float) -> tuple[int, int]:
    bins = n_fft // 2 + 1
    return int(lo * bins), int(hi * bins)


def _scaled(channels: int, width: float, multiple: int = 1) -> int:
    """``channels * width`` rounded to a multiple of ``multiple`` (grouped convs need it), at least ``multiple``."""
    return max(multiple, round(channels * width / multiple) * multiple)


def _check_wav(wav: Tensor, who: str) -> None:
    if not isinstance(wav, Tensor) or not wav.is_floating_point() or wav.ndim != 3 or wav.shape[1] != 1:
        got = f"{wav.dtype} tensor of shape {tuple(wav.shape)}" if isinstance(wav, Tensor) else type(wav).__name__
        raise InvalidAudioError(
            f"{who} expects a floating-point waveform shaped [B, 1, T], got a {got}; "
            "fold channels into the batch with wav.reshape(-1, 1, T)"
        )
    if wav.shape[0] == 0 or wav.shape[-1] == 0:
        raise InvalidAudioError(f"{who} got an empty waveform of shape {tuple(wav.shape)}")


def _conv_stack(layers: nn.ModuleList, post: nn.Module, x: Tensor) -> DiscriminatorOutput:
    features = []
    for conv in layers:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        features.append(x)
    return DiscriminatorOutput(logits=post(x), features=features)


class PeriodDiscriminator(nn.Module):
    """HiFi-GAN's discriminator for one period ``p``: ``[B, 1, T] -> [B, 1, T / p, p] ->`` logits ``[B, 1, T', p]``.

    Five (5, 1) convolutions, the first four striding 3 along time, with channels 32, 128, 512, 1024, 1024
    (times ``width``), then a (3, 1) convolution to one logit channel.
    """

    def __init__(self, period: int, width: float = 1.0) -> None:
        super().__init__()
        self.period = period
        chans = [1] + [_scaled(c, width) for c in (32, 128, 512, 1024, 1024)]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(cin, cout, (5, 1), (3 if i < 4 else 1, 1), padding=(2, 0)))
            for i, (cin, cout) in enumerate(zip(chans[:-1], chans[1:], strict=True))
        )
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        b, _, t = wav.shape
        pad = (-t) % self.period
        if pad:
            # reflect like HiFi-GAN; a signal too short to reflect is padded with zeros
            wav = F.pad(wav, (0, pad), mode="reflect" if t > pad else "constant")  # [B, 1, T + pad]
        x = wav.reshape(b, 1, -1, self.period)  # [B, 1, T / p, p]
        return _conv_stack(self.convs, self.post, x)


class STFTDiscriminator(nn.Module):
    """DAC's discriminator for one STFT resolution: ``[B, 1, T] -> [B, 2 or 1, N, F] ->`` logits ``[B, 1, N, F']``.

    The STFT is centred (``N = T // hop + 1`` frames) with a periodic Hann window of ``n_fft`` samples. Each
    frequency band gets its own stack of a (3, 9) convolution, three (3, 9) convolutions striding 2 along
    frequency and a (3, 3) convolution, 32 channels times ``width``; the bands' outputs are concatenated along
    frequency before a shared (3, 3) convolution to one logit channel.
    """

    window: Tensor

    def __init__(
        self,
        n_fft: int,
        hop_length: int,
        *,
        complex_input: bool = True,
        bands: Sequence[tuple[float, float]] = DAC_BANDS,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.complex_input = n_fft, hop_length, complex_input
        self.bands = [_band_bins(n_fft, lo, hi) for lo, hi in bands]
        # not persistent: rebuilt from n_fft, so checkpoints hold only weights
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)
        ch = _scaled(32, width)
        cin = 2 if complex_input else 1

        # (in channels, kernel, stride along frequency) of each layer
        layers = [(cin, (3, 9), 1), (ch, (3, 9), 2), (ch, (3, 9), 2), (ch, (3, 9), 2), (ch, (3, 3), 1)]
        # layers[depth][band]: every band has its own weights
        self.layers = nn.ModuleList(
            nn.ModuleList(weight_norm(nn.Conv2d(c, ch, k, (1, s), padding=(k[0] // 2, k[1] // 2))) for _ in self.bands)
            for c, k, s in layers
        )
        self.post = weight_norm(nn.Conv2d(ch, 1, (3, 3), (1, 1), padding=(1, 1)))

    def spectrogram(self, wav: Tensor) -> Tensor:
        """``[B, 1, T] -> [B, 2, N, F]`` (real, imaginary) or ``[B, 1, N, F]`` (magnitude), in float32 at least."""
        x = wav[:, 0].float() if wav.dtype in (torch.float16, torch.bfloat16) else wav[:, 0]  # [B, T]
        if x.shape[-1] < self.n_fft:
            x = F.pad(x, (0, self.n_fft - x.shape[-1]))  # reflect padding needs more than n_fft // 2 samples
        window = self.window.to(x.dtype)
        spec = torch.stft(
            x, self.n_fft, self.hop_length, window=window, center=True, pad_mode="reflect", return_complex=True
        )  # [B, F, N]
        if self.complex_input:
            return torch.view_as_real(spec).permute(0, 3, 2, 1)  # [B, 2, N, F]
        # floored so the gradient stays finite on silence
        magnitude = (spec.real.square() + spec.imag.square()).clamp(min=1e-8).sqrt()  # [B, F, N]
        return magnitude.transpose(1, 2).unsqueeze(1)  # [B, 1, N, F]

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        spec = self.spectrogram(wav)  # [B, C, N, F]
        hidden = [spec[..., start:stop] for start, stop in self.bands]  # per band [B, C, N, F_k]
        features = []
        for layer in self.layers:
            convs = cast(nn.ModuleList, layer)
            hidden = [F.leaky_relu(conv(x), LRELU_SLOPE) for conv, x in zip(convs, hidden, strict=True)]
            features.append(torch.cat(hidden, dim=-1))  # [B, C', N, F'] bands side by side
        return DiscriminatorOutput(logits=self.post(features[-1]), features=features)  # [B, 1, N, F']


class ScaleDiscriminator(nn.Module):
    """MelGAN/HiFi-GAN's discriminator at one scale: grouped 1-D convolutions, ``[B, 1, T] ->`` logits ``[B, 1, T']``.

    Channels 128, 128, 256, 512, 1024, 1024, 1024 (times ``width``, rounded to multiples of 16 for the groups),
    overall stride 64.
    """

    # (out channels, kernel, stride, groups)
    LAYERS = ((128, 15, 1, 1), (128, 41, 2, 4), (256, 41, 2, 16), (512, 41, 4, 16), (1024, 41, 4, 16),
              (1024, 41, 1, 16), (1024, 5, 1, 1))  # fmt: skip

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        convs, cin = [], 1
        for cout, kernel, stride, groups in self.LAYERS:
            cout = _scaled(cout, width, multiple=16)
            convs.append(weight_norm(nn.Conv1d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups)))
            cin = cout
        self.convs = nn.ModuleList(convs)
        self.post = weight_norm(nn.Conv1d(cin, 1, 3, 1, padding=1))

    def forward(self, wav: Tensor) -> DiscriminatorOutput:
        return _conv_stack(self.convs, self.post, wav)


# --- multi-discriminators: each returns one output per sub-discriminator -----------------------------------------


class _Ensemble(nn.Module):
    """Sub-discriminators that each see the same waveform; one output per sub-discriminator."""

    discriminators: nn.ModuleList

    @property
    def num_outputs(self) -> int:
        return len(self.discriminators)

    def forward(self, wav: Tensor) -> list[DiscriminatorOutput]:
        _check_wav(wav, type(self).__name__)
        return [d(wav) for d in self.discriminators]


class MultiPeriodDiscriminator(_Ensemble):
    """HiFi-GAN MPD: one :class:`PeriodDiscriminator` per period; ``wav [B, 1, T] ->`` ``len(periods)`` outputs."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), width: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, width) for p in periods)


class MultiResolutionSTFTDiscriminator(_Ensemble):
    """DAC MRD / Vocos: one :class:`STFTDiscriminator` per ``(n_fft, hop)``; ``len(resolutions)`` outputs."""

    def __init__(
        self,
        resolutions: Sequence[tuple[int, int]] = ((2048, 512), (1024, 256), (512, 128)),
        *,
        complex_input: bool = True,
        bands: Sequence[tuple[float, float]] = DAC_BANDS,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(n_fft, hop, complex_input=complex_input, bands=bands, width=width)
            for n_fft, hop in resolutions
        )


class MultiScaleDiscriminator(_Ensemble):
    """MelGAN/HiFi-GAN MSD: scale ``i`` sees the waveform average-pooled ``i`` times by 2; ``num_scales`` outputs.

    HiFi-GAN uses spectral norm on the first scale; here every scale uses weight norm.
    """

    def __init__(self, num_scales: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(ScaleDiscriminator(width) for _ in range(num_scales))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, wav: Tensor) -> list[DiscriminatorOutput]:
        _check_wav(wav, type(self).__name__)
        outputs = []
        for i, d in enumerate(self.discriminators):
            if i > 0:
                wav = self.pool(wav)  # [B, 1, T / 2^i]
            outputs.append(d(wav))
        return outputs


class CombinedDiscriminator(nn.Module):
    """Runs several multi-discriminators on the same waveform and concatenates their outputs, in order.

    Each member maps ``wav [B, 1, T]`` to a list of :class:`DiscriminatorOutput` (as the ``Multi*`` classes do).
    """

    def __init__(self, discriminators: Sequence[nn.Module]) -> None:
        super().__init__()
        if not discriminators:
            raise ValueError("CombinedDiscriminator needs at least one discriminator")
        self.discriminators = nn.ModuleList(discriminators)

    @property
    def num_outputs(self) -> int:
        return sum(cast(int, d.num_outputs) for d in self.discriminators)

    def forward(self, wav: Tensor) -> list[DiscriminatorOutput]:
        _check_wav(wav, type(self).__name__)
        return [out for d in self.discriminators for out in d(wav)]


def build_discriminator(config: DiscriminatorConfig | None = None) -> CombinedDiscriminator:
    """The :class:`CombinedDiscriminator` of ``config``: periods first, then STFT resolutions, then scales.

    >>> build_discriminator().num_outputs  # 5 periods + 3 STFT resolutions
    8
    """
    config = config or DiscriminatorConfig()
    members: list[nn.Module] = []
    if config.periods:
        members.append(MultiPeriodDiscriminator(config.periods, config.width))
    if config.stft_resolutions:
        members.append(
            MultiResolutionSTFTDiscriminator(
                config.stft_resolutions, complex_input=config.stft_complex, bands=config.stft_bands, width=config.width
            )
        )
    if config.num_scales:
        members.append(MultiScaleDiscriminator(config.num_scales, config.width))
    return CombinedDiscriminator(members)


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module`` (weight norm counts its magnitude and direction separately)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


__all__ = [
    "DAC_BANDS",
    "CombinedDiscriminator",
    "DiscriminatorConfig",
    "DiscriminatorOutput",
    "MultiPeriodDiscriminator",
    "MultiResolutionSTFTDiscriminator",
    "MultiScaleDiscriminator",
    "PeriodDiscriminator",
    "STFTDiscriminator",
    "ScaleDiscriminator",
    "build_discriminator",
    "count_parameters",
]
