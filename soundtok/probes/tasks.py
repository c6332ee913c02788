"""The six probe tasks over the shared corpus, and their fixed train/test splits.

A *probe task* names a dataset of the corpus, the label to predict and how: ``classify`` (one class per item,
scored by accuracy) or ``ctc`` (a character sequence per item, scored by CER and WER). Every task uses the
corpus' own ``train``/``test`` split except ``speaker``: the LibriSpeech split puts *different* speakers in test,
so speaker identification has its own ``per_class`` split (per speaker, that speaker's items sorted by id, every
4th one, ``index % 4 == 3``, in test and the rest in train), which holds every speaker on both sides. A test
class that never occurs in train is an error, except for ``events``: the corpus' ESC-50 subset has all 8
``washing_machine`` clips from one source recording, all in test, so those are dropped (with a warning).

    task         dataset      label       kind      split
    digits       fsdd         digit       classify  corpus (takes 0-4 in test)
    asr          librispeech  transcript  ctc       corpus (different speakers in test)
    speaker      librispeech  speaker     classify  per_class (every 4th item of each speaker in test)
    emotion      ravdess      emotion     classify  corpus (actors 17-20 in test: speaker-independent)
    events       esc50        category    classify  corpus (~30% per class in test, grouped by source recording)
                                                    less washing_machine (its 8 clips: one recording, all in test)
    instruments  instruments  label       classify  corpus (6 of 30 clips per class in test)

Targets: a class index into the sorted class names, or for ``ctc`` character ids ``1..len(ALPHABET)`` with 0
reserved for the CTC blank.

>>> from soundtok.corpus.manifest import AudioItem, Manifest
>>> m = Manifest([AudioItem(f"fsdd/{d}_x_{t}", "a.wav", 0.5, {"digit": str(d)}, "test" if t < 1 else "train", "fsdd")
...               for d in range(3) for t in range(3)])
>>> s = task_split("digits", m)
>>> len(s.train), len(s.test), s.classes, encode_target(s, s.test[2])
(6, 3, ('0', '1', '2'), 2)
>>> asr = TaskSplit(TASKS["asr"], train=[], test=[], classes=ALPHABET)
>>> encode_target(asr, AudioItem("librispeech/x", "x.flac", 1.0, {"transcript": "HI A"}))
[10, 11, 1, 3]
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from soundtok.corpus.loaders import load_shared_corpus
from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.errors import CorpusError

log = logging.getLogger(__name__)

#: characters a ``ctc`` probe writes (LibriSpeech transcripts are upper case); id ``i + 1`` is ``ALPHABET[i]``
ALPHABET: tuple[str, ...] = (" ", "'", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class ProbeTask:
    """What a probe predicts: ``label`` (a CSV column) of the items of ``dataset`` (a corpus folder)."""

    name: str
    dataset: str
    label: str
    kind: Literal["classify", "ctc"]
    metric: Literal["accuracy", "cer", "wer"]  # the headline metric (ctc probes report both cer and wer)
    description: str
    split_rule: Literal["corpus", "per_class"] = "corpus"  # see the module docstring
    unseen_test_classes: Literal["error", "drop"] = "error"  # test items of a class absent from train

    def __post_init__(self) -> None:
        wanted = {"classify": ("accuracy",), "ctc": ("cer", "wer")}
        if self.kind not in wanted or self.metric not in wanted[self.kind]:
            raise ValueError(
                f"task {self.name!r}: kind must be 'classify' (metric 'accuracy') or 'ctc' (metric 'cer' or "
                f"'wer'), got kind={self.kind!r}, metric={self.metric!r}"
            )
        if self.split_rule not in ("corpus", "per_class"):
            raise ValueError(f"task {self.name!r}: split_rule must be 'corpus' or 'per_class', got {self.split_rule!r}")
        if self.unseen_test_classes not in ("error", "drop"):
            raise ValueError(
                f"task {self.name!r}: unseen_test_classes must be 'error' or 'drop', got {self.unseen_test_classes!r}"
            )


TASKS: dict[str, ProbeTask] = {
    t.name: t
    for t in (
        ProbeTask("digits", "fsdd", "digit", "classify", "accuracy", "spoken digit 0-9 (FSDD)"),
        ProbeTask("asr", "librispeech", "transcript", "ctc", "cer", "character-level speech recognition"),
        ProbeTask(
            "speaker", "librispeech", "speaker", "classify", "accuracy", "speaker identity (closed set)", "per_class"
        ),
        ProbeTask("emotion", "ravdess", "emotion", "classify", "accuracy", "acted emotion, unseen actors"),
        ProbeTask(
            "events",
            "esc50",
            "category",
            "classify",
            "accuracy",
            "environmental sound event (ESC-50)",
            unseen_test_classes="drop",  # the corpus' washing_machine clips share one recording, all in test
        ),
        ProbeTask("instruments", "instruments", "label", "classify", "accuracy", "musical instrument"),
    )
}


@dataclass
class TaskSplit:
    """The train and test items of a task; ``classes`` are the sorted class names, or ``ALPHABET`` for ``ctc``."""

    task: ProbeTask
    train: list[AudioItem]
    test: list[AudioItem]
    classes: tuple[str, ...]


def _get_task(task: ProbeTask | str) -> ProbeTask:
    if isinstance(task, ProbeTask):
        return task
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"unknown probe task {task!r}; known tasks: {sorted(TASKS)}") from None


def _per_class_split(items: list[AudioItem], label: str) -> tuple[list[AudioItem], list[AudioItem]]:
    by_class: dict[str, list[AudioItem]] = defaultdict(list)
    for item in items:
        by_class[item.labels[label]].append(item)
    train: list[AudioItem] = []
    test: list[AudioItem] = []
    for members in by_class.values():
        for i, item in enumerate(sorted(members, key=lambda m: m.id)):
            (test if i % 4 == 3 else train).append(item)
    return sorted(train, key=lambda m: m.id), sorted(test, key=lambda m: m.id)


def task_split(task: ProbeTask | str, manifest: Manifest | None = None) -> TaskSplit:
    """The fixed train/test split of ``task`` (a :class:`ProbeTask` or a name in :data:`TASKS`).

    ``manifest`` defaults to the task's dataset of the shared corpus. Raises :class:`CorpusError` when the
    dataset is missing, an item lacks the label, a split is empty, a test class never occurs in train (unless the
    task drops such items, with a warning), or a transcript has a character outside :data:`ALPHABET`.
    """
    task = _get_task(task)
    if manifest is None:
        manifest = load_shared_corpus(datasets=[task.dataset])
    items = list(manifest.filter(dataset=task.dataset))
    if not items:
        raise CorpusError(
            f"task {task.name!r} needs dataset {task.dataset!r}, but the manifest holds only {manifest.datasets}; "
            f"load it with load_shared_corpus(datasets=[{task.dataset!r}])"
        )
    unlabelled = [i.id for i in items if not i.labels.get(task.label)]
    if unlabelled:
        raise CorpusError(
            f"task {task.name!r}: {len(unlabelled)} item(s) of {task.dataset!r} have no {task.label!r} label, "
            f"e.g. {unlabelled[0]!r}"
        )
    if task.split_rule == "per_class":
        train, test = _per_class_split(items, task.label)
    else:
        train = [i for i in items if i.split == "train"]
        test = [i for i in items if i.split == "test"]
    if not train or not test:
        raise CorpusError(
            f"task {task.name!r}: dataset {task.dataset!r} needs items in both 'train' and 'test' "
            f"(found {len(train)} and {len(test)}; its splits are {sorted({i.split for i in items})})"
        )
    if task.kind == "ctc":
        for item in items:
            unknown = sorted(set(item.labels[task.label]) - set(ALPHABET))
            if unknown:
                raise CorpusError(
                    f"task {task.name!r}: item {item.id!r} has characters {unknown} outside the probe alphabet "
                    "(space, apostrophe, A-Z); upper-case and strip its transcript"
                )
        return TaskSplit(task, train, test, ALPHABET)
    classes = tuple(sorted({i.labels[task.label] for i in train}))
    unseen = sorted({i.labels[task.label] for i in test} - set(classes))
    if unseen and task.unseen_test_classes == "error":
        raise CorpusError(
            f"task {task.name!r}: test classes {unseen} never occur in train, so no probe can predict them"
        )
    if unseen:
        kept = [i for i in test if i.labels[task.label] in classes]
        log.warning(
            "task %r: dropped %d test item(s) of classes %s that never occur in train",
            task.name, len(test) - len(kept), unseen,
        )  # fmt: skip
        if not kept:
            raise CorpusError(f"task {task.name!r}: no test item has a class that occurs in train")
        test = kept
    return TaskSplit(task, train, test, classes)


def encode_target(split: TaskSplit, item: AudioItem) -> int | list[int]:
    """``item``'s target: its class index in ``split.classes``, or for ``ctc`` its character ids (1-based)."""
    label = item.labels.get(split.task.label)
    if label is None:
        raise CorpusError(f"item {item.id!r} has no {split.task.label!r} label (task {split.task.name!r})")
    if split.task.kind == "ctc":
        ids = {ch: i + 1 for i, ch in enumerate(split.classes)}  # 0 is the CTC blank
        unknown = sorted(set(label) - set(ids))
        if unknown:
            raise CorpusError(f"item {item.id!r}: characters {unknown} are not in the probe alphabet")
        return [ids[ch] for ch in label]
    try:
        return split.classes.index(label)
    except ValueError:
        raise CorpusError(
            f"item {item.id!r}: class {label!r} is not one of the {len(split.classes)} training classes"
        ) from None
