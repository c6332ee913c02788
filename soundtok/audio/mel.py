"""The one log-mel spectrogram of soundtok.

Every part of soundtok that needs a mel spectrogram (the mel-distance metric, vocoders, latent autoencoders,
tokenizers that work on mels) uses :func:`log_mel` with a :class:`MelConfig`, so features computed in one place
match features computed in another. The definition, for a waveform ``x [..., T]``:

1. reflect-pad ``n_fft // 2`` samples on both sides (``center``), so frame ``i`` is centred on sample
   ``i * hop_length`` and there are ``frames = T // hop_length + 1`` frames;
2. STFT with a periodic Hann window of ``win_length`` samples (zero-padded to ``n_fft``), magnitude ``|X|``
   (not power);
3. a Slaney-scale mel filterbank with Slaney (constant-area) normalisation, ``n_mels`` bands over
   ``[f_min, f_max]`` Hz, identical to ``librosa.filters.mel(htk=False, norm="slaney")``;
4. natural log after flooring at ``log_floor``: ``log(max(mel, 1e-5))``.

With the defaults (16 kHz, ``n_fft`` 1024, hop 256, 80 mels up to 8 kHz) that is 62.5 frames per second.

>>> import torch
>>> cfg = MelConfig()
>>> log_mel(torch.zeros(2, 16000), cfg).shape  # 16000 // 256 + 1 frames
torch.Size([2, 80, 63])
>>> cfg.num_frames(16000), cfg.frame_rate
(63, 62.5)
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import torch

from soundtok.config import Config
from soundtok.errors import InvalidAudioError

log = logging.getLogger(__name__)

# Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 mels per factor 6.4)
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


@dataclass(frozen=True)
class MelConfig(Config):
    """Parameters of :func:`log_mel`. Frozen and hashable, so it can be stored in checkpoints and used as a key.

    sample_rate: Hz of the audio the features describe.
    n_fft: FFT size; the spectrum has ``n_fft // 2 + 1`` bins.
    hop_length: samples between frames; frame rate is ``sample_rate / hop_length``.
    win_length: Hann window length, at most ``n_fft`` (centred and zero-padded to ``n_fft``).
    n_mels: number of mel bands.
    f_min, f_max: band edges in Hz; ``f_max`` at most ``sample_rate / 2``.
    log_floor: magnitudes below this are clamped before the log (1e-5 -> about -11.5).
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MelConfig.{name} must be a positive integer, got {value!r}")
        if self.win_length > self.n_fft:
            raise ValueError(f"MelConfig.win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")
        nyquist = self.sample_rate / 2
        if not 0.0 <= self.f_min < self.f_max <= nyquist:
            raise ValueError(
                f"MelConfig needs 0 <= f_min < f_max <= sample_rate / 2 = {nyquist:g} Hz, "
                f"got f_min={self.f_min}, f_max={self.f_max}; lower f_max for this sample rate"
            )
        if not self.log_floor > 0:
            raise ValueError(f"MelConfig.log_floor must be positive, got {self.log_floor}")

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop_length

    @property
    def n_freqs(self) -> int:
        """STFT bins: ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        """Frames :func:`log_mel` returns for ``num_samples`` samples: ``num_samples // hop_length + 1``."""
        return num_samples // self.hop_length + 1


def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale (librosa's default, ``htk=False``)."""
    hz = torch.as_tensor(hz, dtype=torch.float64)
    linear = hz / _F_SP
    logarithmic = _MIN_LOG_MEL + torch.log(hz.clamp(min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(hz >= _MIN_LOG_HZ, logarithmic, linear)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    mel = torch.as_tensor(mel, dtype=torch.float64)
    linear = mel * _F_SP
    logarithmic = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (mel.clamp(min=_MIN_LOG_MEL) - _MIN_LOG_MEL))
    return torch.where(mel >= _MIN_LOG_MEL, logarithmic, linear)


@functools.lru_cache(maxsize=16)
def _filterbank64(config: MelConfig) -> torch.Tensor:
    fft_freqs = torch.linspace(0.0, config.sample_rate / 2, config.n_freqs, dtype=torch.float64)  # [F]
    edges = mel_to_hz(
        torch.linspace(
            float(hz_to_mel(torch.tensor(config.f_min))),
            float(hz_to_mel(torch.tensor(config.f_max))),
            config.n_mels + 2,
            dtype=torch.float64,
        )
    )  # [M + 2] band edges in Hz
    widths = edges.diff()  # [M + 1]
    ramps = edges[:, None] - fft_freqs[None, :]  # [M + 2, F]
    rising = -ramps[:-2] / widths[:-1, None]  # [M, F]
    falling = ramps[2:] / widths[1:, None]  # [M, F]
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    # Slaney normalisation: every triangle has the same area, so a band's energy does not depend on its width
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    if bool((weights.max(dim=1).values == 0).any()):
        log.warning("%s: some mel bands hold no FFT bin (too many mels for n_fft); they are always zero", config)
    return weights


def mel_filterbank(
    config: MelConfig | None = None, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """The ``[n_mels, n_fft // 2 + 1]`` Slaney mel filterbank of ``config`` (equal to ``librosa.filters.mel``).

    >>> mel_filterbank(MelConfig()).shape
    torch.Size([80, 513])
    """
    config = config or MelConfig()
    return _filterbank64(config).to(device=device, dtype=dtype, copy=True)


def log_mel(wav: torch.Tensor, config: MelConfig | None = None) -> torch.Tensor:
    """Log-mel spectrogram ``[..., n_mels, frames]`` of ``wav [..., T]`` at ``config.sample_rate``.

    ``frames = T // hop_length + 1``; see the module docstring for the exact definition. ``wav`` must hold more
    than ``n_fft // 2`` samples (reflect padding needs them). Differentiable; runs on ``wav``'s device, in float64
    for float64 input and float32 otherwise.
    """
    config = config or MelConfig()
    if not isinstance(wav, torch.Tensor) or not wav.is_floating_point():
        raise InvalidAudioError(f"log_mel expects a floating-point torch.Tensor [..., T], got {_describe(wav)}")
    if wav.ndim == 0 or wav.shape[-1] <= config.n_fft // 2:
        raise InvalidAudioError(
            f"log_mel needs more than n_fft // 2 = {config.n_fft // 2} samples per signal, got shape "
            f"{tuple(wav.shape)}; pad the audio or use a MelConfig with a smaller n_fft"
        )
    dtype = torch.float64 if wav.dtype == torch.float64 else torch.float32
    lead = wav.shape[:-1]
    x = wav.reshape(-1, wav.shape[-1]).to(dtype)  # [N, T]
    window = torch.hann_window(config.win_length, periodic=True, dtype=dtype, device=wav.device)
    spec = torch.stft(
        x,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )  # [N, F, frames]
    mel = mel_filterbank(config, dtype=dtype, device=wav.device) @ spec.abs()  # [N, n_mels, frames]
    return torch.log(mel.clamp(min=config.log_floor)).reshape(*lead, config.n_mels, -1)


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__
