"""Speaker similarity: cosine similarity of resemblyzer (GE2E) speaker embeddings of two clips.

:func:`speaker_similarity` scores a pair; :func:`speaker_embedding` and :func:`embedding_similarity` are the same
computation in two steps, for one reference scored against many clips (:class:`soundtok.eval.Evaluator` does that).

resemblyzer ships its weights in the wheel, so this runs offline; it is installed by ``soundtok setup-assets``
(``pip install --no-deps resemblyzer webrtcvad-wheels``, plus librosa). It works at 16 kHz: clips are resampled
to 16 kHz here with soxr, then resemblyzer normalises their volume and trims long silences (webrtcvad).
"""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Any

import numpy as np

from soundtok.errors import MetricUnavailableError
from soundtok.eval._common import AudioLike, as_mono, check_sample_rate, require, to_rate

log = logging.getLogger(__name__)

#: resemblyzer's sample rate
SPEAKER_RATE = 16000
_MODULES = ("librosa", "webrtcvad", "resemblyzer")


def _require() -> None:
    with warnings.catch_warnings():  # resemblyzer imports a deprecated scipy namespace
        warnings.simplefilter("ignore", DeprecationWarning)
        require(*_MODULES)


@functools.lru_cache(maxsize=1)
def voice_encoder() -> Any:
    """The resemblyzer ``VoiceEncoder`` on CPU, loaded once per process."""
    _require()
    from resemblyzer import VoiceEncoder

    return VoiceEncoder(device="cpu", verbose=False)


def speaker_embedding(wav: AudioLike, sample_rate: int) -> np.ndarray:
    """The L2-normalised 256-d speaker embedding ``[256]`` of one clip (1-D float, any sample rate)."""
    _require()
    from resemblyzer import preprocess_wav

    x = to_rate(as_mono(wav), check_sample_rate(sample_rate), SPEAKER_RATE)
    return _embed(x.numpy(), preprocess_wav)


def _embed(x: np.ndarray, preprocess: Any) -> np.ndarray:
    if not x.any():
        raise MetricUnavailableError("speaker similarity needs speech; this clip is digital silence")
    voiced = preprocess(x)  # already at 16 kHz: volume normalisation + long-silence trimming only
    if voiced.size == 0 or not np.any(voiced):
        raise MetricUnavailableError("speaker similarity needs speech; the voice detector found none in this clip")
    return np.asarray(voice_encoder().embed_utterance(voiced.astype(np.float32)), dtype=np.float64)


def speaker_similarity(ref: AudioLike, deg: AudioLike, sample_rate: int) -> float:
    """Cosine similarity (-1..1, higher is better) of the speaker embeddings of ``ref`` and ``deg``.

    Unlike the intrusive metrics the two clips need not be the same utterance or length (e.g. a voice prompt
    and a generated clip); both are at ``sample_rate``.

    About 1 for the same recording; on 5-s LibriSpeech clips about 0.8-0.86 for another utterance of the same
    speaker and 0.4-0.65 for different speakers. Additive noise lowers it too (0.68 for white noise at ~10 dB SNR).
    """
    _require()
    from resemblyzer import preprocess_wav

    check_sample_rate(sample_rate)
    a = to_rate(as_mono(ref, what="ref"), sample_rate, SPEAKER_RATE)
    b = to_rate(as_mono(deg, what="deg"), sample_rate, SPEAKER_RATE)
    return embedding_similarity(_embed(a.numpy(), preprocess_wav), _embed(b.numpy(), preprocess_wav))


def embedding_similarity(e_ref: np.ndarray, e_deg: np.ndarray) -> float:
    """Cosine similarity (-1..1) of two :func:`speaker_embedding` results: :func:`speaker_similarity` for callers
    that score many clips against one reference and embed it once.

    >>> round(embedding_similarity(np.array([1.0, 0.0]), np.array([1.0, 1.0])), 4)
    0.7071
    """
    cosine = float(e_ref @ e_deg / (np.linalg.norm(e_ref) * np.linalg.norm(e_deg)))
    return min(1.0, max(-1.0, cosine))  # rounding can step just past 1
