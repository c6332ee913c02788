"""Properties of the log-mel definition, the model-free metrics, token statistics and the evaluation report."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch

import soundtok
from soundtok.audio.mel import MelConfig, log_mel, mel_filterbank
from soundtok.errors import InvalidAudioError, MetricUnavailableError
from soundtok.eval import (
    METRICS,
    EvalReport,
    code_counts,
    code_entropy,
    codebook_usage,
    default_metrics,
    estoi,
    evaluate,
    mel_distance,
    nominal_bitrate,
    pesq,
    si_sdr,
    stft_distance,
    stoi,
    token_rate,
    token_stats,
)
from soundtok.testing import load_fixture
from soundtok.types import LevelSpec, TokenizerId, Tokens


def add_noise(x: torch.Tensor, snr_db: float, seed: int = 0) -> torch.Tensor:
    """``x`` plus white noise scaled so that the signal-to-noise power ratio is exactly ``snr_db``."""
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x64 = x.double()
    noise *= math.sqrt(float(x64.pow(2).mean()) / float(noise.pow(2).mean()) / 10 ** (snr_db / 10))
    return (x64 + noise).float()


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    wav, _ = load_fixture("speech")
    return wav[0]  # [T] at 16 kHz, 4.8 s


# ---------------------------------------------------------------------------------------------------- log-mel
@pytest.mark.parametrize("length", [513, 1000, 16000, 16001, 16255, 16256])
def test_log_mel_frames_are_length_over_hop_plus_one(length: int) -> None:
    cfg = MelConfig()
    out = log_mel(torch.randn(2, 3, length), cfg)
    assert out.shape == (2, 3, cfg.n_mels, length // cfg.hop_length + 1)
    assert out.shape[-1] == cfg.num_frames(length)


def test_log_mel_of_a_batch_equals_one_by_one() -> None:
    x = torch.randn(3, 4000)
    batch = log_mel(x)
    for b in range(3):
        torch.testing.assert_close(batch[b], log_mel(x[b]), rtol=0, atol=1e-5)


def test_log_mel_floor_and_silence() -> None:
    out = log_mel(torch.zeros(4000))
    torch.testing.assert_close(out, torch.full_like(out, math.log(1e-5)))


def test_log_mel_is_differentiable() -> None:
    x = (0.1 * torch.randn(4000)).requires_grad_()
    log_mel(x).mean().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0


def test_log_mel_refuses_too_short_or_integer_audio() -> None:
    with pytest.raises(InvalidAudioError, match="n_fft"):
        log_mel(torch.zeros(512))
    with pytest.raises(InvalidAudioError, match="floating-point"):
        log_mel(torch.zeros(4000, dtype=torch.int16))


@pytest.mark.parametrize(
    "bad",
    [
        dict(win_length=2048),
        dict(f_max=9000.0),
        dict(f_min=8000.0),
        dict(n_mels=0),
        dict(hop_length=1.5),
        dict(log_floor=0.0),
    ],
)
def test_mel_config_validates(bad: dict) -> None:
    with pytest.raises(ValueError, match="MelConfig"):
        MelConfig(**bad)


def test_mel_config_round_trips_through_json() -> None:
    cfg = MelConfig(sample_rate=24000, hop_length=300, f_max=12000.0)
    assert MelConfig.from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize(
    "cfg",
    [
        MelConfig(),
        MelConfig(sample_rate=24000, n_fft=1024, win_length=800, hop_length=240, n_mels=100, f_min=20.0, f_max=12000.0),
    ],
)
def test_mel_matches_librosa(cfg: MelConfig) -> None:
    librosa = pytest.importorskip("librosa")
    fb = librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.f_min, fmax=cfg.f_max, htk=False, norm="slaney"
    )
    np.testing.assert_allclose(mel_filterbank(cfg).numpy(), fb, rtol=1e-5, atol=1e-7)

    x = 0.1 * np.random.default_rng(0).standard_normal(cfg.sample_rate).astype(np.float32)
    mel = librosa.feature.melspectrogram(
        y=x,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=1.0,
        n_mels=cfg.n_mels,
        fmin=cfg.f_min,
        fmax=cfg.f_max,
        htk=False,
        norm="slaney",
    )
    np.testing.assert_allclose(log_mel(torch.from_numpy(x), cfg).numpy(), np.log(np.maximum(mel, 1e-5)), atol=1e-4)


# ---------------------------------------------------------------------------------------------------- signal metrics
def test_si_sdr_identical_is_huge_and_scale_invariant(speech: torch.Tensor) -> None:
    assert si_sdr(speech, speech) > 100
    deg = add_noise(speech, 12.0)
    base = si_sdr(speech, deg)
    assert si_sdr(speech, 0.1 * deg) == pytest.approx(base, abs=1e-6)
    assert si_sdr(3.0 * speech, deg) == pytest.approx(base, abs=1e-6)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_si_sdr_of_additive_noise_is_the_snr(speech: torch.Tensor, snr_db: float) -> None:
    assert si_sdr(speech, add_noise(speech, snr_db, seed=int(snr_db))) == pytest.approx(snr_db, abs=0.5)


def test_si_sdr_of_silent_reference_is_unavailable() -> None:
    with pytest.raises(MetricUnavailableError, match="silent"):
        si_sdr(torch.zeros(1000), torch.randn(1000))


@pytest.mark.parametrize("metric", [mel_distance, lambda r, d, sr: stft_distance(r, d)])
def test_spectral_distances_are_zero_for_identical_and_grow_with_noise(speech: torch.Tensor, metric) -> None:
    assert metric(speech, speech, 16000) == 0.0
    scores = [metric(speech, add_noise(speech, snr), 16000) for snr in (30.0, 15.0, 0.0)]
    assert 0 < scores[0] < scores[1] < scores[2]


def test_mel_distance_resamples_to_the_config_rate(speech: torch.Tensor) -> None:
    wav8k, _ = load_fixture("speech", sample_rate=8000)
    assert mel_distance(wav8k[0], wav8k[0], 8000) == 0.0
    assert mel_distance(wav8k[0], add_noise(wav8k[0], 10.0), 8000) > 0.1


def test_stoi_is_one_for_identical_and_lower_for_noisy(speech: torch.Tensor) -> None:
    pytest.importorskip("pystoi")
    assert stoi(speech, speech, 16000) == pytest.approx(1.0, abs=1e-3)
    assert estoi(speech, speech, 16000) == pytest.approx(1.0, abs=1e-3)
    noisy = add_noise(speech, -5.0)
    assert stoi(speech, noisy, 16000) < 0.85
    assert estoi(speech, noisy, 16000) < estoi(speech, add_noise(speech, 10.0), 16000) < 0.99


def test_stoi_refuses_what_it_cannot_score(speech: torch.Tensor) -> None:
    pytest.importorskip("pystoi")
    with pytest.raises(MetricUnavailableError, match="silence"):
        stoi(torch.zeros(16000), speech[:16000], 16000)
    with pytest.raises(MetricUnavailableError, match="30 frames"):
        stoi(speech[:3000], speech[:3000], 16000)  # 0.19 s


def test_pesq_is_higher_for_cleaner_audio(speech: torch.Tensor) -> None:
    pytest.importorskip("pesq")
    clean, noisy = add_noise(speech, 30.0), add_noise(speech, 5.0)
    for mode in ("wb", "nb"):
        assert pesq(speech, speech, 16000, mode=mode) > 4.0
        assert pesq(speech, clean, 16000, mode=mode) > pesq(speech, noisy, 16000, mode=mode) >= 1.0


def test_pesq_resamples_and_refuses_what_it_cannot_score(speech: torch.Tensor) -> None:
    pytest.importorskip("pesq")
    wav22, _ = load_fixture("speech", sample_rate=22050)
    assert pesq(wav22[0], wav22[0], 22050) > 4.0  # resampled to 16 kHz
    wav8, _ = load_fixture("speech", sample_rate=8000)
    with pytest.raises(MetricUnavailableError, match="16 kHz"):
        pesq(wav8[0], wav8[0], 8000, mode="wb")
    assert pesq(wav8[0], wav8[0], 8000, mode="nb") > 4.0
    with pytest.raises(MetricUnavailableError, match="silence"):
        pesq(torch.zeros(16000), torch.zeros(16000), 16000)
    with pytest.raises(MetricUnavailableError, match="BUFFER_TOO_SHORT|NO_UTTERANCES"):
        pesq(speech[:2000], speech[:2000], 16000)


# ---------------------------------------------------------------------------------------------------- input checks
def test_pairs_may_differ_by_a_few_samples_but_not_more_than_5_percent(speech: torch.Tensor) -> None:
    x = speech[:16000]
    assert si_sdr(x, x[:-40].numpy()) > 100  # trimmed to the shorter; numpy accepted
    assert si_sdr(x[None], x[None, None, :15300]) > 100  # 4.4 % shorter, leading size-1 axes accepted
    with pytest.raises(InvalidAudioError, match="5%"):
        si_sdr(x, x[:15000])


@pytest.mark.parametrize(
    "deg, message",
    [
        (torch.full((1000,), float("nan")), "NaN"),
        (torch.zeros(0), "empty"),
        (torch.zeros(2, 1000), "mono"),
        (np.zeros(1000, dtype=np.int16), "float"),
        ([0.0] * 1000, "numpy"),
    ],
)
def test_bad_audio_is_refused_with_a_reason(deg: object, message: str) -> None:
    with pytest.raises(InvalidAudioError, match=message):
        evaluate(torch.zeros(1000), deg, 16000, metrics=["si_sdr"])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- tokens
TOKENIZER = TokenizerId("handmade", "handmade", "0")


def handmade_tokens() -> Tokens:
    """Level 0 (hop 160, 8 codes): codes 0-3 uniformly; level 1 (hop 320, 16 codes): code 5 only.

    Item 1 is shorter; its padding holds codes that must not be counted."""
    lengths = torch.tensor([8 * 160, 4 * 160])
    level0 = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3], [3, 2, 1, 0, 7, 7, 7, 7]])
    level1 = torch.tensor([[5, 5, 5, 5], [5, 5, 9, 9]])
    return Tokens((level0, level1), lengths, 16000, (LevelSpec(160, 8), LevelSpec(320, 16)), TOKENIZER)


def test_usage_and_entropy_of_a_known_distribution() -> None:
    tokens = handmade_tokens()
    assert codebook_usage(tokens) == (0.5, 1 / 16)
    assert code_entropy(tokens) == pytest.approx((2.0, 0.0))
    assert [c.tolist() for c in code_counts(tokens)] == [[3, 3, 3, 3, 0, 0, 0, 0], [0, 0, 0, 0, 0, 6] + [0] * 10]
    stats = token_stats(tokens)
    assert stats.num_frames == (12, 6)
    assert stats.nominal_bitrate == pytest.approx(100 * 3 + 50 * 4) == tokens.bitrate
    assert stats.entropy_bitrate == pytest.approx(100 * 2.0 + 50 * 0.0)  # bits actually needed
    assert stats.token_rate == 150.0
    json.dumps(stats.to_dict())


def test_statistics_pool_over_a_list_of_tokens() -> None:
    one = handmade_tokens()
    other = Tokens(
        (torch.tensor([[4, 5, 6, 7]]), torch.tensor([[6, 6]])), torch.tensor([640]), 16000, one.levels, TOKENIZER
    )
    assert codebook_usage([one, other]) == (1.0, 2 / 16)
    assert code_entropy([one, other])[0] == pytest.approx(-(12 / 16) * math.log2(3 / 16) - 4 / 16 * math.log2(1 / 16))


def test_token_statistics_refuse_corrupt_codes() -> None:
    bad = Tokens((torch.tensor([[0, 8]]),), torch.tensor([320]), 16000, (LevelSpec(160, 8),), TOKENIZER)
    with pytest.raises(ValueError, match="outside"):
        token_stats(bad)


def test_rates_of_a_tokenizer() -> None:
    tok = soundtok.load("mulaw-8bit-8k")
    assert nominal_bitrate(tok) == pytest.approx(tok.bitrate) == 64000
    assert token_rate(tok) == 8000
    tokens = tok.encode(torch.rand(1, 1, 1600) - 0.5, 16000)
    assert nominal_bitrate(tokens) == pytest.approx(64000)
    assert token_stats(tokens).entropy_bitrate <= 64000


# ---------------------------------------------------------------------------------------------------- the report
def test_report_is_a_table_and_json(speech: torch.Tensor) -> None:
    report = evaluate(speech, add_noise(speech, 10.0), 16000, metrics=["si_sdr", "mel_distance", "stft_distance"])
    assert isinstance(report, EvalReport) and list(report.values) == ["si_sdr", "mel_distance", "stft_distance"]
    assert report["si_sdr"].value == pytest.approx(10.0, abs=0.5) and report["si_sdr"].direction == "higher is better"
    assert report["mel_distance"].direction == "lower is better"
    lines = report.to_text().splitlines()
    assert lines[0].split() == ["metric", "value", "unit", "better", "note"]
    for line, value in zip(lines[1:], report.values.values(), strict=True):  # columns line up
        assert line.index(value.unit) == lines[0].index("unit")
        assert line.index(value.unit) - 2 == lines[0].index("value") + len("value")  # values are right-aligned
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["metrics"]["si_sdr"]["unavailable_reason"] is None and data["sample_rate"] == 16000


def test_default_metrics_need_a_transcript_for_wer() -> None:
    assert "wer" not in default_metrics() and "cer" not in default_metrics()
    assert set(default_metrics("hello")) == set(METRICS)
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate(torch.zeros(1000), torch.zeros(1000), 16000, metrics=["snr"])


def test_unavailable_metrics_carry_a_reason_never_a_number() -> None:
    report = evaluate(
        torch.zeros(16000), torch.zeros(16000), 16000, metrics=["si_sdr", "mel_distance", "pesq_wb", "stoi", "wer"]
    )
    assert report["mel_distance"].value == 0.0
    for name in ("si_sdr", "pesq_wb", "stoi", "wer"):
        value = report[name]
        assert value.value is None and value.unavailable_reason, name
        assert "unavailable: " in report.to_text()
    assert "reference_text" in report["wer"].unavailable_reason


def test_a_missing_package_is_reported_with_how_to_install_it(monkeypatch, speech: torch.Tensor) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pesq" else real_find_spec(name))
    report = evaluate(speech, speech, 16000, metrics=["pesq_wb", "si_sdr"])
    assert report["pesq_wb"].value is None
    assert report["pesq_wb"].unavailable_reason == (
        "pesq is not installed; pip install 'soundtok[pesq]' (PESQ's ITU code is for research use only)"
    )
    assert report["si_sdr"].available
    with pytest.raises(MetricUnavailableError, match="soundtok\\[pesq\\]"):
        pesq(speech, speech, 16000)


def test_a_broken_install_is_reported(monkeypatch, speech: torch.Tensor) -> None:
    pytest.importorskip("pystoi")
    real_import = importlib.import_module

    def broken_import(name: str, *args: object) -> object:
        if name == "pystoi":
            raise ImportError("libfoo.so: cannot open shared object file")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", broken_import)
    report = evaluate(speech, speech, 16000, metrics=["stoi"])
    assert report["stoi"].value is None
    assert "pystoi is installed but fails to import" in report["stoi"].unavailable_reason
