"""Every bad input gets soundtok's own error with a message that names the problem, and nothing is lost."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import soundtok
from soundtok.audio.io import load_audio, save_audio
from soundtok.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from soundtok.errors import (
    AudioLoadingError,
    CheckpointError,
    InvalidAudioError,
    OutputExistsError,
    SoundtokError,
    TokenFileError,
    TokenizerMismatchError,
    UnknownTokenizerError,
)
from soundtok.testing import fixture_path, noise_batch
from soundtok.tokenfile import from_bytes, read_token_file, to_bytes, write_token_file
from soundtok.types import LevelSpec, Tokens


@pytest.fixture(scope="module")
def tok() -> soundtok.AudioTokenizer:
    return soundtok.load("mulaw-8bit-8k")


@pytest.fixture(scope="module")
def valid_file_bytes(tok: soundtok.AudioTokenizer) -> bytes:
    return to_bytes(tok.encode(noise_batch([600])[0], 8000), {"id": "x"})


# ---------------------------------------------------------------------------------------------------------------
# audio files
def test_missing_audio_file(tmp_path: Path) -> None:
    with pytest.raises(AudioLoadingError, match="no such audio file"):
        load_audio(tmp_path / "nope.wav")


def test_unreadable_audio_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    with pytest.raises(AudioLoadingError, match="cannot read it as audio"):
        load_audio(bad)


def test_empty_audio_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioLoadingError, match="no audio samples"):
        load_audio(empty)


def test_too_short_audio_file() -> None:
    with pytest.raises(AudioLoadingError, match="shorter than"):
        load_audio(fixture_path("digit"), min_duration=10.0)


def test_nan_audio_file(tmp_path: Path) -> None:
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.1, np.nan, 0.2], dtype=np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioLoadingError, match="NaN or Inf"):
        load_audio(nan)


def test_save_audio_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "a.wav"
    save_audio(out, torch.zeros(1, 100), 16000)
    before = out.read_bytes()
    with pytest.raises(OutputExistsError, match="--force"):
        save_audio(out, torch.ones(1, 100) * 0.5, 16000)
    assert out.read_bytes() == before
    save_audio(out, torch.ones(1, 100) * 0.5, 16000, force=True)
    assert out.read_bytes() != before


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_audio_formats_round_trip(tmp_path: Path, suffix: str) -> None:
    wav, sr = load_audio(fixture_path("digit"))
    save_audio(tmp_path / f"x{suffix}", wav, sr)
    again, sr2 = load_audio(tmp_path / f"x{suffix}")
    assert sr2 == sr and abs(again.shape[-1] - wav.shape[-1]) < 2048  # vorbis may pad a little


@pytest.mark.parametrize(
    ("wav", "sample_rate", "lengths", "problem"),
    [
        (torch.full((1, 1, 800), 1e30), 8000, None, "peaks at"),
        (torch.full((1, 1, 800), 1000.0), 8000, None, "divide 16-bit"),
        (torch.zeros(1, 1, 800), 1, None, "outside"),
        (torch.zeros(1, 1, 800), 10**6, None, "outside"),
        (torch.zeros(1, 1, 800), 8000.0, None, "integer"),
        (torch.zeros(1, 1, 800), 8000, [1.5], "whole numbers"),
        (torch.zeros(1, 1, 800), 8000, torch.tensor([True]), "whole numbers"),
        (torch.zeros(1, 1, 800), 8000, ["a"], "whole numbers"),
    ],
)
def test_implausible_audio_is_refused(
    tok: soundtok.AudioTokenizer, wav: torch.Tensor, sample_rate: Any, lengths: Any, problem: str
) -> None:
    with pytest.raises(InvalidAudioError, match=problem):
        tok.encode(wav, sample_rate, lengths)


def test_audio_at_full_scale_and_a_little_over_is_accepted(tok: soundtok.AudioTokenizer) -> None:
    assert tok.encode(torch.full((1, 1, 800), 1.5), 8000, [800]).lengths.tolist() == [800]


# ---------------------------------------------------------------------------------------------------------------
# token files
def test_token_file_refuses_overwrite_and_keeps_the_old_one(tok: soundtok.AudioTokenizer, tmp_path: Path) -> None:
    tokens = tok.encode(noise_batch([300])[0], 8000)
    path = write_token_file(tmp_path / "a.stok", tokens)
    before = path.read_bytes()
    with pytest.raises(OutputExistsError):
        write_token_file(path, tok.encode(noise_batch([500], seed=9)[0], 8000))
    assert path.read_bytes() == before


def test_token_file_from_another_tokenizer_is_refused(tok: soundtok.AudioTokenizer, tmp_path: Path) -> None:
    other = soundtok.load("mulaw-4bit-8k")
    path = write_token_file(tmp_path / "b.stok", other.encode(noise_batch([300])[0], 8000))
    with pytest.raises(TokenizerMismatchError, match="mulaw-4bit-8k"):
        tok.decode(read_token_file(path).tokens)


def test_token_file_errors_name_the_problem(valid_file_bytes: bytes) -> None:
    with pytest.raises(TokenFileError, match="not a soundtok token file"):
        from_bytes(b"RIFF" + valid_file_bytes[4:])
    with pytest.raises(TokenFileError, match="checksum"):
        from_bytes(valid_file_bytes[:-10] + valid_file_bytes[-9:])
    with pytest.raises(TokenFileError, match="too short"):
        from_bytes(b"STOK")
    newer = bytearray(valid_file_bytes)
    newer[4:6] = struct.pack("<H", 99)
    body = bytes(newer[:-4])
    with pytest.raises(TokenFileError, match="version 99"):
        from_bytes(body + struct.pack("<I", zlib.crc32(body)))


def test_token_file_with_code_outside_codebook(valid_file_bytes: bytes) -> None:
    # rewrite the header to claim a 4-entry codebook; the 8-bit codes then overflow it
    header_len = struct.unpack_from("<I", valid_file_bytes, 6)[0]
    header = json.loads(valid_file_bytes[10 : 10 + header_len])
    header["levels"][0]["codebook_size"] = 4
    new_header = json.dumps(header).encode()
    body = (
        valid_file_bytes[:6] + struct.pack("<I", len(new_header)) + new_header + valid_file_bytes[10 + header_len : -4]
    )
    with pytest.raises(TokenFileError, match="outside its codebook"):
        from_bytes(body + struct.pack("<I", zlib.crc32(body)))


def with_header(valid: bytes, edit: Callable[[dict[str, Any]], object]) -> bytes:
    """``valid`` with its header changed by ``edit`` (in place), the checksum recomputed so only the header is wrong."""
    header_len = struct.unpack_from("<I", valid, 6)[0]
    header = json.loads(valid[10 : 10 + header_len])
    edit(header)
    new = json.dumps(header).encode()
    body = valid[:6] + struct.pack("<I", len(new)) + new + valid[10 + header_len : -4]
    return body + struct.pack("<I", zlib.crc32(body))


def _nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


HEADER_EDITS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "sample_rate inf": (lambda h: h.update(sample_rate=float("inf")), "sample_rate"),
    "sample_rate nan": (lambda h: h.update(sample_rate=float("nan")), "sample_rate"),
    "sample_rate huge": (lambda h: h.update(sample_rate=10**30), "sample_rate"),
    "sample_rate float": (lambda h: h.update(sample_rate=8000.5), "sample_rate"),
    "sample_rate string": (lambda h: h.update(sample_rate="8000"), "sample_rate"),
    "sample_rate 1 Hz": (lambda h: h.update(sample_rate=1), "sample_rate"),
    "length negative": (lambda h: h.update(length=-600), "length"),
    "length huge": (lambda h: h.update(length=2**64), "length"),
    "hop zero": (lambda h: h["levels"][0].update(hop_length=0), "hop_length"),
    "frame_rate beyond a float": (
        lambda h: h["levels"][0].update(frame_rate=10**400),
        "frame_rate: a 1329-bit integer",
    ),
    "codebook beyond a float": (lambda h: h["levels"][0].update(codebook_size=10**400), "codebook_size: a 1329-bit"),
    "hop huge": (lambda h: h["levels"][0].update(hop_length=10**300), "hop_length"),
    "frame_rate inconsistent": (lambda h: h["levels"][0].update(frame_rate=44100.0), "frame_rate"),
    "frames inconsistent": (lambda h: h["levels"][0].update(frames=599), "frames"),
    "dtype too small": (lambda h: h["levels"][0].update(codebook_size=70000), "dtype"),
    "level dropped": (lambda h: h.update(levels=[]), "levels"),
    "level duplicated": (lambda h: h.update(levels=h["levels"] * 2), "ends before"),
    "levels a mapping": (lambda h: h.update(levels={"0": h["levels"][0]}), "levels"),
    "level missing a key": (lambda h: h["levels"][0].pop("dtype"), "dtype"),
    "tokenizer a list": (lambda h: h.update(tokenizer=["pcm"]), "tokenizer"),
    "metadata a list": (lambda h: h.update(metadata=[1]), "metadata"),
    "metadata nested 100 deep": (lambda h: h.update(metadata={"x": _nested(100)}), "deeper"),
    "metadata nested past the parser": (lambda h: None, "RecursionError"),
}


@pytest.mark.parametrize("case", HEADER_EDITS)
def test_every_wrong_header_field_is_named(valid_file_bytes: bytes, case: str) -> None:
    edit, problem = HEADER_EDITS[case]
    data = with_header(valid_file_bytes, edit)
    if case == "metadata nested past the parser":  # deeper than json can parse: built as text
        data = with_header(valid_file_bytes, lambda h: None)
        header_len = struct.unpack_from("<I", data, 6)[0]
        text = data[10 : 10 + header_len].replace(
            b'"metadata": {', b'"metadata": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b", ", 1
        )
        body = data[:6] + struct.pack("<I", len(text)) + text + data[10 + header_len : -4]
        data = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(TokenFileError, match=problem):
        from_bytes(data)


def test_decode_refuses_a_header_inconsistent_with_its_tokenizer(
    tok: soundtok.AudioTokenizer, valid_file_bytes: bytes
) -> None:
    def claim_44k(h: dict[str, Any]) -> None:  # consistent in itself, not with mulaw-8bit-8k
        h.update(sample_rate=44100)
        h["levels"][0].update(frame_rate=44100.0)

    tokens = from_bytes(with_header(valid_file_bytes, claim_44k)).tokens
    with pytest.raises(TokenizerMismatchError, match="44100 Hz.*8000 Hz"):
        tok.decode(tokens)
    made = tok.encode(noise_batch([600])[0], 8000)
    smaller = Tokens((made.codes[0] % 128,), made.lengths, 8000, (LevelSpec(1, 128),), made.tokenizer)
    with pytest.raises(TokenizerMismatchError, match="hop 1 x 128 codes"):
        tok.decode(smaller)


def test_unreadable_token_path(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="cannot read"):
        read_token_file(tmp_path / "missing.stok")


# ---------------------------------------------------------------------------------------------------------------
# checkpoints
@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    import soundtok.testing.dummies  # noqa: F401

    return soundtok.save_checkpoint(soundtok.load("toy-tiny"), tmp_path / "ckpt")


def test_checkpoint_missing_config(checkpoint: Path) -> None:
    (checkpoint / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        soundtok.load_checkpoint(checkpoint)


def test_checkpoint_corrupt_config(checkpoint: Path) -> None:
    (checkpoint / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        soundtok.load_checkpoint(checkpoint)


def test_checkpoint_missing_weights(checkpoint: Path) -> None:
    (checkpoint / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        soundtok.load_checkpoint(checkpoint)


def test_checkpoint_truncated_weights(checkpoint: Path) -> None:
    data = (checkpoint / WEIGHTS_FILE).read_bytes()
    (checkpoint / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        soundtok.load_checkpoint(checkpoint)


def test_checkpoint_config_does_not_match_weights(checkpoint: Path) -> None:
    meta = json.loads((checkpoint / CONFIG_FILE).read_text())
    meta["config"]["dim"] = 4
    (checkpoint / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(
        CheckpointError, match="differs from the config its weights were saved with .dim: 8 saved, 4 here"
    ):
        soundtok.load_checkpoint(checkpoint)


def test_checkpoint_unknown_config_field(checkpoint: Path) -> None:
    meta = json.loads((checkpoint / CONFIG_FILE).read_text())
    meta["config"]["colour"] = "blue"
    (checkpoint / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="colour"):
        soundtok.load_checkpoint(checkpoint)


def test_checkpoint_missing_tensor(checkpoint: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(checkpoint / WEIGHTS_FILE)
    state.pop(sorted(state)[0])
    save_file(state, checkpoint / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="missing tensors"):
        soundtok.load_checkpoint(checkpoint)


CONFIG_EDITS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "config a list": (lambda m: m.update(config=[1, 2]), "'config' must be"),
    "family a list": (lambda m: m.update(family=["toy"]), "'family' must be"),
    "family unknown": (lambda m: m.update(family="nope"), "unknown tokenizer family"),
    "dim a float": (lambda m: m["config"].update(dim=8.5), "dim: expected an integer"),
    "dim NaN": (lambda m: m["config"].update(dim=float("nan")), "dim: expected an integer"),
    "dim a string": (lambda m: m["config"].update(dim="8"), "dim: expected an integer"),
    "dim negative": (lambda m: m["config"].update(dim=-8), "invalid toy config"),
    "hops a mapping": (lambda m: m["config"].update(hops={"a": 1}), "hops: expected a list"),
    "hops of floats": (lambda m: m["config"].update(hops=[160.0, 320]), r"hops\[0\]"),
    "sample_rate huge": (lambda m: m["config"].update(sample_rate=10**40), "sample_rate"),
    "dim of gigabytes": (lambda m: m["config"].update(dim=10**6), "do not belong together"),
    "codebook of gigabytes": (lambda m: m["config"].update(codebook_sizes=[10**9, 32]), "do not belong together"),
    "a million levels": (lambda m: m["config"].update(hops=[160] * 10**6, codebook_sizes=[16] * 10**6), "builds more"),
    "sizes past int64": (lambda m: m["config"].update(dim=2**40, codebook_sizes=[2**40, 32]), "cannot build"),
}


@pytest.mark.parametrize("case", CONFIG_EDITS)
def test_every_wrong_config_field_is_a_checkpoint_error(checkpoint: Path, case: str) -> None:
    from safetensors.torch import load_file, save_file

    # as saved before the weights recorded their config: type checks and shapes alone must catch these
    save_file(load_file(checkpoint / WEIGHTS_FILE), checkpoint / WEIGHTS_FILE, metadata={"format": "pt"})
    edit, problem = CONFIG_EDITS[case]
    meta = json.loads((checkpoint / CONFIG_FILE).read_text())
    edit(meta)
    (checkpoint / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=problem):
        soundtok.load_checkpoint(checkpoint)


def test_an_edited_config_is_refused_even_when_shapes_agree(checkpoint: Path) -> None:
    meta = json.loads((checkpoint / CONFIG_FILE).read_text())
    meta["config"]["sample_rate"] = 8000  # the weights were trained at 16 kHz
    (checkpoint / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="sample_rate: 16000 saved, 8000 here"):
        soundtok.load_checkpoint(checkpoint)


def test_checkpoint_is_not_overwritten(checkpoint: Path) -> None:
    with pytest.raises(OutputExistsError):
        soundtok.save_checkpoint(soundtok.load("toy-tiny"), checkpoint)


def test_unknown_tokenizer_lists_the_known_ones() -> None:
    with pytest.raises(UnknownTokenizerError, match="mulaw-8bit-16k"):
        soundtok.load("no-such-tokenizer")


# ---------------------------------------------------------------------------------------------------------------
# fuzzing: random and truncated inputs produce only soundtok's errors, never a crash or a hang
FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=4096))
def test_fuzz_token_reader_random_bytes(data: bytes) -> None:
    with pytest.raises(TokenFileError):
        from_bytes(data)


@FUZZ
@given(
    cut=st.integers(min_value=0),
    flip=st.integers(min_value=0),
    bit=st.integers(0, 7),
    mode=st.sampled_from(["cut", "flip"]),
)
def test_fuzz_token_reader_damaged_files(valid_file_bytes: bytes, cut: int, flip: int, bit: int, mode: str) -> None:
    if mode == "cut":
        damaged = valid_file_bytes[: cut % len(valid_file_bytes)]
    else:
        buf = bytearray(valid_file_bytes)
        buf[flip % len(buf)] ^= 1 << bit
        damaged = bytes(buf)
    with pytest.raises(TokenFileError):
        from_bytes(damaged)


@pytest.fixture(scope="module")
def audio_samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("audio")
    wav, sr = load_audio(fixture_path("digit"))
    out = {}
    for suffix in (".wav", ".flac", ".ogg"):
        save_audio(folder / f"x{suffix}", wav, sr)
        out[suffix] = (folder / f"x{suffix}").read_bytes()
    return out


@FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ""]))
def test_fuzz_audio_loader_random_bytes(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"f{suffix}"
    path.write_bytes(data)
    try:
        wav, sr = load_audio(path)
    except SoundtokError:
        return
    assert torch.isfinite(wav).all() and wav.numel() > 0 and sr > 0  # random bytes that happen to be audio


@FUZZ
@given(suffix=st.sampled_from([".wav", ".flac", ".ogg"]), cut=st.integers(min_value=0), junk=st.binary(max_size=64))
def test_fuzz_audio_loader_truncated_files(
    tmp_path: Path, audio_samples: dict[str, bytes], suffix: str, cut: int, junk: bytes
) -> None:
    data = audio_samples[suffix]
    path = tmp_path / f"t{suffix}"
    path.write_bytes(data[: cut % len(data)] + junk)
    try:
        wav, _ = load_audio(path)
    except SoundtokError:
        return
    assert torch.isfinite(wav).all() and wav.numel() > 0
