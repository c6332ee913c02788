"""The Parquet token store: atomic shards, identity checks, streaming reads, interoperability, corruption."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import soundtok
from soundtok.errors import TokenFileError, TokenizerMismatchError
from soundtok.store import SCHEMA, TokenStore, TokenStoreWriter, shard_rank
from soundtok.testing import noise_batch
from soundtok.tokenizers.base import AudioTokenizer

NAME = "mulaw-8bit-8k"


@pytest.fixture(scope="module")
def tok() -> AudioTokenizer:
    return soundtok.load(NAME)


def encode(tok: AudioTokenizer, lengths: list[int], seed: int = 0) -> soundtok.Tokens:
    wav, lens = noise_batch(lengths, seed=seed)
    return tok.encode(wav, tok.sample_rate, lens)


def fill(folder: Path, tok: AudioTokenizer, n: int, *, rank: int = 0, shard_items: int = 4, prefix: str = "x") -> dict:
    """Write n items; returns id -> Tokens."""
    lengths = [100 + 37 * i for i in range(n)]
    tokens = encode(tok, lengths, seed=rank).items()
    with TokenStoreWriter.for_tokenizer(folder, tok, rank=rank, shard_items=shard_items) as w:
        for i, t in enumerate(tokens):
            split = "test" if i % 3 == 0 else "train"
            w.add(f"{prefix}/{i:03d}", t, {"n": str(i), "word": "é"}, split=split, dataset=prefix)
    return {f"{prefix}/{i:03d}": t for i, t in enumerate(tokens)}


def test_write_read_round_trip(tmp_path: Path, tok: AudioTokenizer) -> None:
    written = fill(tmp_path, tok, 10)
    store = TokenStore(tmp_path)
    assert len(store.shards()) == 3 and all(shard_rank(s) == 0 for s in store.shards())  # 4 + 4 + 2
    assert sorted(store.ids()) == sorted(written) and len(store) == 10 and "x/003" in store
    for item_id, t in written.items():
        got = store.get(item_id)
        assert got.equal(t) and got.tokenizer == tok.identity
    assert tok.decode(store.get("x/005")).shape == (1, 1, 100 + 37 * 5)
    meta = json.loads((tmp_path / "store.json").read_text())
    assert meta["tokenizer"] == tok.identity.to_dict() and meta["sample_rate"] == 8000
    assert meta["levels"] == [[1, 256]] and meta["frame_rates"] == [8000.0] and meta["version"] == 1
    assert "soundtok_version" in meta


def test_iter_rows_streams_filters_and_shuffles(tmp_path: Path, tok: AudioTokenizer) -> None:
    written = fill(tmp_path, tok, 10)
    store = TokenStore(tmp_path)
    rows = list(store.iter_rows(batch_size=3))
    assert sorted(r["id"] for r in rows) == sorted(written)
    assert all(r["labels"] == {"n": str(int(r["id"][-3:])), "word": "é"} for r in rows)
    for row in rows:
        assert store.to_tokens(row).equal(written[row["id"]])
    test_ids = [r["id"] for r in store.iter_rows(split="test")]
    assert sorted(test_ids) == ["x/000", "x/003", "x/006", "x/009"]
    only = list(store.iter_rows(split="train", columns=["id", "length"]))
    assert set(only[0]) == {"id", "length"} and len(only) == 6
    orders = {tuple(r["id"] for r in store.iter_rows(shuffle_shards=True, seed=s)) for s in range(6)}
    assert len(orders) > 1  # seeds visit shards in different orders
    assert list(store.iter_rows(shuffle_shards=True, seed=1)) == list(store.iter_rows(shuffle_shards=True, seed=1))
    parts = [[r["id"] for r in store.iter_rows(shuffle_shards=True, seed=2, part=p, num_parts=2)] for p in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(written) and parts[0] and parts[1]


def test_shards_read_directly_by_pyarrow_and_datasets(tmp_path: Path, tok: AudioTokenizer) -> None:
    written = fill(tmp_path, tok, 6)
    table = pq.read_table(tmp_path / TokenStore(tmp_path).shards()[0].name)
    assert table.schema.equals(SCHEMA)
    assert table.schema.field("codes").type == pa.list_(pa.list_(pa.int32()))
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "shard-*.parquet"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert len(ds) == 6 and sorted(ds["id"]) == sorted(written)
    row = ds[0]
    assert len(row["codes"][0]) == row["length"] == int(written[row["id"]].lengths[0])
    assert TokenStore(tmp_path).to_tokens(row).equal(written[row["id"]])
    assert json.loads(row["labels"])["word"] == "é"


def test_refuses_another_tokenizer(tmp_path: Path, tok: AudioTokenizer) -> None:
    fill(tmp_path, tok, 2)
    other = soundtok.load("mulaw-4bit-8k")
    with pytest.raises(TokenizerMismatchError) as info:
        TokenStoreWriter.for_tokenizer(tmp_path, other)
    assert tok.identity.fingerprint in str(info.value) and other.identity.fingerprint in str(info.value)
    w = TokenStoreWriter.for_tokenizer(tmp_path / "new", tok)
    with pytest.raises(TokenizerMismatchError):
        w.add("a", other.encode(torch.zeros(1, 1, 80), 8000))
    with pytest.raises(ValueError, match="one item"):
        w.add("a", encode(tok, [10, 20]))


def test_leftover_temp_files_are_ignored(tmp_path: Path, tok: AudioTokenizer) -> None:
    fill(tmp_path, tok, 3)
    (tmp_path / ".shard-r0003-deadbeef.parquet.tmp").write_bytes(b"PAR1 half a shard")
    (tmp_path / "errors-rank0.jsonl").write_text("{}\n")
    store = TokenStore(tmp_path)
    assert len(store) == 3 and len(list(store.iter_rows())) == 3


def test_concurrent_writers_never_collide(tmp_path: Path, tok: AudioTokenizer) -> None:
    threads = [
        threading.Thread(target=fill, args=(tmp_path, tok, 9), kwargs={"rank": r, "shard_items": 2, "prefix": f"r{r}"})
        for r in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store = TokenStore(tmp_path)
    assert len(store) == 36 and len(store.shards()) == 4 * 5
    assert {shard_rank(s) for s in store.shards()} == {0, 1, 2, 3}
    assert not list(tmp_path.glob(".*tmp"))


def test_corrupt_shard_names_its_path(tmp_path: Path, tok: AudioTokenizer) -> None:
    fill(tmp_path, tok, 8)
    shard = TokenStore(tmp_path).shards()[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # truncated, e.g. copied by hand and interrupted
    store = TokenStore(tmp_path)
    with pytest.raises(TokenFileError, match=str(shard)):
        store.ids()
    with pytest.raises(TokenFileError, match=str(shard)):
        list(store.iter_rows())
    shard.write_bytes(b"not parquet at all")
    with pytest.raises(TokenFileError, match=str(shard)):
        TokenStore(tmp_path).ids()


def test_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="no store.json"):
        TokenStore(tmp_path)
    (tmp_path / "store.json").write_text('{"format": "soundtok-token-store", "version": 99}')
    with pytest.raises(TokenFileError, match="version 99"):
        TokenStore(tmp_path)
    with pytest.raises(TokenFileError, match="no such token store folder"):
        TokenStore(tmp_path / "missing")


def test_an_item_stored_twice_is_read_once(tmp_path: Path, tok: AudioTokenizer) -> None:
    fill(tmp_path, tok, 3, rank=1)
    again = fill(tmp_path, tok, 2, rank=0)  # the first two ids again (other codes), in a shard that sorts first
    store = TokenStore(tmp_path)
    assert store.get("x/000").equal(again["x/000"])
    assert sorted(store.ids()) == sorted(set(store.ids())) and len(store) == 3
    rows = list(store.iter_rows())
    assert sorted(r["id"] for r in rows) == sorted(store.ids())
    parts = [r["id"] for part in range(2) for r in store.iter_rows(columns=["id"], part=part, num_parts=2)]
    assert sorted(parts) == sorted(store.ids())  # once over all parts
    lengths_only = list(store.iter_rows(columns=["length"]))  # de-duplicated by the id it did not ask for
    assert len(lengths_only) == 3 and all(set(r) == {"length"} for r in lengths_only)
