"""Opus through ffmpeg (soundtok.eval.opus): length, alignment, quality, bitrate, and errors."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch

from soundtok.errors import InvalidAudioError, MetricUnavailableError
from soundtok.eval import opus
from soundtok.eval._common import unavailable_reason
from soundtok.testing import load_fixture

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


@pytest.fixture(scope="module")
def speech() -> tuple[torch.Tensor, int]:
    wav, sr = load_fixture("speech")  # [1, T] at 16 kHz
    return wav, sr


def _peak_lag(ref: torch.Tensor, deg: torch.Tensor) -> int:
    """Integer lag of the cross-correlation peak (positive: deg is late)."""
    return round(opus.cross_correlation_lag(ref.reshape(-1).numpy(), deg.reshape(-1).numpy(), max_lag=400, upsample=1))


@needs_ffmpeg
@pytest.mark.parametrize("bitrate", [6000, 12000])
def test_roundtrip_keeps_shape_aligns_and_sounds_right(speech: tuple[torch.Tensor, int], bitrate: int) -> None:
    from soundtok.eval import perceptual

    wav, sr = speech
    result = opus.opus_transcode(wav, sr, bitrate)
    assert result.wav.shape == wav.shape and result.wav.dtype == wav.dtype
    assert abs(_peak_lag(wav, result.wav)) <= 1
    # the measured bitrate is the target give or take VBR and Ogg overhead; packets alone are below the stream
    assert 0.6 * bitrate < result.packet_bitrate < result.bitrate < 1.4 * bitrate
    if bitrate == 12000 and unavailable_reason("pystoi") is None:
        assert perceptual.stoi(wav[0], result.wav[0], sr) > 0.8


@needs_ffmpeg
def test_one_dimensional_input_and_other_rates(speech: tuple[torch.Tensor, int]) -> None:
    wav, _ = load_fixture("speech", sample_rate=48000)
    clip = wav[0, :48000]  # [T], a rate libopus codes natively
    out = opus.opus_roundtrip(clip, 48000, 12000)
    assert out.shape == clip.shape
    assert abs(_peak_lag(clip, out)) <= 1
    odd, _ = load_fixture("speech", sample_rate=22050)
    assert opus.opus_roundtrip(odd[:, :22050], 22050, 12000).shape == (
        1,
        22050,
    )  # ffmpeg resamples to a libopus rate and back


@needs_ffmpeg
def test_ogg_packet_bytes_counts_audio_pages_only(speech: tuple[torch.Tensor, int]) -> None:
    wav, sr = speech
    stream = opus._encode(wav[0].numpy(), sr, 12000, "voip")
    assert 0 < opus.ogg_packet_bytes(stream) < len(stream)
    with pytest.raises(ValueError, match="not an Ogg stream"):
        opus.ogg_packet_bytes(b"RIFF" + bytes(40))


@pytest.mark.parametrize(
    ("wav", "sample_rate", "bitrate", "match"),
    [
        (torch.zeros(2, 1600), 16000, 6000, "mono"),
        (torch.zeros(1, 1, 1600), 16000, 6000, "mono"),
        (torch.zeros(1600, dtype=torch.int16), 16000, 6000, "float"),
        (torch.zeros(0), 16000, 6000, "empty"),
        (torch.full((1600,), float("nan")), 16000, 6000, "NaN"),
        (torch.zeros(1600), 0, 6000, "sample_rate"),
        (torch.zeros(1600), 16000, 100, "bitrate"),
        (np.zeros(1600, np.float32), 16000, 6000, "torch.Tensor"),
    ],
)
def test_bad_input_is_refused(wav: torch.Tensor, sample_rate: int, bitrate: int, match: str) -> None:
    with pytest.raises(InvalidAudioError, match=match):
        opus.opus_roundtrip(wav, sample_rate, bitrate)


def test_unknown_application_is_refused() -> None:
    with pytest.raises(InvalidAudioError, match="application"):
        opus.opus_roundtrip(torch.zeros(1600), 16000, 6000, application="music")


def test_missing_ffmpeg_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(opus.shutil, "which", lambda name: None)
    opus._ffmpeg.cache_clear()
    opus.codec_delay.cache_clear()
    try:
        with pytest.raises(MetricUnavailableError, match="apt-get install ffmpeg"):
            opus.opus_roundtrip(torch.zeros(1600), 16000, 6000)
    finally:
        opus._ffmpeg.cache_clear()


def test_ffmpeg_without_libopus_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    listing = " A....D aac                  AAC (Advanced Audio Coding)\n A....D libmp3lame           libmp3lame MP3\n"
    monkeypatch.setattr(opus.shutil, "which", lambda name: "/usr/bin/ffmpeg")
    monkeypatch.setattr(
        opus.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=listing, stderr="")
    )
    opus._ffmpeg.cache_clear()
    opus.codec_delay.cache_clear()
    try:
        with pytest.raises(MetricUnavailableError, match="without the libopus encoder.*apt-get install ffmpeg"):
            opus.opus_roundtrip(torch.zeros(1600), 16000, 6000)
    finally:
        opus._ffmpeg.cache_clear()
