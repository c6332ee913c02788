"""Results ``soundtok bench`` shows but does not recompute: DASB probes, in-context learning and the audio LLM,
read from a results folder (by default the checkout's ``benchmarks/results``), each with its source and command.

These take minutes to hours per system, so they are run by their own benchmark scripts; the report quotes them as
recorded, under the names those scripts used, and never mixes them into the cached resynthesis rows.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import soundtok

log = logging.getLogger(__name__)


def default_results_folder() -> Path | None:
    """``benchmarks/results`` beside the installed package when it runs from a checkout, else None."""
    folder = Path(soundtok.__file__).resolve().parents[1] / "benchmarks" / "results"
    return folder if folder.is_dir() else None


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _dasb(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    tasks = ["digits", "speaker", "emotion", "events", "instruments"]
    rows = []
    for system, row in data["rows"].items():
        cells = [system]
        for task in tasks:
            acc = row["tasks"].get(task, {}).get("summary", {}).get("accuracy")
            cells.append(_fmt(acc["mean"]) + f" [{acc['low']:.3f}, {acc['high']:.3f}]" if acc else "-")
        rows.append(cells)
    return ["system", *[f"{t} accuracy [95% CI]" for t in tasks]], rows


def _icl(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = [
        [
            c["task"],
            f"{c['n_way']}-way {c['k_shot']}-shot",
            c["system"],
            c["llm"],
            f"{c['accuracy']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]",
            str(c["episodes"]),
        ]
        for c in data["cells"]
    ]
    return ["task", "episodes of", "system", "frozen LLM", "accuracy [95% CI]", "episodes"], rows


def _audio_llm(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = []
    for name, run in data["runs"].items():
        model = run.get("model", {})
        for task, per_dataset in run.get("tasks", {}).items():
            for dataset, scores in per_dataset.items():
                if not isinstance(scores, dict):
                    continue
                metric = next((m for m in ("accuracy", "wer", "similarity", "cider") if m in scores), None)
                if metric is None:
                    continue
                rows.append(
                    [
                        name,
                        str(run.get("audio_tokenizer", "")),
                        str(model.get("steps", "")),
                        task,
                        dataset,
                        str(scores.get("n", "")),
                        f"{metric} {_fmt(scores[metric])}",
                    ]
                )
    return ["run", "audio tokenizer", "steps", "task", "dataset", "items", "score"], rows


SOURCES = (
    ("dasb.json", "DASB-style probes (benchmarks/dasb.py)", _dasb),
    ("icl.json", "In-context learning by a frozen LLM (benchmarks/icl.py)", _icl),
    ("audio_llm.json", "Audio LLM, LoRA on SmolLM2 (benchmarks/audio_llm.py)", _audio_llm),
)


def recorded_results(folder: Path | None) -> list[dict[str, Any]]:
    """Blocks of ``{"title", "source", "head", "rows"}`` for the report; unreadable files are skipped, logged."""
    if folder is None:
        return []
    blocks = []
    for file, title, read in SOURCES:
        path = folder / file
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
            head, rows = read(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping recorded results %s: %s", path, exc)
            continue
        source = f"{path} — command: {data.get('command', 'not recorded')}"
        blocks.append({"title": title, "source": source, "head": head, "rows": rows})
    return blocks
