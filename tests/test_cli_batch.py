"""The file-by-file commands on many inputs: bad files, folders, reruns, notices, progress; ``info`` on presets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from soundtok.audio.io import level_notice
from soundtok.cli.main import main
from soundtok.registry import load
from soundtok.testing import fixture_path
from soundtok.tokenfile import write_token_file
from soundtok.types import Tokens


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def stereo_44k(path: Path) -> Path:
    t = np.arange(44100) / 44100
    sf.write(path, np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)], axis=1), 44100)
    return path


def failures(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("failed: ")]


def test_a_batch_goes_on_past_bad_files_and_a_rerun_finishes_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bogus, missing, out = tmp_path / "bogus.wav", tmp_path / "missing.wav", tmp_path / "out"
    bogus.write_text("not audio")
    args = ["tokenize", fixture_path("digit"), bogus, missing, fixture_path("sneeze"), "-t", "mulaw-4bit-8k", "-o", out]
    code, stdout, err = run(capsys, *args)
    assert code == 3
    assert sorted(p.name for p in out.iterdir()) == ["digit.stok", "sneeze.stok"]  # nothing of the bad ones
    assert stdout.count(" -> ") == 2
    assert [line.split(":")[1].strip() for line in failures(err)] == [str(bogus), str(missing)]
    assert "cannot read it as audio" in failures(err)[0] and "no such audio file" in failures(err)[1]
    assert "error: 2 of 4 inputs failed" in err and "--skip-existing" in err

    code, _, err = run(capsys, *args)  # a plain rerun refuses, and says how to finish
    assert code == 3 and "--skip-existing" in err and "--force" in err
    shutil.copy(fixture_path("speech"), bogus)
    code, stdout, err = run(capsys, *[a for a in args if a != missing], "--skip-existing")
    assert code == 0, err
    assert "skipped 2 of 3 inputs" in err and stdout.count(" -> ") == 1
    assert sorted(p.name for p in out.iterdir()) == ["bogus.stok", "digit.stok", "sneeze.stok"]


def test_detokenize_goes_on_past_a_corrupt_token_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    assert run(capsys, "tokenize", fixture_path("digit"), "-t", "mulaw-4bit-8k", "-o", tokens / "a.stok")[0] == 0
    (tokens / "b.stok").write_bytes(b"STOK" + bytes(40))
    code, _, err = run(capsys, "detokenize", tokens, "-o", tmp_path / "audio")
    assert code == 3 and "1 of 2 inputs failed" in err
    assert len(failures(err)) == 1 and str(tokens / "b.stok") in failures(err)[0]
    assert [p.name for p in (tmp_path / "audio").iterdir()] == ["a.wav"]


def test_a_write_that_fails_leaves_no_partial_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from soundtok.errors import InvalidAudioError

    for name in ("a", "b"):
        assert (
            run(capsys, "tokenize", fixture_path("digit"), "-t", "mulaw-4bit-8k", "-o", tmp_path / f"{name}.stok")[0]
            == 0
        )
    write = sf.write

    def half_written(file: object, *args: object, **kwargs: object) -> None:
        if ".b.wav" in str(file):  # the temporary file of b.wav: write part of it, then fail
            Path(str(file)).write_bytes(b"RIFF....WAVE")
            raise InvalidAudioError("the disk filled up")
        write(file, *args, **kwargs)

    monkeypatch.setattr(sf, "write", half_written)
    code, _, err = run(capsys, "detokenize", tmp_path / "a.stok", tmp_path / "b.stok", "-o", tmp_path / "wav")
    assert code == 3 and "the disk filled up" in err
    assert [p.name for p in (tmp_path / "wav").iterdir()] == ["a.wav"]  # no b.wav, no temporary file


def test_folders_are_searched_recursively(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "x").mkdir(parents=True)
    (corpus / "y" / "z").mkdir(parents=True)
    shutil.copy(fixture_path("digit"), corpus / "x" / "digit.flac")
    shutil.copy(fixture_path("sneeze"), corpus / "y" / "z" / "sneeze.FLAC")
    shutil.copy(fixture_path("speech"), corpus / "x" / "._digit.flac")  # hidden (e.g. macOS metadata): skipped
    (corpus / ".cache").mkdir()
    shutil.copy(fixture_path("speech"), corpus / ".cache" / "speech.flac")  # in a hidden folder: skipped
    (corpus / "notes.txt").write_text("not audio, and not picked up")
    code, _, err = run(capsys, "tokenize", corpus, "-t", "mulaw-4bit-8k", "-o", tmp_path / "out")
    assert code == 0, err
    assert f"{corpus}: 2 audio files found" in err
    found = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.stok"))
    assert found == ["x/digit.stok", "y/z/sneeze.stok"]  # the folder's layout, so equal names never collide
    code, _, err = run(capsys, "detokenize", tmp_path / "out", "-o", tmp_path / "wav")
    assert code == 0, err
    assert (tmp_path / "wav" / "y" / "z" / "sneeze.wav").is_file()


def test_an_empty_folder_or_two_inputs_for_one_output_are_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no audio here")
    code, _, err = run(capsys, "tokenize", tmp_path / "empty", "-t", "mulaw-4bit-8k", "-o", tmp_path / "out")
    assert code == 3 and "a folder with no audio files inside" in err and err.count("\n") == 1
    (tmp_path / "other").mkdir()
    shutil.copy(fixture_path("digit"), tmp_path / "other" / "digit.flac")
    args = ["tokenize", fixture_path("digit"), tmp_path / "other" / "digit.flac", "-t", "mulaw-4bit-8k"]
    code, _, err = run(capsys, *args, "-o", tmp_path / "out")
    assert code == 3 and "would both be written to" in err and not (tmp_path / "out").exists()


def test_skip_existing_and_force_exclude_each_other(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ["tokenize", fixture_path("digit"), "-t", "mulaw-4bit-8k", "-o", tmp_path / "a.stok"]
    assert run(capsys, *args)[0] == 0
    code, stdout, err = run(capsys, *args, "--skip-existing")
    assert code == 0 and "skipped 1 of 1" in err and stdout == ""
    code, _, err = run(capsys, *args, "--skip-existing", "--force")
    assert code == 2 and "pass one" in err


def test_resampling_and_mixing_are_noted_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a, b = stereo_44k(tmp_path / "a.wav"), stereo_44k(tmp_path / "b.wav")
    code, _, err = run(capsys, "tokenize", a, b, "-t", "mulaw-8bit-16k", "-o", tmp_path / "out")
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note: a.wav")]
    assert notes == [
        "note: a.wav: resampled from 44100 Hz to 16000 Hz and mixed from 2 channels to mono for mulaw-8bit-16k "
        "(said once for all such inputs)"
    ]
    assert "b.wav: resampled" not in err
    code, _, err = run(capsys, "tokenize", fixture_path("digit"), "-t", "mulaw-8bit-16k", "-o", tmp_path / "d.stok")
    assert code == 0 and "note:" not in err  # 16 kHz mono: nothing to say
    code, _, err = run(capsys, "eval", a, tmp_path / "a.wav", "--metrics", "si_sdr")
    assert code == 0 and "a.wav: mixed from 2 channels to mono for scoring" in err


def test_near_silent_and_clipped_outputs_are_noted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = load("mulaw-8bit-8k")
    t = torch.arange(8000) / 8000
    tokens = tok.encode((0.001 * torch.sin(2 * torch.pi * 200 * t))[None, None], 8000)
    write_token_file(tmp_path / "quiet.stok", tokens, {"input_rms": 0.1})  # a decode far below its input's level
    write_token_file(tmp_path / "loud.stok", tokens)
    code, _, err = run(capsys, "detokenize", tmp_path / "quiet.stok", "-o", tmp_path / "quiet.wav")
    assert code == 0, err
    assert f"note: {tmp_path / 'quiet.wav'}: near-silent: RMS 0.0073x the input's (-62.7 dBFS)" in err

    def overdriven(self: object, tokens: Tokens, **kwargs: object) -> torch.Tensor:
        return torch.sign(torch.sin(2 * torch.pi * 200 * t))[None, None]  # a square wave at full scale

    monkeypatch.setattr(type(tok), "decode", overdriven)
    code, _, err = run(capsys, "detokenize", tmp_path / "loud.stok", "-o", tmp_path / "loud.wav")
    assert code == 0 and f"note: {tmp_path / 'loud.wav'}: clipped: 100.0% of the samples at full scale" in err
    monkeypatch.undo()
    code, _, err = run(capsys, "tokenize", fixture_path("digit"), "-t", "mulaw-8bit-8k", "-o", tmp_path / "d.stok")
    code, _, err = run(capsys, "detokenize", tmp_path / "d.stok", "-o", tmp_path / "d.wav")
    assert code == 0 and "note:" not in err  # a faithful decode: nothing to say


def test_level_notice_excuses_a_quiet_input() -> None:
    assert level_notice(torch.zeros(1, 100), input_rms=0.0) is None
    assert level_notice(torch.full((1, 100), 1e-4), input_rms=2e-4) is None  # the input was near-silent too
    assert level_notice(torch.full((1, 100), 1e-4)) == "near-silent: RMS -80.0 dBFS"
    assert level_notice(torch.zeros(1, 100)) == "silent: every sample is zero"
    clipped = torch.full((1, 10_000), 0.5)
    clipped[0, :5] = 1.0
    assert level_notice(clipped) is None  # 0.05 %: a few peaks, not clipping
    clipped[0, :50] = -1.0
    assert level_notice(clipped) == "clipped: 0.5% of the samples at full scale"


def test_single_file_commands_show_progress(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "tokenize", fixture_path("digit"), "-t", "mulaw-8bit-8k", "-o", tmp_path / "d.stok")
    assert code == 0 and "tokenize" in err and "digit.flac" in err
    code, _, err = run(capsys, "eval", fixture_path("speech"), fixture_path("speech"), "--metrics", "si_sdr,stoi")
    assert code == 0 and "eval" in err and "stoi" in err  # the metric being computed is named


def test_info_accepts_a_preset_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "info", "codec-16k")
    assert code == 0, err
    assert "preset       codec-16k" in out and "6000 bit/s" in out and "checkpoint" in out and "weights" in out
    code, out, err = run(capsys, "info", "mulaw-8bit-8k")
    assert code == 0, err
    assert "64000 bit/s" in out and '"bits": 8' in out
    code, _, err = run(capsys, "info", "no-such-tokenizer")
    assert code == 3 and err.count("\n") == 1 and "soundtok list" in err
