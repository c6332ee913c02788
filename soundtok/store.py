"""The corpus token store: a folder of Parquet shards holding the tokens of many audio items.

Layout::

    store/
      store.json                       who made the tokens: tokenizer identity, sample rate, levels, version
      shard-r0000-<uuid>.parquet       one row per item (columns below); written atomically, never appended to
      shard-r0001-<uuid>.parquet       ... one writer per process, so concurrent writers never collide

Shard columns: ``id`` string, ``tokenizer`` string (its name), ``fingerprint`` string, ``dataset`` string,
``split`` string, ``length`` int64 (audio samples at the tokenizer's rate), ``codes`` list<list<int32>>
(level -> that item's valid frames), ``labels`` string (a JSON object). A shard only ever appears whole
(written to a hidden temporary name, fsynced, then renamed), so every ``shard-*.parquet`` is complete and
readers ignore leftover temporary files. Shards read directly with ``pyarrow.parquet`` or
``datasets.load_dataset("parquet", data_files="store/shard-*.parquet")``.

>>> import tempfile, torch, soundtok
>>> from soundtok.store import TokenStore, TokenStoreWriter
>>> tok = soundtok.load("mulaw-8bit-8k")
>>> folder = tempfile.mkdtemp()
>>> with TokenStoreWriter.for_tokenizer(folder, tok) as w:
...     w.add("a/1", tok.encode(torch.zeros(1, 1, 800), 8000), {"digit": "1"}, split="train", dataset="a")
>>> store = TokenStore(folder)
>>> store.ids(), store.get("a/1").lengths.tolist()
(['a/1'], [800])
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from soundtok.errors import TokenFileError, TokenizerMismatchError
from soundtok.fileio import atomic_write, fsync_path
from soundtok.types import LevelSpec, TokenizerId, Tokens, frames_for

if TYPE_CHECKING:
    from soundtok.tokenizers.base import AudioTokenizer

log = logging.getLogger(__name__)

FORMAT = "soundtok-token-store"
STORE_VERSION = 1
META_FILE = "store.json"
SHARD_GLOB = "shard-*.parquet"
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("tokenizer", pa.string()),
        ("fingerprint", pa.string()),
        ("dataset", pa.string()),
        ("split", pa.string()),
        ("length", pa.int64()),
        ("codes", pa.list_(pa.list_(pa.int32()))),
        ("labels", pa.string()),
    ]
)


class StoreInfo:
    """The content of ``store.json``."""

    def __init__(self, tokenizer: TokenizerId, sample_rate: int, levels: Sequence[LevelSpec]) -> None:
        if sample_rate <= 0 or not levels:
            raise ValueError(f"a token store needs a positive sample rate and levels, got {sample_rate}, {levels}")
        self.tokenizer = tokenizer
        self.sample_rate = int(sample_rate)
        self.levels = tuple(levels)

    @property
    def frame_rates(self) -> list[float]:
        return [self.sample_rate / s.hop_length for s in self.levels]

    def to_dict(self) -> dict[str, Any]:
        from soundtok import __version__

        return {
            "format": FORMAT,
            "version": STORE_VERSION,
            "soundtok_version": __version__,
            "tokenizer": self.tokenizer.to_dict(),
            "sample_rate": self.sample_rate,
            "levels": [[s.hop_length, s.codebook_size] for s in self.levels],
            "frame_rates": self.frame_rates,
        }

    @classmethod
    def read(cls, folder: Path) -> StoreInfo:
        path = folder / META_FILE
        if not path.is_file():
            raise TokenFileError(f"{folder}: not a soundtok token store (no {META_FILE})")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            if d.get("format") != FORMAT:
                raise TokenFileError(f"{path}: not a soundtok token store description (format {d.get('format')!r})")
            if int(d["version"]) != STORE_VERSION:
                raise TokenFileError(
                    f"{path}: token store version {d['version']}; this soundtok reads version {STORE_VERSION} "
                    "(upgrade soundtok)"
                )
            levels = [LevelSpec(hop_length=int(h), codebook_size=int(n)) for h, n in d["levels"]]
            return cls(TokenizerId.from_dict(d["tokenizer"]), int(d["sample_rate"]), levels)
        except TokenFileError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise TokenFileError(f"{path}: malformed ({type(exc).__name__}: {exc})") from None


def _shard_error(path: Path, exc: BaseException) -> TokenFileError:
    return TokenFileError(
        f"{path}: cannot read this token store shard ({type(exc).__name__}: {exc}); it is corrupt or not a "
        "soundtok shard: delete it (its items will be tokenized again on resume)"
    )


def _check_schema(path: Path, schema: pa.Schema, columns: Sequence[str] | None = None) -> None:
    names = set(schema.names)
    need = SCHEMA.names if columns is None else list(columns)
    missing = [c for c in need if c not in names]
    if missing:
        raise TokenFileError(f"{path}: not a soundtok token store shard, missing column(s) {missing}")


class TokenStoreWriter:
    """Buffers rows and writes them as whole shards; one writer per process (``rank`` goes in shard names).

    Opening creates ``store.json`` or, if the folder already has one, checks that it was made by the same
    tokenizer (:class:`TokenizerMismatchError` otherwise). ``shard_items`` (optional) flushes automatically.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        tokenizer: TokenizerId,
        sample_rate: int,
        levels: Sequence[LevelSpec],
        *,
        rank: int = 0,
        shard_items: int | None = None,
    ) -> None:
        if shard_items is not None and shard_items < 1:
            raise ValueError(f"shard_items must be at least 1, got {shard_items}")
        self.folder = Path(folder)
        self.info = StoreInfo(tokenizer, sample_rate, levels)
        self.rank = rank
        self.shard_items = shard_items
        self.shards: list[Path] = []
        self._rows: list[dict[str, Any]] = []
        self.folder.mkdir(parents=True, exist_ok=True)
        self._create_or_check_meta()

    @classmethod
    def for_tokenizer(
        cls, folder: str | os.PathLike[str], tokenizer: AudioTokenizer, *, rank: int = 0, shard_items: int | None = None
    ) -> TokenStoreWriter:
        return cls(
            folder, tokenizer.identity, tokenizer.sample_rate, tokenizer.levels, rank=rank, shard_items=shard_items
        )

    def _create_or_check_meta(self) -> None:
        path = self.folder / META_FILE
        if not path.exists():
            data = json.dumps(self.info.to_dict(), indent=2).encode()
            tmp = self.folder / f".{META_FILE}.{uuid.uuid4().hex}.tmp"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)  # create-if-absent, atomically: concurrent writers agree on one file
                except FileExistsError:
                    pass
            finally:
                tmp.unlink(missing_ok=True)
            fsync_path(self.folder)
        have = StoreInfo.read(self.folder)
        if (
            have.tokenizer.fingerprint != self.info.tokenizer.fingerprint
            or have.tokenizer.family != self.info.tokenizer.family
        ):
            raise TokenizerMismatchError(
                f"{self.folder} holds tokens made by {have.tokenizer}, but this writer's tokenizer is "
                f"{self.info.tokenizer}; write to another folder (or start this one afresh with force)"
            )
        if have.sample_rate != self.info.sample_rate or have.levels != self.info.levels:
            raise TokenizerMismatchError(
                f"{self.folder}: store.json describes {have.sample_rate} Hz with levels {have.levels}, this writer "
                f"{self.info.sample_rate} Hz with levels {self.info.levels}"
            )

    def __len__(self) -> int:
        """Rows buffered and not yet flushed."""
        return len(self._rows)

    def add(
        self,
        item_id: str,
        tokens: Tokens,
        labels: Mapping[str, str] | None = None,
        split: str = "",
        dataset: str = "",
    ) -> Path | None:
        """Buffer one item (``tokens`` of batch size 1); returns the shard path if this triggered a flush."""
        if tokens.batch_size != 1:
            raise ValueError(f"add() takes one item; got a batch of {tokens.batch_size} (use tokens.item(i))")
        self.info.tokenizer.check_same(tokens.tokenizer)
        codes = [
            tokens.codes[level][0, : int(tokens.frame_lengths(level)[0])].to(torch.int32).tolist()
            for level in range(tokens.num_levels)
        ]
        self._rows.append(
            {
                "id": item_id,
                "tokenizer": tokens.tokenizer.name,
                "fingerprint": tokens.tokenizer.fingerprint,
                "dataset": dataset,
                "split": split,
                "length": int(tokens.lengths[0]),
                "codes": codes,
                "labels": json.dumps(dict(labels or {}), ensure_ascii=False, sort_keys=True),
            }
        )
        if self.shard_items is not None and len(self._rows) >= self.shard_items:
            return self.flush()
        return None

    def flush(self) -> Path | None:
        """Write the buffered rows as one new shard, atomically; returns its path (None if nothing buffered)."""
        if not self._rows:
            return None
        table = pa.Table.from_pylist(self._rows, schema=SCHEMA)
        name = f"shard-r{self.rank:04d}-{uuid.uuid4().hex}.parquet"
        final = self.folder / name
        atomic_write(final, lambda tmp: pq.write_table(table, tmp))
        log.debug("wrote %s (%d rows)", final, len(self._rows))
        self._rows = []
        self.shards.append(final)
        return final

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> TokenStoreWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        # rows of a failed run are dropped: a resumed run tokenizes them again
        if exc_type is None:
            self.close()


class TokenStore:
    """Read a token store folder: look items up by id, or stream rows shard by shard with bounded memory."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise TokenFileError(f"{self.folder}: no such token store folder")
        self.info = StoreInfo.read(self.folder)
        self._index: dict[str, Path] | None = None
        self._indexed: list[Path] = []

    @property
    def tokenizer(self) -> TokenizerId:
        return self.info.tokenizer

    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def levels(self) -> tuple[LevelSpec, ...]:
        return self.info.levels

    def shards(self) -> list[Path]:
        """Complete shards, in name order (temporary files of unfinished writes are ignored)."""
        return sorted(p for p in self.folder.glob(SHARD_GLOB) if p.is_file())

    def shard_ids(self, shard: Path) -> list[str]:
        """The ids in one shard (reads only its ``id`` column)."""
        try:
            pf = pq.ParquetFile(shard)
            _check_schema(shard, pf.schema_arrow, ["id"])
            return [str(x) for x in pf.read(columns=["id"]).column("id").to_pylist()]
        except TokenFileError:
            raise
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise _shard_error(shard, exc) from None

    def _build_index(self, *, fresh: bool = False) -> dict[str, Path]:
        """Item id -> the first shard (in name order) holding it. An item stored twice (two runs that raced before
        runs locked their folder, or a shard copied in by hand) is read once, from there. Built once; ``fresh``
        rebuilds it if shards were added since."""
        if self._index is None or (fresh and self.shards() != self._indexed):
            self._indexed = self.shards()
            index: dict[str, Path] = {}
            repeats = 0
            for shard in self._indexed:
                for item_id in self.shard_ids(shard):
                    repeats += item_id in index
                    index.setdefault(item_id, shard)
            if repeats:
                log.warning("%s: %d rows repeat an item stored earlier; each item is read once", self.folder, repeats)
            self._index = index
        return self._index

    def ids(self) -> list[str]:
        return list(self._build_index())

    def __len__(self) -> int:
        return len(self._build_index())

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._build_index()

    def get_row(self, item_id: str) -> dict[str, Any]:
        index = self._build_index()
        if item_id not in index:
            raise KeyError(f"no item {item_id!r} in the token store {self.folder} ({len(index)} items)")
        shard = index[item_id]
        try:
            table = pq.read_table(shard, filters=[("id", "==", item_id)])
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise _shard_error(shard, exc) from None
        _check_schema(shard, table.schema)
        return self._parse(table.slice(0, 1).to_pylist()[0], shard)

    def get(self, item_id: str) -> Tokens:
        """The tokens of one item (batch size 1)."""
        return self.to_tokens(self.get_row(item_id))

    def _parse(self, row: dict[str, Any], shard: Path) -> dict[str, Any]:
        try:
            labels = json.loads(row["labels"]) if row.get("labels") else {}
            if not isinstance(labels, dict):
                raise ValueError("labels is not a JSON object")
        except (json.JSONDecodeError, ValueError) as exc:
            raise TokenFileError(f"{shard}: item {row.get('id')!r} has malformed labels ({exc})") from None
        row["labels"] = labels
        return row

    def iter_rows(
        self,
        split: str | None = None,
        *,
        shuffle_shards: bool = False,
        seed: int = 0,
        batch_size: int = 256,
        columns: Sequence[str] | None = None,
        part: int = 0,
        num_parts: int = 1,
    ) -> Iterator[dict[str, Any]]:
        """Rows as dicts (``labels`` parsed to a dict), shard after shard, ``batch_size`` rows in memory at a time.

        Each item comes once (from the first shard holding it: :meth:`_build_index`). ``shuffle_shards`` visits
        shards in a seeded random order (rows within a shard keep their order; shuffle them with a buffer downstream
        if needed). ``columns`` reads only those columns. ``part`` of ``num_parts``
        reads every ``num_parts``-th shard of that order, so data-loader workers or processes share the shards.
        """
        if not 0 <= part < num_parts:
            raise ValueError(f"need 0 <= part < num_parts, got part={part}, num_parts={num_parts}")
        shards = self.shards()
        if shuffle_shards:
            random.Random(seed).shuffle(shards)
        shards = shards[part::num_parts]
        first = self._build_index(fresh=True)  # each item is yielded from the first shard holding it, once
        extra = ["id", *(["split"] if split is not None else [])]
        read = None if columns is None else list(dict.fromkeys([*columns, *extra]))
        for shard in shards:
            seen: set[str] = set()
            try:
                pf = pq.ParquetFile(shard)
                _check_schema(shard, pf.schema_arrow, read)
                for batch in pf.iter_batches(batch_size=batch_size, columns=read):
                    for row in batch.to_pylist():
                        if first.get(row["id"]) != shard or row["id"] in seen:
                            continue
                        seen.add(row["id"])
                        if split is not None and row["split"] != split:
                            continue
                        for name in extra:
                            if columns is not None and name not in columns:
                                row.pop(name, None)
                        yield self._parse(row, shard) if "labels" in row else row
            except TokenFileError:
                raise
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise _shard_error(shard, exc) from None

    def to_tokens(self, row: Mapping[str, Any]) -> Tokens:
        """One row (from :meth:`iter_rows` or a direct Parquet read) as a one-item :class:`Tokens`."""
        if row["fingerprint"] != self.tokenizer.fingerprint:
            raise TokenizerMismatchError(
                f"item {row.get('id')!r} was made by tokenizer fingerprint {row['fingerprint']}, but the store "
                f"{self.folder} is for {self.tokenizer}"
            )
        length = int(row["length"])
        if len(row["codes"]) != len(self.levels):
            raise TokenFileError(
                f"item {row.get('id')!r}: {len(row['codes'])} code levels, the store has {len(self.levels)}"
            )
        codes = []
        for level, (values, spec) in enumerate(zip(row["codes"], self.levels, strict=True)):
            need = int(frames_for(length, spec.hop_length))
            if len(values) != need:
                raise TokenFileError(
                    f"item {row.get('id')!r}, level {level}: {len(values)} frames, but {length} samples need {need}"
                )
            codes.append(torch.tensor(values, dtype=torch.long).reshape(1, need))
        return Tokens(tuple(codes), torch.tensor([length]), self.sample_rate, self.levels, self.tokenizer)

    def __repr__(self) -> str:
        return f"TokenStore({str(self.folder)!r}, tokenizer={self.tokenizer}, shards={len(self.shards())})"


_SHARD_RANK = re.compile(r"^shard-r(\d+)-")


def shard_rank(path: Path) -> int | None:
    """The writer rank encoded in a shard's name, or None."""
    m = _SHARD_RANK.match(Path(path).name)
    return int(m.group(1)) if m else None
