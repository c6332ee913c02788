"""Manifests: the list of audio items a corpus is made of, each with an id, a file, a duration, labels and a split.

An item's ``id`` is unique within a manifest and doubles as a relative path (``"librispeech/1089-134686-0009"``
becomes ``<out>/librispeech/1089-134686-0009.stok``), so ids are checked to be safe relative paths.

>>> from soundtok.corpus.manifest import AudioItem, Manifest
>>> m = Manifest([AudioItem("fsdd/7_jackson_0", "a.wav", 0.5, {"digit": "7"}, "test", "fsdd"),
...               AudioItem("fsdd/7_jackson_9", "b.wav", 0.4, {"digit": "7"}, "train", "fsdd")])
>>> len(m.filter(split="train")), m.total_duration
(1, 0.9)
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from soundtok.errors import CorpusError
from soundtok.fileio import atomic_write, read_jsonl

#: JSONL keys of one manifest line
_KEYS = ("id", "path", "duration", "labels", "split", "dataset")


def check_item_id(item_id: str) -> str:
    """Return ``item_id`` if it is usable as a relative path (``a/b-c``), else raise :class:`CorpusError`."""
    if not isinstance(item_id, str) or not item_id:
        raise CorpusError(f"an item id must be a non-empty string, got {item_id!r}")
    if item_id != item_id.strip() or "\\" in item_id or "\x00" in item_id:
        raise CorpusError(f"item id {item_id!r} has surrounding whitespace, a backslash or a NUL; use a/b style ids")
    parts = item_id.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise CorpusError(
            f"item id {item_id!r} must be a relative path without empty, '.' or '..' parts "
            "(ids name output files, e.g. <out>/<id>.stok)"
        )
    return item_id


@dataclass(frozen=True)
class AudioItem:
    """One audio file of a corpus.

    ``labels`` maps label names to strings (``{"digit": "7", "speaker": "jackson"}``); ``split`` is e.g.
    ``"train"``/``"test"`` (``""`` when the corpus has none); ``dataset`` names the source corpus.
    """

    id: str
    path: Path
    duration: float  # seconds
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    split: str = ""
    dataset: str = ""

    def __post_init__(self) -> None:
        check_item_id(self.id)
        object.__setattr__(self, "path", Path(self.path))
        try:
            duration = float(self.duration)
        except (TypeError, ValueError):
            raise CorpusError(
                f"item {self.id!r}: duration must be a number of seconds, got {self.duration!r}"
            ) from None
        if not math.isfinite(duration) or duration < 0:
            raise CorpusError(f"item {self.id!r}: duration must be finite and >= 0 seconds, got {self.duration!r}")
        object.__setattr__(self, "duration", duration)
        if not isinstance(self.labels, Mapping):
            raise CorpusError(
                f"item {self.id!r}: labels must be a mapping of str to str, got {type(self.labels).__name__}"
            )
        object.__setattr__(self, "labels", {str(k): str(v) for k, v in self.labels.items()})
        object.__setattr__(self, "split", str(self.split))
        object.__setattr__(self, "dataset", str(self.dataset))

    def to_dict(self, relative_to: Path | None = None) -> dict[str, Any]:
        """A JSON-ready dict; ``path`` is made relative to ``relative_to`` when it lies beneath it."""
        path = self.path
        if relative_to is not None:
            try:
                path = self.path.resolve().relative_to(relative_to.resolve())
            except ValueError:
                path = self.path.resolve()
        return {
            "id": self.id,
            "path": path.as_posix(),
            "duration": self.duration,
            "labels": dict(self.labels),
            "split": self.split,
            "dataset": self.dataset,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], root: Path | None = None) -> AudioItem:
        """Inverse of :meth:`to_dict`; a relative ``path`` is resolved against ``root``."""
        missing = [k for k in ("id", "path", "duration") if k not in d]
        if missing:
            raise CorpusError(f"manifest entry {dict(d)!r} lacks {missing}; each needs at least id, path and duration")
        unknown = sorted(set(d) - set(_KEYS))
        if unknown:
            raise CorpusError(f"manifest entry {d['id']!r} has unknown keys {unknown}; known keys: {list(_KEYS)}")
        path = Path(d["path"])
        if root is not None and not path.is_absolute():
            path = root / path
        return cls(
            id=d["id"],
            path=path,
            duration=d["duration"],
            labels=d.get("labels") or {},
            split=d.get("split", ""),
            dataset=d.get("dataset", ""),
        )


class Manifest(Sequence[AudioItem]):
    """An ordered, immutable list of :class:`AudioItem` with unique ids."""

    def __init__(self, items: Iterable[AudioItem] = ()) -> None:
        self._items: tuple[AudioItem, ...] = tuple(items)
        self._index: dict[str, int] = {}
        for i, item in enumerate(self._items):
            if not isinstance(item, AudioItem):
                raise CorpusError(f"a Manifest holds AudioItem objects, got {type(item).__name__} at position {i}")
            if item.id in self._index:
                first = self._items[self._index[item.id]]
                raise CorpusError(
                    f"duplicate item id {item.id!r} ({first.path} and {item.path}); ids must be unique across "
                    "the manifest, prefix them with the dataset name (e.g. 'fsdd/...')"
                )
            self._index[item.id] = i

    # -- sequence protocol ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> AudioItem: ...

    @overload
    def __getitem__(self, index: slice) -> Manifest: ...

    def __getitem__(self, index: int | slice) -> AudioItem | Manifest:
        if isinstance(index, slice):
            return Manifest(self._items[index])
        return self._items[index]

    def __iter__(self) -> Iterator[AudioItem]:
        return iter(self._items)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return item in self._index
        return (
            isinstance(item, AudioItem) and self._index.get(item.id) is not None and self[self._index[item.id]] == item
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Manifest) and self._items == other._items

    def __hash__(self) -> int:
        return hash(tuple(i.id for i in self._items))

    def __add__(self, other: Manifest) -> Manifest:
        return Manifest((*self._items, *other._items))

    def __repr__(self) -> str:
        counts = ", ".join(f"{k or '-'}: {v}" for k, v in sorted(Counter(i.split for i in self._items).items()))
        return f"Manifest({len(self)} items, {self.total_duration / 3600:.2f} h; {counts})"

    # -- queries ------------------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return [i.id for i in self._items]

    @property
    def total_duration(self) -> float:
        """Seconds of audio, all items together."""
        return sum(i.duration for i in self._items)

    @property
    def splits(self) -> list[str]:
        return sorted({i.split for i in self._items})

    @property
    def datasets(self) -> list[str]:
        return sorted({i.dataset for i in self._items})

    def get(self, item_id: str) -> AudioItem:
        try:
            return self._items[self._index[item_id]]
        except KeyError:
            raise CorpusError(f"no item {item_id!r} in this manifest of {len(self)} items") from None

    def filter(
        self,
        split: str | Collection[str] | None = None,
        dataset: str | Collection[str] | None = None,
        where: Callable[[AudioItem], bool] | None = None,
    ) -> Manifest:
        """The items whose split (and dataset) is the one given, or one of those given, and for which
        ``where(item)`` is true."""

        def wanted(value: str, choice: str | Collection[str] | None) -> bool:
            return choice is None or (value == choice if isinstance(choice, str) else value in choice)

        return Manifest(
            i
            for i in self._items
            if wanted(i.split, split) and wanted(i.dataset, dataset) and (where is None or where(i))
        )

    def sorted_by_id(self) -> Manifest:
        return Manifest(sorted(self._items, key=lambda i: i.id))

    # -- files ------------------------------------------------------------------------------------------
    def to_jsonl(self, path: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write one JSON object per line, atomically. Paths under the file's folder are stored relative to it."""
        path = Path(path)
        root = path.parent
        text = "".join(json.dumps(i.to_dict(relative_to=root), ensure_ascii=False) + "\n" for i in self._items)
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), force=force)
        return path

    @classmethod
    def from_jsonl(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read a manifest written by :meth:`to_jsonl`; relative paths are resolved against the file's folder."""
        path = Path(path)
        items = []
        for n, entry in read_jsonl(path, CorpusError, "manifest entries"):
            if not isinstance(entry, dict):
                raise CorpusError(f"{path}:{n}: expected a JSON object per line, got {type(entry).__name__}")
            try:
                items.append(AudioItem.from_dict(entry, root=path.parent))
            except CorpusError as exc:
                raise CorpusError(f"{path}:{n}: {exc}") from None
        try:
            return cls(items)
        except CorpusError as exc:
            raise CorpusError(f"{path}: {exc}") from None
