"""A DASB-style table: what each tokenizer's tokens tell a light probe, on six tasks of the shared corpus.

Rows (``--systems``): registered tokenizers (``soundtok list``; each item is encoded with ``tokenizer.encode``),
``semantic:L<layer>-K<K>`` (units of Whisper base layer ``layer``, k-means with ``K`` clusters, centroids from
``benchmarks/semantic_study.py fit``), ``continuous:L<layer>`` (Whisper base features of that layer: the
upper reference) and ``<tokenizer>@<n>``: an RVQ codec's first ``n`` codebooks (``codec-16k@2`` is 1 kbit/s).
Semantic and continuous rows read the study's feature store (Whisper base, 1 s short windows) instead of running
Whisper again; the script checks on ``--check-items`` clips that the store's units equal what
the ``semantic`` tokenizer's ``encode`` gives (they can differ only where float16 storage flips a near tie).

Columns: the six probe tasks of :mod:`soundtok.probes.tasks` (digits, asr, speaker, emotion, events,
instruments), each the mean and 95% t-interval over ``--seeds`` seeds of the same head
(:data:`soundtok.probes.BENCHMARK_PROBE`, fixed before any run) trained on the train split and scored once on the
test split; then the nominal bitrate and the encode real-time factor on one 30 s clip (``--threads`` threads).

    python benchmarks/dasb.py                       # the default rows, 3 seeds, writes benchmarks/results/dasb.*
    python benchmarks/dasb.py --systems codec2-3200 semantic:L6-K1000 --tasks digits --seeds 3 --out /tmp/d
    python benchmarks/dasb.py --systems codec-16k@2 codec-16k@6 --resume   # add the codec at 1 and 3 kbit/s

Inputs are computed once per system and cached under ``--work`` (default ``runs/dasb``); results are written after
every probe, so a killed run keeps what it finished and a rerun skips it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

import soundtok
from soundtok.audio.io import load_audio
from soundtok.corpus.loaders import load_shared_corpus
from soundtok.encoders.store import FeatureStore
from soundtok.eval.provenance import command_line, machine
from soundtok.fixtures import load_fixture
from soundtok.nn.kmeans import nearest
from soundtok.probes import BENCHMARK_PROBE, TASKS, InputSpec, summarise, task_split, train_probe
from soundtok.tokenizers.semantic import SemanticConfig, SemanticTokenizer

log = logging.getLogger("dasb")
ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "runs" / "semantic"
DEFAULT_SYSTEMS = ["semantic:L6-K1000", "semantic:L3-K1000", "codec2-1200", "codec2-3200", "continuous:L6"]
TASK_ORDER = ["digits", "asr", "speaker", "emotion", "events", "instruments"]


def store() -> FeatureStore:
    return FeatureStore(STUDY / "features" / "whisper-base-w1")


def parse_semantic(name: str) -> tuple[int, int]:
    layer, clusters = name.split(":")[1].split("-")
    return int(layer[1:]), int(clusters[1:])


def semantic_tokenizer(name: str) -> SemanticTokenizer:
    """The study's ``semantic:L<layer>-K<K>`` units as a tokenizer, for encoding only (a toy decoder is attached:
    probes never decode)."""
    layer, clusters = parse_semantic(name)
    tok = SemanticTokenizer(
        SemanticConfig(layers=(layer,), num_clusters=clusters, vocoder="griffin-lim", dim=16, heads=2)
    )
    tok.set_centroids(load_file(str(STUDY / "kmeans" / f"L{layer}-K{clusters}.safetensors"))["centroids"])
    return tok.eval()


def load_system(system: str) -> Any:
    """A registered tokenizer or checkpoint folder; ``NAME@N`` keeps an RVQ codec's first ``N`` codebooks."""
    name, at, codebooks = system.rpartition("@")
    if not at or not codebooks.isdigit():  # no '@N' suffix (a folder name may hold an '@')
        name, codebooks = system, ""
    tok = soundtok.load(name)
    if codebooks:
        if not hasattr(tok, "set_num_codebooks"):
            raise SystemExit(f"{system!r}: '@N' needs an RVQ codec; {name!r} is a {tok.family!r} tokenizer")
        tok.set_num_codebooks(int(codebooks))
    return tok


def system_inputs(system: str, ids: list[str], paths: dict[str, Path], work: Path) -> tuple[InputSpec, dict]:
    """(input spec, {item id: probe input}) for every id, cached in ``work``."""
    cache = work / f"{system.replace(':', '_')}.pt"
    if cache.is_file():
        saved = torch.load(cache)
        if set(ids) <= set(saved["inputs"]):
            return InputSpec(**saved["spec"]), saved["inputs"]
    spec, inputs = compute_inputs(system, ids, paths)
    work.mkdir(parents=True, exist_ok=True)
    torch.save({"spec": spec.__dict__, "inputs": inputs}, cache)
    return spec, inputs


def compute_inputs(system: str, ids: list[str], paths: dict[str, Path]) -> tuple[InputSpec, dict]:
    if system.startswith("continuous:"):
        features = store()
        layer = int(system.split(":L")[1])
        spec = InputSpec("features", (features.frame_rate,), dim=features.dim)
        inputs: dict[str, Any] = {
            i: torch.from_numpy(np.asarray(features.get(i, layer), dtype=np.float32)) for i in ids
        }
        return spec, inputs
    if system.startswith("semantic:"):
        features = store()
        layer, clusters = parse_semantic(system)
        centroids = load_file(str(STUDY / "kmeans" / f"L{layer}-K{clusters}.safetensors"))["centroids"][0]
        spec = InputSpec("tokens", (features.frame_rate,), (clusters,))
        inputs = {}
        for i in ids:
            h = torch.from_numpy(np.asarray(features.get(i, layer), dtype=np.float32))
            inputs[i] = [nearest(h, centroids)[0]]
        return spec, inputs
    tok = load_system(system)
    spec = InputSpec("tokens", tok.frame_rates, tok.codebook_sizes)
    inputs = {}
    for n, i in enumerate(ids):
        wav, sr = load_audio(paths[i], channels=1)
        tokens = tok.encode(wav[None], sr)
        inputs[i] = [c[0, : int(tokens.frame_lengths(level)[0])] for level, c in enumerate(tokens.codes)]
        if n % 500 == 0:
            log.info("%s: encoded %d / %d", system, n, len(ids))
    return spec, inputs


def check_semantic_store(system: str, paths: dict[str, Path], ids: list[str]) -> float:
    """Fraction of units equal between the store and ``SemanticTokenizer.encode`` on ``ids``."""
    tok = semantic_tokenizer(system)
    _, stored = compute_inputs(system, ids, paths)
    same = total = 0
    for i in ids:
        wav, sr = load_audio(paths[i], channels=1)
        codes = tok.encode(wav[None], sr).codes[0][0]
        n = min(codes.numel(), stored[i][0].numel())
        same += int((codes[:n] == stored[i][0][:n]).sum())
        total += n
    return same / max(total, 1)


def _by_command(results: dict[str, Any]) -> dict[str, list[str]]:
    """command -> the rows it made (rows from before commands were recorded: the top-level command)."""
    out: dict[str, list[str]] = {}
    for system, row in results["rows"].items():
        out.setdefault(row.get("command", results["command"]), []).append(system)
    return out


def encode_rtf(system: str, threads: int) -> tuple[float, float]:
    """(nominal bit/s, encode real-time factor on 30 s of speech). A continuous row has no bitrate; its RTF is that
    of the layer-6 semantic tokenizer (Whisper to layer 6 plus the nearest-centroid search: an upper bound)."""
    speech, sr = load_fixture("speech")
    clip = speech.repeat(1, -(-30 * sr // speech.shape[1]))[:, : 30 * sr][None]  # [1, 1, 30 s]
    torch.set_num_threads(threads)
    if system.startswith(("semantic:", "continuous:")):
        tok: Any = semantic_tokenizer("semantic:L6-K1000" if system.startswith("continuous") else system)
    else:
        tok = load_system(system)
    tok.encode(clip, sr)  # warm-up
    t0 = time.perf_counter()
    tok.encode(clip, sr)
    rtf = (time.perf_counter() - t0) / 30.0
    bitrate = float("nan") if system.startswith("continuous:") else tok.bitrate
    torch.set_num_threads(1)
    return bitrate, rtf


def run(args: argparse.Namespace) -> dict[str, Any]:
    corpus = load_shared_corpus()
    paths = {item.id: item.path for item in corpus}
    out_json = args.out / "dasb.json"
    results: dict[str, Any] = json.loads(out_json.read_text()) if out_json.is_file() and args.resume else {}
    results.setdefault("rows", {})
    splits = {task: task_split(task, corpus) for task in args.tasks}
    ids = sorted({it.id for s in splits.values() for it in (*s.train, *s.test)})
    for system in args.systems:
        row = results["rows"].setdefault(system, {"tasks": {}})
        row.setdefault("command", command_line())  # the run that made the row (--resume adds rows to older ones)
        spec, inputs = system_inputs(system, ids, paths, args.work)
        if "bitrate" not in row:
            row["bitrate"], row["encode_rtf"] = encode_rtf(system, args.threads)
            if system.startswith("semantic:"):
                sample = [it.id for it in splits[args.tasks[0]].test[: args.check_items]]
                row["store_agreement"] = check_semantic_store(system, paths, sample)
        for task in args.tasks:
            if task in row["tasks"]:
                continue
            split = splits[task]
            train_x = [inputs[it.id] for it in split.train]
            test_x = [inputs[it.id] for it in split.test]
            runs = [train_probe(split, spec, train_x, test_x, BENCHMARK_PROBE, seed=s) for s in range(args.seeds)]
            row["tasks"][task] = {
                "summary": {k: v.__dict__ for k, v in summarise(runs).items()},
                "chance": runs[0].chance,
                "seeds": [r.metrics for r in runs],
                "seconds": sum(r.train_seconds for r in runs),
            }
            log.info("%s %s %s", system, task, {k: round(v.mean, 4) for k, v in summarise(runs).items()})
            write(results, args)
    return results


def write(results: dict[str, Any], args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    results["command"] = command_line()
    if not args.render:  # --render keeps the machine that measured the rows
        results["machine"] = machine(threads="probes on 1 thread each")
    results["probe"] = BENCHMARK_PROBE.to_dict()
    (args.out / "dasb.json").write_text(json.dumps(results, indent=1))
    tasks = [t for t in TASK_ORDER if t in args.tasks]
    head = [f"{t} ({'CER' if TASKS[t].kind == 'ctc' else 'acc'})" for t in tasks]
    lines = [
        "# DASB-style probes on the shared corpus",
        "",
        "Commands: " + "; ".join(f"`{c}` ({', '.join(rows)})" for c, rows in _by_command(results).items()) + "  ",
        f"Machine: {results['machine']}; probe {results['probe']}; {args.seeds} seeds: mean [95% interval].",
        "",
        "| system | " + " | ".join(head) + " | bit/s | encode RTF |",
        "|---|" + "---|" * (len(tasks) + 2),
    ]
    chance: dict[str, Any] = {}
    for system, row in results["rows"].items():
        cells = []
        for t in tasks:
            cell = row["tasks"].get(t)
            if cell is None:
                cells.append("not run")
                continue
            metric = "cer" if TASKS[t].kind == "ctc" else "accuracy"
            v = cell["summary"][metric]
            cells.append(f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]")
            chance[t] = cell["chance"]
        bitrate = "-" if row.get("bitrate") != row.get("bitrate") else f"{row.get('bitrate', float('nan')):.0f}"
        lines.append(f"| {system} | " + " | ".join(cells) + f" | {bitrate} | {row.get('encode_rtf', 0):.3f} |")
    lines += [
        "",
        "Chance (most frequent train class, on test): "
        + ", ".join(f"{t} {chance[t]:.3f}" for t in tasks if chance.get(t) is not None),
        "",
        "WER of the asr probe and every seed's scores are in dasb.json. Semantic rows read units from the study's "
        "feature store; their agreement with SemanticTokenizer.encode on test clips: "
        + ", ".join(f"{s} {r['store_agreement']:.4f}" for s, r in results["rows"].items() if "store_agreement" in r)
        + ".",
    ]
    lines += ["", "## DASB's findings, on our data", "", *findings(results["rows"], tasks)]
    (args.out / "dasb.md").write_text("\n".join(lines) + "\n")


def findings(rows: dict[str, Any], tasks: list[str]) -> list[str]:
    """Best semantic row vs best compression row (registered tokenizers other than semantic ones) per task, as
    differences of means: semantic tokens should win on asr / digits / emotion, compression tokens on speaker; then
    the gap from the best discrete row to continuous features (positive: continuous is better), DASB's third
    finding."""

    def best(kind: str, task: str) -> tuple[str, float, float, float] | None:
        """(system, mean, low, high) of the best row of ``kind`` on ``task``."""
        lower = TASKS[task].kind == "ctc"
        metric = "cer" if lower else "accuracy"
        summary = {name: row["tasks"][task]["summary"][metric] for name, row in rows.items() if task in row["tasks"]}
        scores = [
            (name, summary[name]["mean"], summary[name]["low"], summary[name]["high"])
            for name, row in rows.items()
            if task in row["tasks"]
            and (name.startswith("semantic:") == (kind == "semantic"))
            and not name.startswith("continuous:")
        ]
        if not scores:
            return None
        return min(scores, key=lambda x: x[1]) if lower else max(scores, key=lambda x: x[1])

    out = []
    for task, expected in (
        ("asr", "semantic"),
        ("digits", "semantic"),
        ("emotion", "semantic"),
        ("speaker", "compression"),
    ):
        if task not in tasks:
            continue
        sem, comp = best("semantic", task), best("compression", task)
        if sem is None or comp is None:
            out.append(f"- {task}: needs both a semantic and a compression row")
            continue
        lower = TASKS[task].kind == "ctc"
        sem_wins = sem[1] < comp[1] if lower else sem[1] > comp[1]
        winner = "semantic" if sem_wins else "compression"
        unit = "CER" if lower else "accuracy"
        out.append(
            f"- {task} ({unit}): best semantic {sem[0]} {sem[1]:.3f} vs best compression {comp[0]} {comp[1]:.3f}: "
            f"{winner} tokens win by {abs(sem[1] - comp[1]):.3f} (DASB expects {expected}: "
            f"{'holds' if winner == expected else 'does not hold'}"
            + ("; the two 95% intervals overlap, so not a clear win)" if overlap(sem, comp) else ")")
        )
    for task in tasks:
        discrete = [b for b in (best("semantic", task), best("compression", task)) if b is not None]
        continuous = [
            (name, row["tasks"][task]["summary"]["cer" if TASKS[task].kind == "ctc" else "accuracy"]["mean"])
            for name, row in rows.items()
            if name.startswith("continuous:") and task in row["tasks"]
        ]
        if discrete and continuous:
            lower = TASKS[task].kind == "ctc"
            top = min(discrete, key=lambda b: b[1]) if lower else max(discrete, key=lambda b: b[1])
            ref = continuous[0]
            gap = (top[1] - ref[1]) if lower else (ref[1] - top[1])
            out.append(
                f"- {task}: continuous {ref[0]} {ref[1]:.3f} vs best discrete {top[0]} {top[1]:.3f}: gap {gap:+.3f}"
            )
    return out


def overlap(a: tuple[str, float, float, float], b: tuple[str, float, float, float]) -> bool:
    return not (a[3] < b[2] or b[3] < a[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", default=DEFAULT_SYSTEMS)
    parser.add_argument("--tasks", nargs="+", default=TASK_ORDER, choices=TASK_ORDER)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="for the encode RTF")
    parser.add_argument("--check-items", type=int, default=20)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "dasb")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--resume", action="store_true", help="keep the rows/tasks already in --out/dasb.json")
    parser.add_argument("--render", action="store_true", help="only rewrite dasb.md from --out/dasb.json")
    args = parser.parse_args()
    if args.render:
        saved = json.loads((args.out / "dasb.json").read_text())
        sys.argv = shlex.split(saved["command"].removeprefix("python "))  # the table names the command that ran
        write(saved, args)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    run(args)


if __name__ == "__main__":
    main()
