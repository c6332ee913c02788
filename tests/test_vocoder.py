"""Mel vocoders (soundtok.vocoder): shapes, padding-correct batching, chunking, checkpoints, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import soundtok
from soundtok.audio.mel import MelConfig, log_mel
from soundtok.checkpoint import save_checkpoint
from soundtok.errors import CheckpointError, InvalidAudioError, UnknownTokenizerError
from soundtok.eval.perceptual import stoi
from soundtok.testing import load_fixture
from soundtok.vocoder import GriffinLim, Vocoder, VocoderConfig, load_vocoder, overlap_add

TINY = VocoderConfig(dim=16, intermediate_dim=32, num_layers=2)
HOP = 256


@pytest.fixture(scope="module")
def speech_mel() -> tuple[torch.Tensor, torch.Tensor]:
    wav = load_fixture("speech")[0][..., : 192 * HOP]  # [1, T], 3.07 s, a whole number of hops
    return wav, log_mel(wav)  # [1, 80, T / hop + 1]


@pytest.fixture
def vocoder() -> Vocoder:
    torch.manual_seed(0)
    return Vocoder(TINY).eval()


def test_overlap_add_matches_torch_istft() -> None:
    spectrum = torch.randn(2, 513, 30, dtype=torch.complex64)
    window = torch.hann_window(1024)
    ours = overlap_add(spectrum, window, HOP)[:, 0]
    reference = torch.istft(spectrum, 1024, HOP, window=window, center=True, length=29 * HOP)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)


def test_overlap_add_owned_frames_rebuild_the_signal() -> None:
    """``owned`` frames (the codec's istft decoder): frame i centred on the middle of samples [i * hop, (i+1) * hop);
    the STFT taken on those centres and added back gives the signal exactly, edges included."""
    hop, n_fft, frames = 80, 320, 25
    signal = torch.randn(2, frames * hop, dtype=torch.float64)
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    shift = n_fft // 2 - hop // 2  # frame i starts at i * hop - shift
    padded = torch.nn.functional.pad(signal, (shift, n_fft))
    spectrum = torch.stft(padded, n_fft, hop, window=window, center=False, return_complex=True)[..., :frames]
    rebuilt = overlap_add(spectrum, window, hop, frames="owned")[:, 0]
    assert rebuilt.shape == signal.shape
    torch.testing.assert_close(rebuilt, signal, atol=1e-9, rtol=1e-9)
    short = overlap_add(spectrum, window, hop, torch.tensor([frames, 10]), frames="owned")[:, 0]
    assert short[1, 10 * hop :].abs().max() == 0  # nothing past the item's own frames


def test_frames_to_samples(vocoder: Vocoder, speech_mel: tuple[torch.Tensor, torch.Tensor]) -> None:
    wav, mel = speech_mel
    assert mel.shape[-1] == wav.shape[-1] // HOP + 1
    out = vocoder.synthesize(mel)
    assert out.shape == (1, 1, wav.shape[-1]) and torch.isfinite(out).all()


def test_batch_equals_one_by_one(vocoder: Vocoder, speech_mel: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, mel = speech_mel
    short = 70
    padded = torch.nn.functional.pad(mel[..., :short], (0, mel.shape[-1] - short), value=3.0)  # garbage padding
    batch = vocoder.synthesize(torch.cat([mel, padded]), torch.tensor([mel.shape[-1], short]))
    alone = vocoder.synthesize(mel[..., :short])
    torch.testing.assert_close(batch[1, :, : (short - 1) * HOP], alone[0], atol=1e-6, rtol=1e-5)
    assert batch[1, :, (short - 1) * HOP :].abs().max() == 0  # nothing past the item's end
    torch.testing.assert_close(batch[:1], vocoder.synthesize(mel), atol=1e-6, rtol=1e-5)


def test_chunked_equals_whole(vocoder: Vocoder, speech_mel: tuple[torch.Tensor, torch.Tensor]) -> None:
    _, mel = speech_mel
    whole = vocoder.synthesize(mel, chunk_frames=10_000)
    for chunk in (20, 37):
        torch.testing.assert_close(vocoder.synthesize(mel, chunk_frames=chunk), whole, atol=1e-6, rtol=1e-5)


def test_griffin_lim_is_deterministic_and_intelligible(speech_mel: tuple[torch.Tensor, torch.Tensor]) -> None:
    wav, mel = speech_mel
    gl = load_vocoder("griffin-lim")
    assert isinstance(gl, GriffinLim)
    a = gl.synthesize(mel)
    torch.testing.assert_close(a, gl.synthesize(mel), rtol=0, atol=0)
    assert a.shape == (1, 1, wav.shape[-1])
    assert stoi(wav[0], a[0, 0], 16000) > 0.85  # phase from scratch, but the magnitudes are right
    batch = gl.synthesize(torch.cat([mel, mel]), torch.tensor([mel.shape[-1], 40]))
    torch.testing.assert_close(batch[1, :, : 39 * HOP], gl.synthesize(mel[..., :40])[0])


def test_checkpoint_round_trip(vocoder: Vocoder, tmp_path: Path, speech_mel: tuple[torch.Tensor, torch.Tensor]) -> None:
    save_checkpoint(vocoder, tmp_path / "voc")
    loaded = load_vocoder(tmp_path / "voc")
    assert isinstance(loaded, Vocoder) and loaded.config == TINY
    torch.testing.assert_close(loaded.synthesize(speech_mel[1]), vocoder.synthesize(speech_mel[1]))


def test_nested_mel_config_round_trips() -> None:
    config = VocoderConfig(mel=MelConfig(n_mels=64, f_max=7600.0), dim=8)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["mel"]["n_mels"] == 64
    assert VocoderConfig.from_dict(data) == config


def test_vocoders_are_a_registry_kind() -> None:
    from soundtok.registry import PRESETS, VOCODERS, list_presets

    assert [p.name for p in list_presets(VOCODERS)] == ["griffin-lim", "vocoder-16k"]
    assert not {"griffin-lim", "vocoder-16k"} & set(PRESETS)  # not tokenizers: soundtok list does not show them
    assert isinstance(load_vocoder("griffin-lim"), GriffinLim)
    assert VOCODERS.families["vocoder"].cls is Vocoder and VOCODERS.families["vocoder"].config_class is VocoderConfig


def test_wrong_checkpoint_kinds(vocoder: Vocoder, tmp_path: Path) -> None:
    save_checkpoint(vocoder, tmp_path / "voc")
    with pytest.raises(CheckpointError, match="mel vocoder, not a tokenizer"):
        soundtok.load(tmp_path / "voc")
    save_checkpoint(soundtok.load("mulaw-8bit-16k"), tmp_path / "tok")
    with pytest.raises(CheckpointError, match="not a vocoder"):
        load_vocoder(tmp_path / "tok")
    with pytest.raises(UnknownTokenizerError, match="griffin-lim"):
        load_vocoder("no-such-vocoder")
    (tmp_path / "voc" / "model.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_vocoder(tmp_path / "voc")


@pytest.mark.parametrize(
    ("mel", "message"),
    [
        (torch.zeros(1, 40, 10), "log-mel \\[batch, 80, frames\\]"),
        (torch.zeros(80, 10), "log-mel \\[batch, 80, frames\\]"),
        (torch.zeros(1, 80, 1), "at least 2 mel frames"),
        (torch.full((1, 80, 10), float("nan")), "NaN"),
    ],
)
def test_bad_mel(vocoder: Vocoder, mel: torch.Tensor, message: str) -> None:
    with pytest.raises(InvalidAudioError, match=message):
        vocoder.synthesize(mel)
    with pytest.raises(InvalidAudioError, match=message):
        GriffinLim().synthesize(mel)


def test_invalid_config() -> None:
    with pytest.raises(ValueError, match="kernel_size odd"):
        VocoderConfig(kernel_size=4)
    with pytest.raises(ValueError, match="multiple of its hop_length"):
        VocoderConfig(mel=MelConfig(n_fft=1000, win_length=1000))
