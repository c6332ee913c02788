"""Losses for GAN-trained waveform codecs and vocoders: spectral reconstruction, adversarial, feature matching.

Reconstruction losses compare an ``estimate`` with a ``target``, both ``[B, 1, T]`` (any ``[..., T]`` of equal
shapes works) and are 0 exactly when the two are equal:

* :class:`MultiScaleMelLoss` (DAC): L1 between log-mels at several window sizes, each computed by the project's one
  log-mel, :func:`soundtok.audio.mel.log_mel`, from a :class:`~soundtok.audio.mel.MelConfig` per scale.
* :class:`MultiResolutionSTFTLoss` (Parallel WaveGAN): spectral convergence + log-magnitude L1 at several STFTs.

Both accept any length ``T >= 1``: a signal shorter than the largest ``n_fft`` is zero-padded at the end to it
(estimate and target alike, so equal inputs still give 0). Both compute in float32 (float64 for float64 input),
so they are safe under autocast, and floor magnitudes before the log, so they stay finite on silence.

Adversarial losses take the per-sub-discriminator outputs of :mod:`soundtok.nn.discriminators`. The default is
the least-squares GAN of HiFi-GAN and DAC: the discriminator pushes real logits to 1 and fake ones to 0, the
generator pushes fake logits to 1. Each sub-discriminator's loss is a mean over its logits, and the losses of the
sub-discriminators are **summed** (HiFi-GAN, DAC), so DAC's loss weights apply unchanged. The hinge loss is
available with ``kind="hinge"``. A training step looks like::

    real, fake = disc(wav), disc(fake_wav.detach())
    d_loss = discriminator_loss(real, fake)                     # step the discriminator on this
    real, fake = disc(wav), disc(fake_wav)
    g_loss = (generator_adversarial_loss(fake) + 2.0 * feature_matching_loss(real, fake)
              + 15.0 / math.log(10) * mel_loss(fake_wav, wav))  # DAC's weights; see MultiScaleMelLoss for ln(10)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundtok.audio.mel import MelConfig, log_mel
from soundtok.errors import InvalidAudioError
from soundtok.nn.discriminators import DiscriminatorOutput

AdversarialKind = Literal["lsgan", "hinge"]

#: DAC's mel-loss scales: window (= n_fft) sizes and mel bands per window; hop is a quarter of the window
DAC_MEL_N_FFTS: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
DAC_MEL_N_MELS: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)


def multiscale_mel_configs(
    sample_rate: int = 16000,
    n_ffts: Sequence[int] = DAC_MEL_N_FFTS,
    n_mels: Sequence[int] = DAC_MEL_N_MELS,
    *,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> tuple[MelConfig, ...]:
    """One :class:`MelConfig` per scale: window ``n_fft``, hop ``n_fft // 4``, bands up to ``f_max`` (Nyquist).

    >>> [(c.n_fft, c.hop_length, c.n_mels) for c in multiscale_mel_configs(16000, (64, 1024), (10, 80))]
    [(64, 16, 10), (1024, 256, 80)]
    """
    if len(n_ffts) != len(n_mels) or not n_ffts:
        raise ValueError(f"give one n_mels per n_fft (and at least one), got n_ffts={n_ffts}, n_mels={n_mels}")
    top = sample_rate / 2 if f_max is None else f_max
    return tuple(
        MelConfig(
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop_length=max(1, n_fft // 4),
            win_length=n_fft,
            n_mels=mels,
            f_min=f_min,
            f_max=top,
        )
        for n_fft, mels in zip(n_ffts, n_mels, strict=True)
    )


class MultiScaleMelLoss(nn.Module):
    """DAC's multi-scale mel loss: ``sum over scales of mean |log_mel(estimate) - log_mel(target)|``.

    configs: one :class:`MelConfig` per scale; by default DAC's seven scales (:func:`multiscale_mel_configs`) at
        ``sample_rate``. All scales must share one sample rate.
    log_weight: weight of the log-mel L1.
    mag_weight: weight of an extra L1 between the (floored) mel magnitudes, ``exp(log_mel)``; DAC uses 0.

    Scales are summed, as in DAC. :func:`log_mel` uses the natural log where DAC uses log10, so this loss is
    ``ln(10) = 2.30`` times DAC's; divide DAC's mel weight (15) by ``ln(10)`` to train with its balance.
    At 48 kHz the two smallest DAC scales have mel bands without an FFT bin (:mod:`soundtok.audio.mel` warns);
    such bands are constant and add nothing to the loss.

    >>> import torch
    >>> loss = MultiScaleMelLoss(sample_rate=16000)
    >>> x = torch.randn(2, 1, 4096)
    >>> float(loss(x, x))
    0.0
    """

    def __init__(
        self,
        configs: Sequence[MelConfig] | None = None,
        *,
        sample_rate: int = 16000,
        log_weight: float = 1.0,
        mag_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.configs = tuple(configs) if configs is not None else multiscale_mel_configs(sample_rate)
        if not self.configs:
            raise ValueError("MultiScaleMelLoss needs at least one MelConfig")
        rates = {c.sample_rate for c in self.configs}
        if len(rates) != 1:
            raise ValueError(f"MultiScaleMelLoss scales must share one sample rate, got {sorted(rates)}")
        self.sample_rate = rates.pop()
        self.log_weight, self.mag_weight = log_weight, mag_weight
        self.min_length = max(c.n_fft for c in self.configs)

    def forward(self, estimate: Tensor, target: Tensor) -> Tensor:
        """Scalar loss of ``estimate`` against ``target``, both ``[B, 1, T]`` at :attr:`sample_rate`."""
        estimate, target = _check_pair(estimate, target, self.min_length, type(self).__name__)
        total = estimate.new_zeros((), dtype=torch.float64 if estimate.dtype == torch.float64 else torch.float32)
        for config in self.configs:
            est, ref = log_mel(estimate, config), log_mel(target, config)  # [B, 1, n_mels, N]
            if self.log_weight:
                total = total + self.log_weight * F.l1_loss(est, ref)
            if self.mag_weight:
                total = total + self.mag_weight * F.l1_loss(est.exp(), ref.exp())
        return total


class MultiResolutionSTFTLoss(nn.Module):
    """Parallel WaveGAN's multi-resolution STFT loss, averaged over resolutions.

    At each ``(n_fft, hop)`` (periodic Hann window of ``n_fft`` samples, centred frames), with magnitudes
    ``|S| = sqrt(max(re^2 + im^2, eps))``:

    * spectral convergence ``|| |S_target| - |S_estimate| ||_F / || |S_target| ||_F`` per item, averaged over items;
    * log-magnitude L1 ``mean |log |S_target| - log |S_estimate| |``.

    The ``eps`` floor keeps both finite on silence: two silent signals give 0, and a silent target gives a large
    but finite spectral convergence.

    >>> import torch
    >>> x = torch.randn(1, 1, 4096)
    >>> float(MultiResolutionSTFTLoss()(x, x))
    0.0
    """

    def __init__(
        self,
        resolutions: Sequence[tuple[int, int]] = ((512, 128), (1024, 256), (2048, 512)),
        *,
        sc_weight: float = 1.0,
        mag_weight: float = 1.0,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        if not resolutions:
            raise ValueError("MultiResolutionSTFTLoss needs at least one (n_fft, hop) resolution")
        for n_fft, hop in resolutions:
            if not (isinstance(n_fft, int) and isinstance(hop, int) and 0 < hop <= n_fft):
                raise ValueError(f"resolutions holds (n_fft, hop) integers with 0 < hop <= n_fft, got {(n_fft, hop)}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.resolutions = tuple(resolutions)
        self.sc_weight, self.mag_weight, self.eps = sc_weight, mag_weight, eps
        self.min_length = max(n_fft for n_fft, _ in self.resolutions)

    def _magnitude(self, x: Tensor, n_fft: int, hop: int) -> Tensor:
        window = torch.hann_window(n_fft, periodic=True, dtype=x.dtype, device=x.device)
        spec = torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="reflect", return_complex=True)
        return (spec.real.square() + spec.imag.square()).clamp(min=self.eps).sqrt()  # [N, F, frames]

    def forward(self, estimate: Tensor, target: Tensor) -> Tensor:
        """Scalar loss of ``estimate`` against ``target``, both ``[B, 1, T]``."""
        estimate, target = _check_pair(estimate, target, self.min_length, type(self).__name__)
        dtype = torch.float64 if estimate.dtype == torch.float64 else torch.float32
        est_flat = estimate.reshape(-1, estimate.shape[-1]).to(dtype)  # [B * C, T]
        ref_flat = target.reshape(-1, target.shape[-1]).to(dtype)  # [B * C, T]
        total = est_flat.new_zeros(())
        for n_fft, hop in self.resolutions:
            est, ref = self._magnitude(est_flat, n_fft, hop), self._magnitude(ref_flat, n_fft, hop)  # [N, F, frames]
            convergence = torch.linalg.vector_norm(ref - est, dim=(1, 2)) / torch.linalg.vector_norm(ref, dim=(1, 2))
            log_magnitude = F.l1_loss(est.log(), ref.log())
            total = total + self.sc_weight * convergence.mean() + self.mag_weight * log_magnitude
        return total / len(self.resolutions)


def discriminator_loss(
    real: Sequence[DiscriminatorOutput], fake: Sequence[DiscriminatorOutput], *, kind: AdversarialKind = "lsgan"
) -> Tensor:
    """Discriminator loss, summed over sub-discriminators (compute ``fake`` on a detached generator output).

    lsgan (HiFi-GAN, DAC): ``mean((1 - D(real))^2) + mean(D(fake)^2)``; minimum 0 at real -> 1, fake -> 0.
    hinge (MelGAN, EnCodec option): ``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``.
    """
    _check_outputs(real, fake)
    total = real[0].logits.new_zeros(())
    for r, f in zip(real, fake, strict=True):
        if kind == "lsgan":
            total = total + (1 - r.logits).square().mean() + f.logits.square().mean()
        elif kind == "hinge":
            total = total + F.relu(1 - r.logits).mean() + F.relu(1 + f.logits).mean()
        else:
            raise ValueError(f"unknown adversarial loss kind {kind!r}; use 'lsgan' or 'hinge'")
    return total


def generator_adversarial_loss(fake: Sequence[DiscriminatorOutput], *, kind: AdversarialKind = "lsgan") -> Tensor:
    """Generator's adversarial loss, summed over sub-discriminators.

    lsgan (HiFi-GAN, DAC): ``mean((1 - D(fake))^2)``; hinge: ``mean(-D(fake))``.
    """
    if not fake:
        raise ValueError("generator_adversarial_loss got no discriminator outputs")
    total = fake[0].logits.new_zeros(())
    for f in fake:
        if kind == "lsgan":
            total = total + (1 - f.logits).square().mean()
        elif kind == "hinge":
            total = total - f.logits.mean()
        else:
            raise ValueError(f"unknown adversarial loss kind {kind!r}; use 'lsgan' or 'hinge'")
    return total


def feature_matching_loss(real: Sequence[DiscriminatorOutput], fake: Sequence[DiscriminatorOutput]) -> Tensor:
    """Mean over every hidden layer of every sub-discriminator of ``mean |real - fake|``; ``real`` is detached.

    Averaged over layers (EnCodec's normalisation), so its size does not grow with the number of discriminators;
    HiFi-GAN and DAC sum instead (DAC: 8 sub-discriminators x 5 layers = 40 terms, with weight 2).
    """
    _check_outputs(real, fake)
    terms = []
    for r, f in zip(real, fake, strict=True):
        if len(r.features) != len(f.features):
            raise ValueError(f"real and fake outputs have {len(r.features)} and {len(f.features)} feature layers")
        terms += [F.l1_loss(fk, rk.detach()) for rk, fk in zip(r.features, f.features, strict=True)]
    if not terms:
        raise ValueError("feature_matching_loss got discriminator outputs without features")
    return torch.stack(terms).mean()


def _check_outputs(real: Sequence[DiscriminatorOutput], fake: Sequence[DiscriminatorOutput]) -> None:
    if not real or len(real) != len(fake):
        raise ValueError(
            f"expected one real and one fake output per sub-discriminator, got {len(real)} real and {len(fake)} "
            "fake; run the same discriminator on both"
        )


def _check_pair(estimate: Tensor, target: Tensor, min_length: int, who: str) -> tuple[Tensor, Tensor]:
    """Validate two equal-shaped float waveforms ``[..., T]``; zero-pad both at the end to ``min_length``."""
    for name, x in (("estimate", estimate), ("target", target)):
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim == 0 or x.shape[-1] == 0:
            got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise InvalidAudioError(f"{who}: {name} must be a floating-point waveform [B, 1, T], got a {got}")
    if estimate.shape != target.shape:
        raise InvalidAudioError(
            f"{who}: estimate {tuple(estimate.shape)} and target {tuple(target.shape)} differ in shape; "
            "trim the generator output to the target's length"
        )
    short = min_length - estimate.shape[-1]
    if short > 0:
        estimate, target = F.pad(estimate, (0, short)), F.pad(target, (0, short))  # [..., min_length]
    return estimate, target


__all__ = [
    "DAC_MEL_N_FFTS",
    "DAC_MEL_N_MELS",
    "AdversarialKind",
    "MultiResolutionSTFTLoss",
    "MultiScaleMelLoss",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "multiscale_mel_configs",
]
