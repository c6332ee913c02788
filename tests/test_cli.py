"""The command line: each command end to end, its exit codes and its messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from soundtok.audio.io import load_audio, save_audio
from soundtok.cli.main import main
from soundtok.testing import fixture_path
from soundtok.tokenfile import read_token_file


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name in ("mulaw-8bit-16k", "codec2-3200", "codec2-700c"):
        assert name in out
    assert "128000" in out  # mulaw-8bit-16k bitrate


def test_tokenize_info_detokenize(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    stok, wav = tmp_path / "a.stok", tmp_path / "a.wav"
    code, _, err = run(capsys, "tokenize", fixture_path("digit"), "-t", "mulaw-8bit-8k", "-o", stok)
    assert code == 0, err
    code, out, _ = run(capsys, "info", stok)
    assert code == 0 and "mulaw-8bit-8k" in out and "8000 frames/s" in out and "digit.flac" in out
    code, _, err = run(capsys, "detokenize", stok, "-o", wav)
    assert code == 0, err
    audio, sr = load_audio(wav)
    src, _ = load_audio(fixture_path("digit"), sample_rate=8000)
    assert sr == 8000 and audio.shape == src.shape


def test_outputs_are_not_overwritten_without_force(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    stok = tmp_path / "a.stok"
    assert run(capsys, "tokenize", fixture_path("digit"), "-t", "mulaw-8bit-8k", "-o", stok)[0] == 0
    before = stok.read_bytes()
    code, _, err = run(capsys, "tokenize", fixture_path("speech"), "-t", "mulaw-8bit-8k", "-o", stok)
    assert code == 3 and "--force" in err and stok.read_bytes() == before
    assert run(capsys, "tokenize", fixture_path("speech"), "-t", "mulaw-8bit-8k", "-o", stok, "--force")[0] == 0
    assert stok.read_bytes() != before


def test_many_files_into_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, _ = run(
        capsys, "tokenize", fixture_path("digit"), fixture_path("sneeze"), "-t", "mulaw-4bit-8k", "-o", tmp_path / "t"
    )
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["digit.stok", "sneeze.stok"]
    metadata = read_token_file(tmp_path / "t" / "sneeze.stok").metadata
    assert metadata["source"] == "sneeze.flac" and 0.01 < metadata["input_rms"] < 0.1  # for detokenize's notices


def test_errors_exit_1_with_a_message(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    stok = tmp_path / "a.stok"
    run(capsys, "tokenize", fixture_path("digit"), "-t", "mulaw-8bit-8k", "-o", stok)
    code, _, err = run(capsys, "detokenize", stok, "-t", "mulaw-4bit-8k", "-o", tmp_path / "x.wav")
    assert code == 3 and "made by mulaw-8bit-8k" in err and not (tmp_path / "x.wav").exists()
    bogus = tmp_path / "bogus.wav"
    bogus.write_text("hello, this is not audio at all")
    code, _, err = run(capsys, "tokenize", bogus, "-t", "mulaw-8bit-8k", "-o", tmp_path / "b.stok")
    assert code == 3 and "cannot read it as audio" in err
    code, _, err = run(capsys, "info", bogus)
    assert code == 3 and "not a soundtok token file" in err
    code, _, err = run(capsys, "tokenize", bogus, "-t", "no-such", "-o", tmp_path / "c.stok")
    assert code == 3 and "soundtok list" in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "tokenize")[0] == 2


def test_eval_prints_metrics(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import torch

    ref, sr = load_audio(fixture_path("speech"))
    noisy = ref + 0.05 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0))
    save_audio(tmp_path / "noisy.wav", noisy, sr)
    code, out, err = run(
        capsys,
        "eval",
        fixture_path("speech"),
        tmp_path / "noisy.wav",
        "--metrics",
        "si_sdr,mel_distance,stoi",
        "--json",
    )
    assert code == 0, err
    metrics = json.loads(out)["metrics"]
    assert sorted(metrics) == ["mel_distance", "si_sdr", "stoi"]
    assert all(m["unavailable_reason"] is None for m in metrics.values())
    assert -10 < metrics["si_sdr"]["value"] < 40 and 0.5 < metrics["stoi"]["value"] < 1.0
    code, out, _ = run(capsys, "eval", fixture_path("speech"), tmp_path / "noisy.wav", "--metrics", "si_sdr")
    assert code == 0 and "si_sdr" in out and "dB" in out


def test_vocode_with_griffin_lim_and_a_checkpoint(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from soundtok.checkpoint import save_checkpoint
    from soundtok.eval.perceptual import stoi
    from soundtok.vocoder import Vocoder, VocoderConfig

    out = tmp_path / "gl.wav"
    code, _, err = run(capsys, "vocode", fixture_path("digit"), "-o", out, "-v", "griffin-lim")
    assert code == 0, err
    audio, sr = load_audio(out)
    src, _ = load_audio(fixture_path("digit"))
    assert sr == 16000 and audio.shape == src.shape
    assert stoi(src[0], audio[0], sr) > 0.7
    save_checkpoint(Vocoder(VocoderConfig(dim=8, intermediate_dim=16, num_layers=1)), tmp_path / "voc")
    code, _, err = run(capsys, "vocode", fixture_path("digit"), "-o", tmp_path / "v.wav", "-v", tmp_path / "voc")
    assert code == 0, err
    code, _, err = run(capsys, "vocode", fixture_path("digit"), "-o", out, "-v", "griffin-lim")
    assert code == 3 and "--force" in err


def test_fit_semantic_writes_a_tokenizer_fitted_on_the_train_split(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, fixture_manifest: Path
) -> None:
    import soundtok
    from soundtok.tokenizers.semantic import SemanticTokenizer

    out = tmp_path / "sem"
    args = ["fit-semantic", "-o", out, "-m", fixture_manifest, "--encoder", "whisper-tiny.en", "--layer", "2"]
    code, stdout, err = run(capsys, *args, "--layer", "4", "--clusters", "8", "--passes", "2")
    assert code == 0, err
    assert "layer 2: 8 clusters" in stdout and "fitted on 3 items of split 'train'" in stdout
    assert (tmp_path / "sem.features" / "features.json").is_file()  # the feature store, reusable
    tok = soundtok.load(out)
    assert isinstance(tok, SemanticTokenizer) and tok.centroids.shape == (2, 8, 384) and tok.config.layers == (2, 4)
    tokens = tok.encode(load_audio(fixture_path("digit"), sample_rate=16000)[0][None], 16000)
    assert len(tokens.codes) == 2 and tokens.frame_rates == (50.0, 50.0)
    code, _, err = run(capsys, *args)  # refuses to overwrite
    assert code == 3 and "--force" in err
    code, _, err = run(capsys, "fit-semantic", "-o", tmp_path / "x", "-m", fixture_manifest, "--split", "dev")
    assert code == 3 and "no item of split 'dev'" in err and "['test', 'train']" in err


def test_exit_codes_tell_bad_input_from_a_bug(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("tokenize", fixture_path("digit"), "-t", "mulaw-8bit-8k", "-o", tmp_path / "a.stok")
    code, _, err = run(capsys, "info", tmp_path / "missing.stok")
    assert code == 3 and err.count("\n") == 1 and "no such file" in err  # bad input: one line

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("soundtok.registry.load", broken)
    code, _, err = run(capsys, *args)
    assert code == 1 and "internal error: RuntimeError: boom" in err and "please report" in err
