#!/usr/bin/env python3
"""The GPU training pack: soundtok's generators trained side by side on a lent GPU for a few minutes, from files
that travel with the repository (docs/gpu_pack.md; the jobs are in configs/gpu-pack.yaml).

    python scripts/gpu_pack.py build                 here: .gpu-pack/ = a training shard + the wheels it lacks there
    bash scripts/gpu_pack.sh                         there (device tool, carry [".gpu-pack"]): results in $OUT
    python scripts/gpu_pack.py dry-run [--out DIR]   here, on the CPU: a tiny shard, two steps a job (CI runs it)
    python scripts/gpu_pack.py unpack FILES RUNS     here: untar what came back into RUNS/<job>/

``run`` (what gpu_pack.sh calls) starts every job with ``soundtok train`` (``max_minutes`` set so all end
together), relaunches a job that failed in bf16 once in fp32 (resuming its state), exports each job's newest state
(pairs at their last common step) as an fp16 checkpoint, scores it against the shipped model on the shard's
held-out clips, writes its curves, and packs each job into one tar: at most 8 files of at most 16 MiB come back.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # there, soundtok is not installed: it runs from the checkout
CONFIG = ROOT / "configs" / "gpu-pack.yaml"
MIB = 2**20
MAX_FILE = 16 * MIB  # the device tool's limits on what comes back
MAX_FILES = 8


def log(message: str) -> None:
    print(f"[gpu-pack {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_pack(path: Path = CONFIG) -> dict[str, Any]:
    """A pack config; ``base: FILE`` takes every key it does not set from that config (e.g. a pilot grid's jobs
    with the default pack's wheels and shard)."""
    pack = dict(yaml.safe_load(path.read_text()))
    if "base" in pack:
        pack = {**load_pack(ROOT / pack.pop("base")), **pack}
    return pack


# ----------------------------------------------------------------------------------------------------- build


def build(pack_dir: Path, shares: dict[str, float], wheels: list[str] | None, corpus: Path | None) -> None:
    """The shard (from the corpus train split) and, unless ``wheels`` is None, the wheels, into ``pack_dir``."""
    from soundtok.corpus.loaders import load_shared_corpus
    from soundtok.train.shard import build_shard

    shutil.rmtree(pack_dir / "shard", ignore_errors=True)
    index = build_shard(load_shared_corpus(corpus, list(shares)), pack_dir / "shard", shares_mib=shares)
    log(f"shard: {index['seconds']} s of audio, {sum(index['bytes'].values()) / MIB:.1f} MiB")  # type: ignore
    if wheels is None:
        return
    shutil.rmtree(pack_dir / "wheels", ignore_errors=True)
    platforms = [
        f"--platform={p}_x86_64" for p in ("manylinux_2_28", "manylinux_2_27", "manylinux_2_17", "manylinux2014")
    ]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version=3.12",
         "--implementation=cp", *platforms, "-d", str(pack_dir / "wheels"), *wheels],
        check=True,
    )  # fmt: skip
    travelling = _tree_bytes() + _dir_bytes(pack_dir)
    log(f"wheels: {len(wheels)}; what travels to the GPU: {travelling / MIB:.1f} MiB of the 64 allowed")
    if travelling > 62 * MIB:
        log("WARNING: over 62 MiB: shrink the shard shares in configs/gpu-pack.yaml")


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _tree_bytes() -> int:
    """Bytes of the files the device tool sends: tracked plus untracked files git does not ignore."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True
    ).stdout
    return sum((ROOT / f).stat().st_size for f in out.decode().split("\0") if f and (ROOT / f).is_file())


# ------------------------------------------------------------------------------------------------------- run


class Job:
    """One ``soundtok train`` process of the pack, relaunched once in fp32 if it fails."""

    def __init__(self, name: str, spec: dict[str, Any], common: list[str], extra: list[str], work: Path, env: dict):
        self.name, self.config = name, ROOT / spec["config"]
        self.reference = ROOT / spec.get("reference", f"soundtok/checkpoints/{name}")  # scored beside it
        self.overrides = [*common, *spec.get("overrides", []), *extra]  # later ones win
        self.run_dir, self.env = work / name, env
        self.attempts: list[dict[str, Any]] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, minutes: float, fallback: list[str] | None = None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        args = [*self.overrides, *(fallback or []), f"max_minutes={minutes:.3f}"]
        cmd = [sys.executable, "-m", "soundtok.cli.main", "train", str(self.config), str(self.run_dir), *args]
        logfile = (self.run_dir / "train.log").open("ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=logfile, stderr=subprocess.STDOUT)
        self.attempts.append({"args": args, "started": time.time()})
        log(f"{self.name}: started ({' '.join(args)})")

    def poll(self, remaining_minutes: float) -> bool:
        """True while running; on a failure, relaunch once in fp32 if time allows."""
        assert self.proc is not None
        code = self.proc.poll()
        if code is None:
            return True
        attempt = self.attempts[-1]
        if "code" not in attempt:
            attempt.update(code=code, seconds=round(time.time() - attempt["started"], 1))
            log(f"{self.name}: exited {code} after {attempt['seconds']} s")
            if code != 0 and len(self.attempts) == 1 and remaining_minutes > 1.0:
                self.start(remaining_minutes, ["precision=fp32"])
                return True
        return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.attempts[-1].update(code="killed", seconds=round(time.time() - self.attempts[-1]["started"], 1))


def run(out: Path, work: Path, pack: dict[str, Any], minutes: float, extra: list[str]) -> bool:
    """Train every job for ``minutes``, then export, score and pack each into ``out``; True if all exported."""
    from soundtok.train.state import kept_states

    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"environment": environment(), "minutes": minutes, "jobs": {}}
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=path)
    threads = max(1, (os.cpu_count() or 2) // max(1, len(pack["jobs"])))
    env.setdefault("OMP_NUM_THREADS", str(threads))
    jobs = [Job(name, spec, pack["common"], extra, work, env) for name, spec in pack["jobs"].items()]
    for job in jobs:
        job.start(minutes)
    grace = 2.0  # minutes past the budget for the last step, its state and a slow start
    while True:
        remaining = minutes - (time.time() - started) / 60
        running = [job for job in jobs if job.poll(remaining)]
        if not running:
            break
        if remaining < -grace:
            for job in running:
                log(f"{job.name}: still running {grace} min past the budget: killed")
                job.kill()
            break
        time.sleep(2)

    steps = {job.name: [int(p.name.split("-")[1]) for p in kept_states(job.run_dir)] for job in jobs}
    export_steps = {name: max(s) if s else None for name, s in steps.items()}
    for pair in pack.get("pairs", []):
        common = set.intersection(*(set(steps[n]) for n in pair))
        for name in pair:
            export_steps[name] = max(common) if common else None
    ok = True
    for job in jobs:
        record = {"attempts": job.attempts, "states": steps[job.name], "exported_step": export_steps[job.name]}
        try:
            record.update(finish(job, export_steps[job.name], out))
        except Exception as exc:  # one job's failure must not cost the others their results (nor its own log)
            record["error"] = f"{type(exc).__name__}: {exc}"
            log(f"{job.name}: {record['error']}")
        ok &= "error" not in record
        summary["jobs"][job.name] = record
    summary["seconds"] = round(time.time() - started, 1)
    (out / "pack.json").write_text(json.dumps(summary, indent=1, default=str))
    log(f"done in {summary['seconds']} s; results in {out}")
    return ok


def finish(job: Job, step: int | None, out: Path) -> dict[str, Any]:
    """Export ``job`` at ``step``, write its curves and scores, and pack it as ``out/<name>.tar`` (its log and
    curves alone if it saved no state)."""
    from soundtok.train.export import export_state

    record: dict[str, Any] = {}
    try:
        if step is None:
            raise RuntimeError("no state was saved: see its train.log")
        export = export_state(job.run_dir, step=step, out=job.run_dir / "export", force=True)
        try:
            record["scores"] = score(job, export, "cuda" if _cuda() else "cpu")
        except Exception as exc:  # e.g. an op the GPU build refuses: score on the CPU instead
            log(f"{job.name}: scoring on the GPU failed ({type(exc).__name__}: {exc}); scoring on the CPU")
            record["scores"] = score(job, export, "cpu")
        (job.run_dir / "scores.json").write_text(json.dumps(record["scores"], indent=1))
    finally:
        members = ["export", "scores.json", "curves.csv", "config.yaml", "train.log"]
        if (job.run_dir / "logs").is_dir():
            write_curves(job.run_dir)
        tar_path = out / f"{job.name}.tar"
        for keep in range(len(members), 0, -1):  # drop from the end (log, config, curves) if the export needs room
            with tarfile.open(tar_path, "w") as tar:
                for name in members[:keep]:
                    if (job.run_dir / name).exists():
                        tar.add(job.run_dir / name, arcname=f"{job.name}/{name}")
            if tar_path.stat().st_size <= MAX_FILE:
                break
        record["tar_mib"] = round(tar_path.stat().st_size / MIB, 2)
    return record


def write_curves(run_dir: Path) -> Path:
    """The run's TensorBoard scalars as ``curves.csv`` (tag, step, value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = run_dir / "curves.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag", "step", "value"])
        for events in sorted((run_dir / "logs").glob("events.*")):
            acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
            acc.Reload()
            for tag in acc.Tags()["scalars"]:
                writer.writerows([tag, e.step, f"{e.value:.6g}"] for e in acc.Scalars(tag))
    return path


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def score(job: Job, export: Path, device: str) -> dict[str, Any]:
    """The recipe's own held-out scores (the shard's valid clips) of the export and of the shipped model (the job's
    ``reference``, default the shipped checkpoint of its name), if there is one: a same-run before/after."""
    import torch

    import soundtok
    from soundtok.train.config import load_config
    from soundtok.train.data import training_data
    from soundtok.train.flow import evaluate_flow
    from soundtok.train.gan import evaluate_codec, evaluate_vocoder
    from soundtok.vocoder import load_vocoder

    cfg = load_config(job.run_dir / "config.yaml")
    evaluate: Callable[[Any, Any], dict[str, float]]
    evaluate = {"codec": evaluate_codec, "vocoder": evaluate_vocoder}.get(cfg.recipe, evaluate_flow)  # type: ignore
    candidates = {"trained": export, "shipped": job.reference}
    scores: dict[str, Any] = {}
    clips_at: dict[int, list] = {}  # held-out clips per sample rate, read once
    for label, folder in candidates.items():
        if not folder.is_dir():
            continue
        model = soundtok.load(folder) if cfg.recipe != "vocoder" else load_vocoder(folder)
        if model.sample_rate not in clips_at:
            clips_at[model.sample_rate] = [(i, w.to(device)) for i, w in training_data(cfg.data, model.sample_rate)[1]]
        clips = clips_at[model.sample_rate]
        model = model.to(device)
        with torch.no_grad():
            scores[label] = {k: round(float(v), 4) for k, v in evaluate(model, clips).items()}
    return scores


def environment() -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "host": platform.node()}
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
        smi = shutil.which("nvidia-smi")
        if smi:
            facts["nvidia_smi"] = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip()
    return facts


# --------------------------------------------------------------------------------------------- dry-run, unpack


def dry_run(out: Path, corpus: Path | None, pack: dict[str, Any]) -> bool:
    """The whole pack on the CPU with the config's ``dry_run`` settings and a tiny shard; checks what comes back."""
    settings = pack["dry_run"]
    with tempfile.TemporaryDirectory(prefix="gpu-pack-dry-") as tmp:
        build(Path(tmp), settings["shard"], None, corpus)
        ok = run(
            out, Path(tmp) / "runs", pack, settings["minutes"], [*settings["overrides"], f"data.shard={tmp}/shard"]
        )
    files = [p for p in out.iterdir() if p.is_file()]
    too_big = [p.name for p in files if p.stat().st_size > MAX_FILE]
    if len(files) > MAX_FILES or too_big:
        log(f"FAILED: {len(files)} files back (at most {MAX_FILES}); over 16 MiB: {too_big}")
        return False
    return ok


def unpack(files: Path, runs: Path) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    for tar_path in sorted(files.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            tar.extractall(runs, filter="data")
        log(f"{tar_path.name} -> {runs / tar_path.stem}")
    for name in ("pack.json", "pack.log"):
        if (files / name).exists():
            shutil.copy(files / name, runs / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="write the shard and the wheels (here, with ../shared)")
    p.add_argument("--pack", type=Path, default=ROOT / ".gpu-pack")
    p.add_argument("--corpus", type=Path, default=None)
    p = sub.add_parser("run", help="train, export, score and pack every job (on the GPU)")
    p.add_argument("--config", type=Path, default=CONFIG, help="the pack's jobs (default configs/gpu-pack.yaml)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gpu-pack-runs")
    p.add_argument("--minutes", type=float, default=None)
    p = sub.add_parser("dry-run", help="the pack on the CPU with tiny settings")
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "gpu-pack-dry-out")
    p.add_argument("--corpus", type=Path, default=None)
    p = sub.add_parser("unpack", help="untar the pack's results")
    p.add_argument("files", type=Path)
    p.add_argument("runs", type=Path)
    args = parser.parse_args(argv)

    pack = load_pack(getattr(args, "config", CONFIG))
    if args.command == "build":
        build(args.pack, pack["shard"], pack["wheels"], args.corpus)
    elif args.command == "run":
        return 0 if run(args.out, args.work, pack, args.minutes or pack["minutes"], []) else 1
    elif args.command == "dry-run":
        shutil.rmtree(args.out, ignore_errors=True)
        return 0 if dry_run(args.out, args.corpus, pack) else 1
    else:
        unpack(args.files, args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
