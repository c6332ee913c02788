"""The GAN recipes (codec, vocoder) at toy size: they train, export checkpoints, resume exactly after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_CODEC
from safetensors.torch import load_file

import soundtok
from soundtok.checkpoint import read_checkpoint_config
from soundtok.errors import SoundtokError
from soundtok.train.config import load_config
from soundtok.train.gan import train_gan
from soundtok.train.state import latest_state
from soundtok.vocoder import Vocoder, load_vocoder

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    *TINY_CODEC,
    "eval_every=3",
    "checkpoint_every=2",
]


@pytest.fixture
def manifest(fixture_manifest: Path) -> Path:
    return fixture_manifest


def overrides(manifest: Path, steps: int) -> list[str]:
    return [*TINY, f"data.manifest={manifest}", f"steps={steps}"]


SPECTRAL = "model={strides: [2, 4, 5], latent_dim: 8, num_quantizers: 3, codebook_size: 16, encoder: stft, " + (
    "decoder: istft, decoder_dim: 16, decoder_intermediate_dim: 32, decoder_layers: 2, encoder_layers: 1}"
)


@pytest.mark.parametrize(
    ("model", "weight"),
    [(None, "decoder.layers.0.conv.parametrizations.weight.original1"), (SPECTRAL, "decoder.head.weight")],
    ids=["conv", "spectral"],
)
def test_trains_exports_and_loads(manifest: Path, tmp_path: Path, model: str | None, weight: str) -> None:
    cfg = load_config(ROOT / "configs" / "codec-16k.yaml", [*overrides(manifest, 4), *([model] if model else [])])
    export = train_gan(cfg, tmp_path / "run")
    assert export is not None and (tmp_path / "run" / "logs").is_dir()
    tok = soundtok.load(export)
    assert tok.family == "codec" and tok.name == "codec-16k"
    assert load_file(export / "model.safetensors")[weight].dtype == torch.float16
    wav = soundtok.testing.load_fixture("digit")[0]
    assert tok.decode(tok.encode(wav[None], 16000)).shape[-1] == wav.shape[-1]


def test_vocoder_recipe_trains_exports_and_loads(manifest: Path, tmp_path: Path) -> None:
    tiny = [
        "model={dim: 16, intermediate_dim: 32, num_layers: 2}",
        "data.segment_seconds=0.128",  # 8 hops of 256 samples
        *[o for o in TINY if not o.startswith(("model=", "data.segment_seconds"))],
    ]
    cfg = load_config(ROOT / "configs" / "vocoder-16k.yaml", [*tiny, f"data.manifest={manifest}", "steps=3"])
    export = train_gan(cfg, tmp_path / "run")
    assert export is not None
    vocoder = load_vocoder(export)
    assert isinstance(vocoder, Vocoder) and vocoder.name == "vocoder-16k"
    mel = vocoder.mel(soundtok.testing.load_fixture("digit")[0][..., :4096])
    assert vocoder.synthesize(mel).shape == (1, 1, 4096)
    bad_crop = [*tiny, f"data.manifest={manifest}", "data.segment_seconds=0.1"]
    bad = load_config(ROOT / "configs" / "vocoder-16k.yaml", bad_crop)
    with pytest.raises(SoundtokError, match="whole number of hops"):
        train_gan(bad, tmp_path / "bad")


def test_fine_tunes_from_an_exported_checkpoint(manifest: Path, tmp_path: Path) -> None:
    """init_weights: a second run starts from the first one's export (the adversarial phase of a shipped codec)."""
    config = ROOT / "configs" / "codec-16k.yaml"
    first = train_gan(load_config(config, [*overrides(manifest, 2), "adversarial_start=100"]), tmp_path / "a")
    assert first is not None
    start = load_file(first / "model.safetensors")
    # 0 steps are not allowed; one step with lr 0 leaves the weights as loaded (fp16 -> fp32 -> fp16 is exact)
    tuned = train_gan(
        load_config(config, [*overrides(manifest, 1), f"init_weights={first}", "optim.lr=0", "adversarial_start=0"]),
        tmp_path / "b",
    )
    assert tuned is not None
    after = load_file(tuned / "model.safetensors")
    trained = [k for k in start if k.startswith(("encoder.", "decoder."))]
    assert trained
    for key in trained:
        torch.testing.assert_close(after[key], start[key], rtol=0, atol=0, msg=key)
    # the codebooks were loaded too: one EMA update (decay 0.99) moves most codes a little; a k-means init would
    # have re-drawn them all from the batch
    codes_before, codes_after = (w["quantizer.quantizers.0.codebook"].float() for w in (start, after))
    moved = (codes_after - codes_before).norm(dim=1) / codes_before.norm(dim=1)
    assert moved.median() < 0.1

    wider = [*overrides(manifest, 1), "model.latent_dim=16", f"init_weights={first}"]
    with pytest.raises(SoundtokError, match="shapes differ"):
        train_gan(load_config(config, wider), tmp_path / "c")
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    broken = [*overrides(manifest, 1), f"init_weights={tmp_path / 'broken.safetensors'}"]
    with pytest.raises(SoundtokError, match="cannot read it as safetensors"):
        train_gan(load_config(config, broken), tmp_path / "d")


def test_export_state_matches_the_runs_own_export(manifest: Path, tmp_path: Path) -> None:
    from soundtok.cli.main import main
    from soundtok.train.export import export_state

    final = train_gan(load_config(ROOT / "configs" / "codec-16k.yaml", overrides(manifest, 4)), tmp_path / "run")
    assert final is not None
    assert main(["export-state", str(tmp_path / "run"), "--out", str(tmp_path / "newest")]) == 0
    a, b = load_file(final / "model.safetensors"), load_file(tmp_path / "newest" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    with pytest.raises(SoundtokError, match="already holds a checkpoint"):  # a given --out is not replaced
        export_state(tmp_path / "run", step=2, out=tmp_path / "newest")
    export_state(tmp_path / "run", step=2, out=tmp_path / "newest", force=True)
    assert read_checkpoint_config(tmp_path / "newest")["extra"]["steps"] == 2
    earlier = export_state(tmp_path / "run", step=2)
    assert earlier == tmp_path / "run" / "export-step-0000002"
    assert read_checkpoint_config(earlier)["extra"]["steps"] == 2
    with pytest.raises(SoundtokError, match=r"no state at step 3 \(kept: step-0000002, step-0000004\)"):
        export_state(tmp_path / "run", step=3)
    with pytest.raises(SoundtokError, match="not a training run folder"):
        export_state(tmp_path)


def test_resume_continues_exactly(manifest: Path, tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "codec-16k.yaml", overrides(manifest, 4))
    straight = train_gan(cfg, tmp_path / "a")
    assert train_gan(cfg, tmp_path / "b", max_steps_this_run=2) is None  # stopped half way
    assert latest_state(tmp_path / "b") == (2, tmp_path / "b" / "state" / "step-0000002")
    resumed = train_gan(cfg, tmp_path / "b")
    assert straight is not None and resumed is not None
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after resuming")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses POSIX signals")
def test_killed_run_resumes_from_its_last_state(manifest: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "soundtok.train", str(ROOT / "configs" / "codec-16k.yaml"), str(run)]
    cmd += overrides(manifest, 40)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while latest_state(run) is None or latest_state(run)[0] < 4:  # type: ignore[index]
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no state written after 120 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    killed_at = latest_state(run)
    assert killed_at is not None and killed_at[0] < 40
    done = subprocess.run([*cmd[:-1], "steps=42"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed {run} at step {killed_at[0]}" in done.stderr
    assert latest_state(run)[0] == 42  # type: ignore[index]
    assert soundtok.load(run / "export").encode(torch.zeros(1, 1, 800), 16000).num_levels == 3
