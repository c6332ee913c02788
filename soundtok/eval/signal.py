"""Signal metrics that need nothing beyond torch: SI-SDR, log-mel distance, multi-resolution STFT distance.

Each takes a reference and a degraded clip (1-D float tensors or arrays, same sample rate; lengths may differ by
up to 5 %, the longer is trimmed) and returns a float.

>>> import torch
>>> x = torch.sin(torch.arange(16000) / 10)
>>> round(si_sdr(x, 0.5 * x)) >= 100  # scale does not matter
True
>>> mel_distance(x, x, 16000)
0.0
"""

from __future__ import annotations

import logging
import math

import torch

from soundtok.audio.mel import MelConfig, log_mel
from soundtok.errors import MetricUnavailableError
from soundtok.eval._common import AudioLike, is_silent, prepare_pair, to_rate

log = logging.getLogger(__name__)

#: SI-SDR of identical signals would be +inf; it is capped here so reports stay finite and JSON-able
SI_SDR_MAX_DB = 150.0

#: (n_fft, hop_length) of :func:`stft_distance`; Hann windows of n_fft samples
STFT_RESOLUTIONS: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))

#: magnitudes are clamped to this before the log in :func:`stft_distance`
STFT_MAG_FLOOR = 1e-7


def si_sdr(ref: AudioLike, deg: AudioLike) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019); higher is better.

    Both clips are made zero-mean; ``deg`` is projected on ``ref``: ``target = a * ref`` with
    ``a = <deg, ref> / <ref, ref>``, ``noise = deg - target``, SI-SDR ``= 10 log10(|target|^2 / |noise|^2)``,
    computed in float64 and capped at :data:`SI_SDR_MAX_DB`. Raises :class:`MetricUnavailableError` if ``ref``
    is constant (silent).
    """
    a, b = prepare_pair(ref, deg)
    x, y = a.double(), b.double()
    x, y = x - x.mean(), y - y.mean()
    ref_energy = float(x @ x)
    if ref_energy == 0.0:
        raise MetricUnavailableError("SI-SDR is undefined for a silent (constant) reference")
    target = (float(y @ x) / ref_energy) * x
    noise = y - target
    target_energy, noise_energy = float(target @ target), float(noise @ noise)
    if target_energy == 0.0:  # deg is orthogonal to ref (or silent): no trace of the reference at all
        return -SI_SDR_MAX_DB
    # flooring the noise relative to the target keeps the result exactly scale-invariant
    noise_energy = max(noise_energy, target_energy * 10 ** (-SI_SDR_MAX_DB / 10))
    return max(-SI_SDR_MAX_DB, 10.0 * math.log10(target_energy / noise_energy))


def mel_distance(ref: AudioLike, deg: AudioLike, sample_rate: int, config: MelConfig | None = None) -> float:
    """Mean absolute difference of log-mel spectrograms; 0 for identical audio, lower is better.

    Uses :func:`soundtok.audio.mel.log_mel` with ``config`` (default :class:`MelConfig`: 16 kHz, n_fft 1024,
    hop 256, Hann 1024, 80 Slaney mels 0-8 kHz, natural log of magnitude floored at 1e-5). Audio is resampled to
    ``config.sample_rate`` first. The unit is nats of magnitude (1.0 ~ a factor e ~ 8.7 dB per bin on average).
    """
    config = config or MelConfig()
    a, b = prepare_pair(ref, deg, sample_rate)
    a, b = to_rate(a, sample_rate, config.sample_rate), to_rate(b, sample_rate, config.sample_rate)
    if a.shape[0] <= config.n_fft // 2:
        raise MetricUnavailableError(
            f"mel distance needs more than {config.n_fft // 2} samples at {config.sample_rate} Hz; got {a.shape[0]}"
        )
    mels = log_mel(torch.stack([a, b]), config)  # [2, n_mels, frames]
    return float((mels[0] - mels[1]).abs().mean())


def stft_distance(ref: AudioLike, deg: AudioLike) -> float:
    """Multi-resolution STFT distance; 0 for identical audio, lower is better.

    For each (n_fft, hop) in :data:`STFT_RESOLUTIONS` = (512, 128), (1024, 256), (2048, 512) with a periodic
    Hann window of n_fft samples, centred reflect-padded frames and magnitudes ``S`` clamped at 1e-7:
    spectral convergence ``|S_ref - S_deg|_F / |S_ref|_F`` plus log-magnitude L1 ``mean|log S_ref - log S_deg|``.
    The result is the mean of that sum over the three resolutions (as in Parallel WaveGAN's auxiliary loss).
    Computed at the input's sample rate; clips must be longer than 1024 samples.
    """
    a, b = prepare_pair(ref, deg)
    if is_silent(a):
        raise MetricUnavailableError("STFT distance is undefined for a silent reference (spectral convergence / 0)")
    longest = max(n for n, _ in STFT_RESOLUTIONS)
    if a.shape[0] <= longest // 2:
        raise MetricUnavailableError(f"STFT distance needs more than {longest // 2} samples, got {a.shape[0]}")
    x = torch.stack([a, b])  # [2, T]
    total = 0.0
    for n_fft, hop in STFT_RESOLUTIONS:
        window = torch.hann_window(n_fft, periodic=True)
        spec = (
            torch.stft(x, n_fft, hop_length=hop, window=window, center=True, pad_mode="reflect", return_complex=True)
            .abs()
            .clamp(min=STFT_MAG_FLOOR)
        )  # [2, F, frames]
        convergence = torch.linalg.norm(spec[0] - spec[1]) / torch.linalg.norm(spec[0])
        log_l1 = (spec[0].log() - spec[1].log()).abs().mean()
        total += float(convergence + log_l1)
    return total / len(STFT_RESOLUTIONS)
