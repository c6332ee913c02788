"""Trained audio-LLM run folders as the benchmarks read them, and which held-out instructions they score.

``benchmarks/audio_llm.py`` (generated answers) and ``benchmarks/audio_swap.py`` (teacher-forced swap test) score
the same selection of the same runs; both read it from here.

- :func:`stored_meta`: a run's model metadata (``RUN/model/soundtok_llm.json``), or None where it is not here.
- :func:`run_names`: each run's name in a report (its folder's name, or its path when two folders share a name).
- :func:`run_items`: the items the run was trained on, by id (its manifest over the shared corpus's).
- :func:`select`: per task, at most ``limit`` instructions of a split, round robin over the source datasets, in a
  fixed pseudo-random order within each (:func:`selection_order`).
- :func:`partner_of`: the clip whose audio replaces an instruction's own in a swap test or control.

>>> from soundtok.llm.instructions import Instruction
>>> ids = [f"{d}/{i}" for d in ("a", "b") for i in range(3)]
>>> data = [Instruction(f"{i}/asr", i, "asr", "test", "?", "x", True, ("x",)) for i in ids]
>>> [len(v) for v in select(data, 4, {}).values()], sorted({i.item_id[0] for i in select(data, 2, {})["asr"]})
([4], ['a', 'b'])
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.errors import SoundtokError
from soundtok.eval.asr import normalize_text
from soundtok.llm.instructions import TASKS, Instruction
from soundtok.llm.recipe import META_FILE, MODEL_DIR

log = logging.getLogger(__name__)


def stored_meta(run: Path) -> dict[str, Any] | None:
    """A run folder's model metadata, or None where the folder is not on this machine (scored elsewhere)."""
    path = run / MODEL_DIR / META_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def run_names(runs: Sequence[Path]) -> list[str]:
    """Each run's name in a report: its folder's name, or its path when two folders share a name.

    Raises ValueError naming the folders that hold no trained model (no ``model/soundtok_llm.json``).
    """
    missing = [str(r) for r in runs if not (r / MODEL_DIR / META_FILE).is_file()]
    if missing:
        raise ValueError(f"not trained run folders (no {MODEL_DIR}/{META_FILE}): {missing}")
    names = [r.name for r in runs]
    return [r.name if names.count(r.name) == 1 else str(r) for r in runs]


def run_items(meta: dict[str, Any], corpus: Manifest, root: Path | None = None) -> dict[str, AudioItem]:
    """Items of the run's manifest (``train_config.manifest``) by id, over the shared corpus's.

    A relative manifest path is read from the working directory, else from ``root`` (where training ran, e.g. the
    repository); an unreadable one is logged and the shared corpus alone is used.
    """
    items = {item.id: item for item in corpus}
    path = (meta.get("train_config") or {}).get("manifest")
    if path:
        p = Path(path)
        if not p.is_absolute() and not p.exists() and root is not None:
            p = root / path
        try:
            items.update({item.id: item for item in Manifest.from_jsonl(p)})
        except SoundtokError as exc:
            log.warning("cannot read the run's manifest %s (%s); using the shared corpus", p, exc)
    return items


def dataset_of(item_id: str, items: dict[str, AudioItem]) -> str:
    """The item's source dataset (its manifest entry's, else the id's first part)."""
    item = items.get(item_id)
    return item.dataset if item is not None and item.dataset else item_id.split("/", 1)[0]


def selection_order(ins: Instruction) -> str:
    """A fixed pseudo-random order (a hash of the id): ids are often sorted by class (FSDD's start with the digit,
    RAVDESS's name the emotion), so the first N by id would be a few classes only."""
    return hashlib.sha1(ins.id.encode()).hexdigest()


def select(
    instructions: Sequence[Instruction], limit: int | None, items: dict[str, AudioItem], split: str = "test"
) -> dict[str, list[Instruction]]:
    """The instructions of ``split`` per task (in :data:`~soundtok.llm.instructions.TASKS` order), at most
    ``limit`` each (all when None), round robin over datasets, each task's sorted by id."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1 (or None for all), got {limit}")
    by_task: dict[str, dict[str, deque[Instruction]]] = defaultdict(lambda: defaultdict(deque))
    for ins in sorted((i for i in instructions if i.split == split), key=selection_order):
        by_task[ins.task][dataset_of(ins.item_id, items)].append(ins)
    out: dict[str, list[Instruction]] = {}
    for task in TASKS:
        queues = [by_task[task][d] for d in sorted(by_task[task])] if task in by_task else []
        chosen: list[Instruction] = []
        while any(queues) and (limit is None or len(chosen) < limit):
            for q in queues:
                if q and (limit is None or len(chosen) < limit):
                    chosen.append(q.popleft())
        if chosen:
            out[task] = sorted(chosen, key=lambda i: i.id)
    return out


def answers_of(ins: Instruction) -> set[str]:
    return {normalize_text(r) for r in (*ins.references, ins.answer) if r}


def partner_of(
    ins: Instruction, pool: Sequence[Instruction], lengths: dict[str, int], datasets: dict[str, str]
) -> Instruction | None:
    """The partner of ``ins`` among ``pool``: of the instructions whose item differs and whose answers share none
    with ``ins``'s (after ``normalize_text``), those of the same source dataset if any, the one whose audio is
    nearest in length (``lengths`` by item id; ties: :func:`selection_order`); None when none qualifies. Nearest
    length keeps the number of audio tokens, which alone reveals duration, about the same."""
    mine = answers_of(ins)
    others = [p for p in pool if p.item_id != ins.item_id and not (answers_of(p) & mine)]
    same = [p for p in others if datasets[p.item_id] == datasets[ins.item_id]]
    candidates = same or others
    if not candidates:
        return None
    return min(candidates, key=lambda p: (abs(lengths[p.item_id] - lengths[ins.item_id]), selection_order(p)))
