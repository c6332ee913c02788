"""Semantic tokens from Whisper base: which layer, how many clusters (the layer / cluster study).

Three steps, each reusing what the previous one wrote under ``--work`` (default ``runs/semantic``):

1. ``extract``: Whisper base features (all 7 layers: 0 = embeddings .. 6 = encoder output) of every clip of the
   shared corpus, short windows (``window_seconds=1``, :mod:`soundtok.encoders.whisper`), in a
   :class:`~soundtok.encoders.store.FeatureStore` (4.8 GB float16 for the 3.7 h corpus; 7.5 min on 2 CPU threads).
2. ``fit``: mini-batch k-means (:func:`soundtok.tokenizers.semantic.fit_centroids`; k-means++ init, ``--passes``
   passes of 20k-frame batches, seed 0) on the **train split of every dataset** (the test clips are never seen)
   for every (layer, K) of the study: layers 0..6 at K = 1000, and K = 500 / 2000 at layers 3 and 6. Writes
   ``kmeans/L<layer>-K<K>.safetensors`` (``centroids [1, K, 512]``) and the fit's inertia and time.
3. ``probe``: for each (layer, K), the units of every clip are probed (:mod:`soundtok.probes`, the same head and
   budget for all) on the study's tasks, ``--seeds`` seeds each; plus the continuous features of the same layer as
   the upper reference. Prints and writes ``semantic_layers.{md,json,png}`` (accuracy / CER by layer and by K).

The layer for the shipped ``semantic-whisper-base-1000`` was fixed before this study (the last layer, as
WhisperSpeech and CosyVoice quantize Whisper's late encoder states), so the study's test scores choose nothing.

    python benchmarks/semantic_study.py extract fit probe
    python benchmarks/semantic_study.py probe --tasks digits emotion --seeds 3
    python benchmarks/semantic_study.py render      # tables and plot again from semantic_layers.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from soundtok.corpus.loaders import load_shared_corpus
from soundtok.encoders import load_encoder
from soundtok.encoders.store import FeatureStore, extract_features
from soundtok.eval import provenance
from soundtok.nn.kmeans import nearest
from soundtok.probes import BENCHMARK_PROBE, InputSpec, ProbeConfig, summarise, task_split, train_probe
from soundtok.tokenizers.semantic import fit_centroids

log = logging.getLogger("semantic_study")
ROOT = Path(__file__).resolve().parents[1]
LAYERS = tuple(range(7))
#: (layer, K) fitted and probed: every layer at 1000 clusters, and 500 / 2000 at a middle and the last layer
GRID = tuple([(layer, 1000) for layer in LAYERS] + [(layer, k) for layer in (3, 6) for k in (500, 2000)])
FRAME_RATE = 50.0


def features_folder(work: Path) -> Path:
    return work / "features" / "whisper-base-w1"


def centroid_file(work: Path, layer: int, clusters: int) -> Path:
    return work / "kmeans" / f"L{layer}-K{clusters}.safetensors"


def extract(work: Path) -> FeatureStore:
    encoder = load_encoder("whisper-base", window_seconds=1.0)
    return extract_features(encoder, load_shared_corpus(), features_folder(work), layers=list(LAYERS))


def fit(work: Path, passes: int, grid: tuple[tuple[int, int], ...] = GRID) -> None:
    store = FeatureStore(features_folder(work))
    for layer, clusters in grid:
        path = centroid_file(work, layer, clusters)
        if path.is_file():
            continue
        t0 = time.perf_counter()
        result = fit_centroids(store, layer, clusters, passes=passes, seed=0)
        seconds = time.perf_counter() - t0
        used = int((result.counts > 0).sum())
        log.info(
            "layer %d K %d: inertia %.2f, %d/%d used, %d reassigned, %.0f s",
            layer,
            clusters,
            result.inertia,
            used,
            clusters,
            result.reassigned,
            seconds,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"inertia": f"{result.inertia:.4f}", "seconds": f"{seconds:.1f}", "used": str(used)}
        save_file({"centroids": result.centroids[None].contiguous()}, str(path), metadata=meta)


def units_of(store: FeatureStore, layer: int, centroids: torch.Tensor, ids: list[str]) -> list[list[torch.Tensor]]:
    """One ``[U]`` code tensor (a single level) per item."""
    out = []
    for item_id in ids:
        features = torch.from_numpy(np.asarray(store.get(item_id, layer), dtype=np.float32))
        codes, _ = nearest(features, centroids)
        out.append([codes])
    return out


def features_of(store: FeatureStore, layer: int, ids: list[str]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.asarray(store.get(i, layer), dtype=np.float32)) for i in ids]


def probe(work: Path, tasks: list[str], seeds: int, config: ProbeConfig, out: Path) -> dict[str, Any]:
    store = FeatureStore(features_folder(work))
    corpus = load_shared_corpus()
    rows: dict[str, Any] = {}
    for task in tasks:
        split = task_split(task, corpus)
        train_ids, test_ids = [it.id for it in split.train], [it.id for it in split.test]
        systems: list[tuple[str, int, int | None]] = [(f"L{layer}-K{k}", layer, k) for layer, k in GRID]
        systems += [(f"L{layer}-continuous", layer, None) for layer in LAYERS]
        for name, layer, clusters in systems:
            if clusters is None:
                spec = InputSpec("features", (FRAME_RATE,), dim=store.dim)
                train_x: list[Any] = features_of(store, layer, train_ids)
                test_x: list[Any] = features_of(store, layer, test_ids)
            else:
                centroids = load_file(str(centroid_file(work, layer, clusters)))["centroids"][0]
                spec = InputSpec("tokens", (FRAME_RATE,), (clusters,))
                train_x = units_of(store, layer, centroids, train_ids)
                test_x = units_of(store, layer, centroids, test_ids)
            results = [train_probe(split, spec, train_x, test_x, config, seed=s) for s in range(seeds)]
            summary = {k: v.__dict__ for k, v in summarise(results).items()}
            rows.setdefault(task, {})[name] = {
                "layer": layer,
                "clusters": clusters,
                "summary": summary,
                "chance": results[0].chance,
                "seconds": sum(r.train_seconds for r in results),
            }
            log.info("%s %s %s", task, name, {k: round(v["mean"], 4) for k, v in summary.items()})
            write(rows, tasks, seeds, config, out)
    return rows


def write(
    rows: dict[str, Any],
    tasks: list[str],
    seeds: int,
    config: ProbeConfig,
    out: Path,
    command: str | None = None,
    machine: str | None = None,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    command = command or provenance.command_line()
    machine = machine or provenance.machine()
    lines = [
        "# Semantic tokens from Whisper base: probe scores by layer and by number of clusters",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}; probe: {config.to_dict()}; {seeds} seeds, mean [95% interval].",
        "",
        "k-means on the train splits of all datasets (features: Whisper base, 1 s short windows). Test splits: see "
        "soundtok.probes.tasks. Accuracy is higher-better, CER/WER lower-better.",
        "",
    ]
    for task, systems in rows.items():
        lines += [
            f"## {task}",
            "",
            "| system | layer | K | metric | mean | 95% interval |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in systems.items():
            for metric, v in row["summary"].items():
                k = row["clusters"] if row["clusters"] is not None else "continuous"
                lines.append(
                    f"| {name} | {row['layer']} | {k} | {metric} | {v['mean']:.3f} | "
                    f"[{v['low']:.3f}, {v['high']:.3f}] |"
                )
        chance = next(iter(systems.values()))["chance"]
        lines += ["", f"chance (most frequent train class): {chance:.3f}" if chance is not None else "", ""]
    (out / "semantic_layers.md").write_text("\n".join(lines) + "\n")
    (out / "semantic_layers.json").write_text(
        json.dumps({"command": command, "machine": machine, "tasks": rows}, indent=1)
    )
    plot(rows, out / "semantic_layers.png")


def plot(rows: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(rows), figsize=(4.5 * len(rows), 3.6), squeeze=False)
    for ax, (task, systems) in zip(axes[0], rows.items(), strict=True):
        metric = next(iter(next(iter(systems.values()))["summary"]))
        for label, pick in (("K=1000", 1000), ("continuous", None)):
            xs = [r["layer"] for r in systems.values() if r["clusters"] == pick]
            ys = [r["summary"][metric]["mean"] for r in systems.values() if r["clusters"] == pick]
            if xs:
                ax.plot(xs, ys, marker="o", label=label)
        for k, marker, colour in ((500, "v", "tab:green"), (2000, "^", "tab:red")):
            xs = [r["layer"] for r in systems.values() if r["clusters"] == k]
            ys = [r["summary"][metric]["mean"] for r in systems.values() if r["clusters"] == k]
            if xs:
                ax.scatter(xs, ys, marker=marker, color=colour, label=f"K={k}", zorder=3)
        chance = next(iter(systems.values()))["chance"]
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", label="chance")
        ax.set_title(task)
        ax.set_xlabel("Whisper base layer")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("steps", nargs="+", choices=["extract", "fit", "probe", "render"])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "semantic")
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--tasks", nargs="+", default=["emotion", "speaker"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if "extract" in args.steps:
        extract(args.work)
    if "fit" in args.steps:
        fit(args.work, args.passes)
    if "probe" in args.steps:
        probe(args.work, args.tasks, args.seeds, BENCHMARK_PROBE, args.out)
    if "render" in args.steps:  # the tables and plot again, from an earlier run's JSON
        saved = json.loads((args.out / "semantic_layers.json").read_text())
        tasks = list(saved["tasks"])
        write(saved["tasks"], tasks, args.seeds, BENCHMARK_PROBE, args.out, saved["command"], saved["machine"])


if __name__ == "__main__":
    main()
