"""Files never choose code: a latent autoencoder folder names a registered kind, a token file names a preset.

Each crafted file names a callable (``os:system`` and friends, and a module that leaves a marker when imported) and is
opened through every route that reaches the autoencoder loader: the folder itself, an msn checkpoint pointing at
it, and ``soundtok detokenize`` of a token file whose header names that checkpoint. The check is that nothing ran
and nothing was imported, not only that an error came out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

import soundtok
from soundtok.cli.main import main
from soundtok.errors import CheckpointError
from soundtok.latent import load_latent_autoencoder
from soundtok.testing import noise_batch
from soundtok.tokenfile import write_token_file
from soundtok.tokenizers.msn import MSNConfig, MSNTokenizer
from soundtok.types import TokenizerId, Tokens

EVIL_MODULE = "soundtok_test_evil_module"


def crafted(kind: str, marker: Path) -> tuple[str, dict[str, object]]:
    """A ``module:Class`` naming ``kind``, with kwargs that would create ``marker`` if it were ever called."""
    kwargs: dict[str, dict[str, object]] = {
        "os:system": {"command": f"touch {marker}"},
        "subprocess:call": {"args": ["touch", str(marker)]},
        "builtins:eval": {"source": f"open({str(marker)!r}, 'w')"},
        f"{EVIL_MODULE}:Anything": {},
    }
    return kind, kwargs[kind]


@pytest.fixture()
def marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A path that exists only if crafted code ran; also an importable module that creates it when imported."""
    marker = tmp_path / "ran"
    (tmp_path / f"{EVIL_MODULE}.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Anything: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return marker


def evil_folder(folder: Path, kind: str, marker: Path, version: int) -> Path:
    target, kwargs = crafted(kind, marker)
    folder.mkdir(parents=True)
    key = "class" if version == 1 else "kind"
    meta = {"format": "soundtok-latent-autoencoder", "version": version, key: target, "kwargs": kwargs}
    (folder / "config.json").write_text(json.dumps(meta))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def msn_pointing_at(autoencoder: Path, folder: Path) -> Path:
    """A tiny msn checkpoint whose config names ``autoencoder``, crafted whole: its weights' header records the
    same config (an attacker writes both files)."""
    config = MSNConfig(vocoder="griffin-lim", dim=8, heads=2, encoder_layers=1, decoder_layers=1)
    soundtok.save_checkpoint(MSNTokenizer(config), folder)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"]["autoencoder"] = str(autoencoder)
    (folder / "config.json").write_text(json.dumps(meta))
    crafted = MSNConfig.from_dict(meta["config"]).to_json()
    save_file(load_file(folder / "model.safetensors"), folder / "model.safetensors", metadata={"config": crafted})
    return folder


KINDS = ["os:system", "subprocess:call", "builtins:eval", f"{EVIL_MODULE}:Anything"]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_a_folder_naming_code_is_refused_before_import(tmp_path: Path, marker: Path, kind: str, version: int) -> None:
    folder = evil_folder(tmp_path / "ae", kind, marker, version)
    with pytest.raises(CheckpointError, match=r"not a registered latent autoencoder \(registered: \["):
        load_latent_autoencoder(folder)
    assert not marker.exists() and EVIL_MODULE not in sys.modules


@pytest.mark.parametrize("kind", KINDS)
def test_an_msn_checkpoint_pointing_at_it_is_refused(tmp_path: Path, marker: Path, kind: str) -> None:
    checkpoint = msn_pointing_at(evil_folder(tmp_path / "ae", kind, marker, 1), tmp_path / "msn")
    with pytest.raises(CheckpointError, match="not a registered latent autoencoder"):
        soundtok.load(checkpoint)
    assert not marker.exists() and EVIL_MODULE not in sys.modules


@pytest.mark.parametrize("kind", KINDS)
def test_detokenize_never_opens_a_path_named_in_a_token_file(
    tmp_path: Path, marker: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = msn_pointing_at(evil_folder(tmp_path / "ae", kind, marker, 1), tmp_path / "msn")
    made = soundtok.load("mulaw-8bit-8k").encode(noise_batch([800])[0], 8000)
    forged = Tokens(made.codes, made.lengths, made.sample_rate, made.levels, TokenizerId("msn", str(checkpoint), "0"))
    stok = write_token_file(tmp_path / "a.stok", forged)

    assert main(["detokenize", str(stok), "-o", str(tmp_path / "a.wav")]) != 0
    assert "not a registered preset" in capsys.readouterr().err
    assert not marker.exists() and EVIL_MODULE not in sys.modules and not (tmp_path / "a.wav").exists()


def test_detokenize_loads_a_folder_the_user_names(tmp_path: Path) -> None:
    tok = soundtok.load("mulaw-8bit-8k")
    checkpoint = soundtok.save_checkpoint(tok, tmp_path / "ckpt")
    stok = write_token_file(tmp_path / "a.stok", tok.encode(noise_batch([800])[0], 8000))
    assert main(["detokenize", str(stok), "-o", str(tmp_path / "a.wav"), "-t", str(checkpoint)]) == 0
    assert (tmp_path / "a.wav").exists()
