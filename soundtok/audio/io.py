"""Reading, writing, resampling and channel conversion. Waveforms are float32 in [-1, 1], shaped [C, T]
for one clip and [B, C, T] for a batch."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from soundtok.errors import AudioLoadingError, InvalidAudioError
from soundtok.fileio import atomic_write
from soundtok.types import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

log = logging.getLogger(__name__)

#: the largest |sample| accepted: float audio lives in [-1, 1]; a little over is clipping, far over is a unit mistake
MAX_AMPLITUDE = 100.0

#: formats soundfile writes for us, by file extension
WRITE_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}

#: extensions of the audio files soundtok picks out of a folder (formats libsndfile reads)
AUDIO_SUFFIXES = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf", ".w64", ".rf64"}
)

#: an output whose RMS is under this fraction of its input's is near-silent ...
QUIET_RATIO = 0.1
#: ... and so is one under this level (dB relative to full scale) when its input's level is unknown
SILENT_DBFS = -60.0
#: an output with more than CLIPPED_FRACTION of its samples at |x| >= CLIP_LEVEL is clipped
CLIP_LEVEL = 0.999
CLIPPED_FRACTION = 1e-3


def check_waveform(wav: torch.Tensor, sample_rate: int, *, what: str = "audio") -> None:
    """Validate a batch ``[B, C, T]``; raise :class:`InvalidAudioError` saying what to fix."""
    if not isinstance(wav, torch.Tensor):
        raise InvalidAudioError(f"{what} must be a torch.Tensor shaped [B, C, T], got {type(wav).__name__}")
    if wav.ndim != 3:
        hint = " (for one mono clip of shape [T] use wav[None, None])" if wav.ndim in (1, 2) else ""
        raise InvalidAudioError(f"expected {what} shaped [B, C, T], got {tuple(wav.shape)}{hint}")
    if not wav.is_floating_point():
        raise InvalidAudioError(f"{what} must be floating point in [-1, 1], got dtype {wav.dtype}")
    if wav.shape[0] == 0 or wav.shape[1] == 0 or wav.shape[2] == 0:
        raise InvalidAudioError(f"{what} is empty: shape {tuple(wav.shape)}")
    if not isinstance(sample_rate, int | np.integer) or isinstance(sample_rate, bool):
        raise InvalidAudioError(f"sample_rate must be an integer (Hz), got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise InvalidAudioError(
            f"sample_rate {sample_rate} Hz is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]; "
            "pass the audio's rate in Hz"
        )
    if not bool(torch.isfinite(wav).all()):
        raise InvalidAudioError(f"{what} contains NaN or Inf samples; clean or clip the signal before tokenizing")
    peak = float(wav.abs().max())
    if peak > MAX_AMPLITUDE:
        raise InvalidAudioError(
            f"{what} peaks at |x| = {peak:.3g}, but float audio lies in [-1, 1]; scale it first "
            "(e.g. divide 16-bit integer samples by 32768)"
        )


def resample(wav: torch.Tensor, orig_sr: int, target_sr: int) -> torch.Tensor:
    """Resample ``[..., T]`` with soxr (high quality). Output length is ``floor(T * target / orig + 0.5)``."""
    if orig_sr == target_sr:
        return wav
    lead = wav.shape[:-1]
    frames = wav.reshape(-1, wav.shape[-1]).T.contiguous().cpu().double().numpy()  # [T, N] for soxr
    out = soxr.resample(frames, orig_sr, target_sr, quality="HQ")
    if out.ndim == 1:
        out = out[:, None]
    return torch.from_numpy(np.ascontiguousarray(out.T)).to(wav.dtype).reshape(*lead, -1).to(wav.device)


def resampled_length(length: int, orig_sr: int, target_sr: int) -> int:
    """Samples :func:`resample` returns for ``length`` input samples (soxr rounds half up)."""
    return (2 * length * target_sr + orig_sr) // (2 * orig_sr)


def convert_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """``[..., C, T] -> [..., channels, T]``: average to mono, or repeat mono to more channels."""
    have = wav.shape[-2]
    if have == channels:
        return wav
    if channels == 1:
        return wav.mean(dim=-2, keepdim=True)
    if have == 1:
        return wav.expand(*wav.shape[:-2], channels, wav.shape[-1]).clone()
    raise InvalidAudioError(f"cannot convert {have}-channel audio to {channels} channels; mix it to mono first")


def rms(wav: torch.Tensor) -> float:
    """Root mean square over every sample (full scale is 1.0)."""
    return float(wav.detach().double().pow(2).mean().sqrt())


def dbfs(level: float) -> float:
    """``level`` (an RMS or a peak) in dB relative to full scale; -inf for silence."""
    return 20 * math.log10(level) if level > 0 else -math.inf


def conversion_notice(sample_rate: int, channels: int, target_rate: int, target_channels: int) -> str | None:
    """What :func:`resample` and :func:`convert_channels` do to reach the targets, in words; None for nothing.

    >>> conversion_notice(44100, 2, 16000, 1)
    'resampled from 44100 Hz to 16000 Hz and mixed from 2 channels to mono'
    >>> conversion_notice(16000, 1, 16000, 1) is None
    True
    """
    changes = []
    if sample_rate != target_rate:
        changes.append(f"resampled from {sample_rate} Hz to {target_rate} Hz")
    if channels != target_channels:
        changes.append(
            f"mixed from {channels} channels to mono"
            if target_channels == 1
            else f"copied from {channels} to {target_channels} channels"
        )
    return " and ".join(changes) or None


def level_notice(wav: torch.Tensor, input_rms: float | None = None) -> str | None:
    """Why an output ``wav`` deserves a listen, or None: it is near-silent (RMS under :data:`QUIET_RATIO` times
    ``input_rms``, or under :data:`SILENT_DBFS` when the input's level is unknown) or clipped (over
    :data:`CLIPPED_FRACTION` of its samples at full scale). A silent input excuses a silent output.

    >>> level_notice(torch.full((1, 1000), 0.005), input_rms=0.1)
    "near-silent: RMS 0.05x the input's (-46.0 dBFS)"
    >>> level_notice(torch.ones(1, 1000))
    'clipped: 100.0% of the samples at full scale'
    """
    level = rms(wav)
    if input_rms is None or dbfs(input_rms) >= SILENT_DBFS:
        if level == 0:
            return "silent: every sample is zero"
        if input_rms is not None and level < QUIET_RATIO * input_rms:
            return f"near-silent: RMS {level / input_rms:.2g}x the input's ({dbfs(level):.1f} dBFS)"
        if input_rms is None and dbfs(level) < SILENT_DBFS:
            return f"near-silent: RMS {dbfs(level):.1f} dBFS"
    clipped = float((wav.detach().abs() >= CLIP_LEVEL).double().mean())
    if clipped > CLIPPED_FRACTION:
        return f"clipped: {clipped:.1%} of the samples at full scale"
    return None


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int | None = None,
    channels: int | None = None,
    *,
    min_duration: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """Read an audio file as float32 ``[C, T]``, optionally resampled and channel-converted.

    Raises :class:`AudioLoadingError` for a missing, unreadable, empty, too short or non-finite file.

    >>> from soundtok.testing import fixture_path
    >>> wav, sr = load_audio(fixture_path("speech"), sample_rate=16000)
    >>> wav.shape[0], sr
    (1, 16000)
    """
    path = Path(path)
    if not path.is_file():
        raise AudioLoadingError(f"{path}: no such audio file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    except Exception as exc:  # soundfile raises several types, none of them ours
        raise AudioLoadingError(
            f"{path}: cannot read it as audio ({type(exc).__name__}: {exc}); "
            "soundtok reads WAV, FLAC, OGG and the other formats libsndfile knows"
        ) from None
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioLoadingError(f"{path}: the file holds no audio samples")
    if not np.isfinite(data).all():
        raise AudioLoadingError(f"{path}: the file holds NaN or Inf samples")
    if data.shape[0] / sr < min_duration:
        raise AudioLoadingError(f"{path}: {data.shape[0] / sr:.3f} s is shorter than the {min_duration} s needed")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # [C, T]
    if channels is not None:
        wav = convert_channels(wav, channels)
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, int(sr)


def save_audio(path: str | os.PathLike[str], wav: torch.Tensor, sample_rate: int, *, force: bool = False) -> Path:
    """Write ``[C, T]`` (or ``[T]``) float audio to .wav (float32), .flac (16-bit) or .ogg (Vorbis), atomically."""
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InvalidAudioError(f"{path}: unknown audio extension; use one of {sorted(WRITE_FORMATS)}")
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2:
        raise InvalidAudioError(f"save_audio expects [C, T] audio, got {tuple(wav.shape)}")
    data = wav.detach().float().cpu().clamp(-1.0, 1.0).numpy().T  # [T, C]
    if fmt[0] != "WAV" and float(wav.detach().abs().max()) > 1.0:
        log.warning("%s: samples beyond [-1, 1] were clipped", path)

    def write(tmp: Path) -> None:
        sf.write(str(tmp), data, sample_rate, format=fmt[0], subtype=fmt[1])

    atomic_write(path, write, force=force)
    return path
