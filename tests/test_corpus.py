"""Manifests, corpus loaders (on tiny fake layouts and the shared corpus), lhotse round trip, bucketing sampler."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from soundtok.corpus.loaders import (
    default_corpus_root,
    load_esc50,
    load_fsdd,
    load_librispeech,
    load_ravdess,
    load_shared_corpus,
    parse_ravdess_name,
)
from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.corpus.sampler import BucketBatchSampler
from soundtok.errors import CorpusError, SoundtokError


def write_sine(path: Path, seconds: float = 0.1, sample_rate: int = 8000, freq: float = 440.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * freq * t)).astype("float32"), sample_rate)
    return path


def item(i: int, split: str = "train", dataset: str = "d", duration: float = 1.0) -> AudioItem:
    return AudioItem(f"{dataset}/{i:03d}", Path(f"/x/{i}.wav"), duration, {"n": str(i)}, split, dataset)


# ---------------------------------------------------------------------------------------------------------------
# manifest
def test_manifest_basics_and_filter() -> None:
    m = Manifest([item(0), item(1, "test"), item(2, dataset="e", duration=2.5)])
    assert len(m) == 3 and m.ids == ["d/000", "d/001", "e/002"]
    assert m.total_duration == pytest.approx(4.5)
    assert m.filter(split="test").ids == ["d/001"]
    assert m.filter(dataset="e").ids == ["e/002"]
    assert m.filter(split=["train", "test"], dataset="d").ids == ["d/000", "d/001"]
    assert m.filter(where=lambda i: i.duration > 2).ids == ["e/002"]
    assert isinstance(m[:2], Manifest) and len(m[:2]) == 2
    assert "d/000" in m and m.get("e/002").duration == 2.5
    assert m.splits == ["test", "train"] and m.datasets == ["d", "e"]
    assert (m[:1] + m[1:]) == m
    with pytest.raises(CorpusError, match="no item"):
        m.get("nope")


def test_item_validation() -> None:
    it = AudioItem("a/b", "x.wav", 1, {"k": 3}, "train", "a")  # type: ignore[arg-type, dict-item]
    assert it.path == Path("x.wav") and it.labels == {"k": "3"} and isinstance(it.duration, float)
    for bad in ["", "/abs", "a/../b", "a//b", " a", "a\\b", "./a"]:
        with pytest.raises(CorpusError):
            AudioItem(bad, Path("x.wav"), 1.0)
    for bad_duration in [-1.0, math.nan, "long"]:
        with pytest.raises(CorpusError, match="duration"):
            AudioItem("a", Path("x.wav"), bad_duration)  # type: ignore[arg-type]


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(CorpusError, match="duplicate item id 'd/001'"):
        Manifest([item(1), item(2), item(1)])
    assert issubclass(CorpusError, SoundtokError)


def test_jsonl_round_trip(tmp_path: Path) -> None:
    inside = write_sine(tmp_path / "audio" / "a.wav")
    m = Manifest(
        [
            AudioItem("s/a", inside, 0.1, {"transcript": "HÉLLO", "speaker": "1"}, "train", "s"),
            AudioItem("s/b", Path("/elsewhere/b.flac"), 2.0, {}, "", "s"),
        ]
    )
    path = m.to_jsonl(tmp_path / "m.jsonl")
    assert '"path": "audio/a.wav"' in path.read_text(encoding="utf-8")  # relative: the folder can move
    back = Manifest.from_jsonl(path)
    assert back.ids == m.ids and back[0].path == inside.resolve() and back[1].path == Path("/elsewhere/b.flac")
    assert back[0].labels == m[0].labels and back[1].split == ""
    with pytest.raises(SoundtokError, match="already exists"):
        m.to_jsonl(path)
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "path": "x", "duration": 1}\n{"id": "a", "pa', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad.jsonl:2"):
        Manifest.from_jsonl(tmp_path / "bad.jsonl")
    (tmp_path / "dup.jsonl").write_text('{"id": "a", "path": "x", "duration": 1}\n' * 2, encoding="utf-8")
    with pytest.raises(CorpusError, match="duplicate"):
        Manifest.from_jsonl(tmp_path / "dup.jsonl")


# ---------------------------------------------------------------------------------------------------------------
# loaders on fake standard layouts
def test_load_librispeech(tmp_path: Path) -> None:
    root = tmp_path / "LibriSpeech"
    root.mkdir()
    speakers = [";ID  |SEX| SUBSET |MINUTES| NAME", "1089 | M | test-clean | 25 | X", "121 | F | x | 1 | Y"]
    (root / "SPEAKERS.TXT").write_text("\n".join(speakers) + "\n")
    for subset, speaker, chapter, utts in [("test-clean", "1089", "134686", 2), ("dev-clean", "121", "121726", 1)]:
        folder = root / subset / speaker / chapter
        lines = []
        for u in range(utts):
            utt = f"{speaker}-{chapter}-{u:04d}"
            write_sine(folder / f"{utt}.flac", 0.2, 16000)
            lines.append(f"{utt} HELLO WORLD {u}")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    m = load_librispeech(root)
    assert m.ids == ["librispeech/1089-134686-0000", "librispeech/1089-134686-0001", "librispeech/121-121726-0000"]
    first = m.get("librispeech/1089-134686-0001")
    assert first.labels == {"speaker": "1089", "chapter": "134686", "transcript": "HELLO WORLD 1", "gender": "male"}
    assert first.split == "test-clean" and first.dataset == "librispeech" and first.duration == pytest.approx(0.2)
    assert load_librispeech(root, subsets=["dev-clean"]).ids == ["librispeech/121-121726-0000"]
    with pytest.raises(CorpusError, match="no such LibriSpeech subset"):
        load_librispeech(root, subsets=["train-other-500"])
    with pytest.raises(CorpusError, match="found no audio"):
        load_librispeech(tmp_path / "LibriSpeech" / "test-clean" / "1089")


def test_load_esc50(tmp_path: Path) -> None:
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i, (fold, cat) in enumerate([(1, "dog"), (5, "rain"), (5, "dog"), (2, "rooster")]):
        name = f"{fold}-{100 + i}-A-{i}.wav"
        rows.append(f"{name},{fold},{i},{cat},False,{100 + i},A")
        if i != 3:  # one listed clip is missing from audio/
            write_sine(tmp_path / "audio" / name, 0.3, 44100)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    m = load_esc50(tmp_path)
    assert len(m) == 3 and Counter(i.split for i in m) == {"test": 2, "train": 1}
    rain = m.get("esc50/5-101-A-1")
    assert rain.labels["category"] == "rain" and rain.labels["fold"] == "5" and rain.split == "test"
    assert Counter(i.split for i in load_esc50(tmp_path, test_fold=1)) == {"test": 1, "train": 2}
    with pytest.raises(CorpusError, match="test_fold=3"):
        load_esc50(tmp_path, test_fold=3)
    with pytest.raises(CorpusError, match="meta/esc50.csv"):
        load_esc50(tmp_path / "audio")


def test_load_fsdd(tmp_path: Path) -> None:
    for name in ["0_george_0", "0_george_5", "7_jackson_49", "9_theo_4"]:
        write_sine(tmp_path / "recordings" / f"{name}.wav", 0.25)
    write_sine(tmp_path / "recordings" / "README_not_a_digit.wav")
    m = load_fsdd(tmp_path)
    assert m.ids == ["fsdd/0_george_0", "fsdd/0_george_5", "fsdd/7_jackson_49", "fsdd/9_theo_4"]
    assert [i.split for i in m] == ["test", "train", "train", "test"]
    assert m.get("fsdd/7_jackson_49").labels == {"digit": "7", "speaker": "jackson", "take": "49"}
    assert load_fsdd(tmp_path / "recordings").ids == m.ids
    with pytest.raises(CorpusError, match="no such folder"):
        load_fsdd(tmp_path / "missing")


def test_load_ravdess(tmp_path: Path) -> None:
    for actor in range(1, 11):
        for emotion in ("01", "05"):
            write_sine(tmp_path / f"Actor_{actor:02d}" / f"03-01-{emotion}-01-02-01-{actor:02d}.wav", 0.1, 48000)
    write_sine(tmp_path / "Actor_01" / "01-01-01-01-01-01-01.wav")  # audio-video: not audio-only, skipped
    write_sine(tmp_path / "Actor_01" / "notes.wav")  # not a RAVDESS name, skipped
    m = load_ravdess(tmp_path)
    assert len(m) == 20
    test_actors = {i.labels["actor"] for i in m.filter(split="test")}
    assert test_actors == {"9", "10"}  # highest fifth; no actor in both splits
    assert not test_actors & {i.labels["actor"] for i in m.filter(split="train")}
    angry = m.get("ravdess/03-01-05-01-02-01-10")
    assert angry.labels["emotion"] == "angry" and angry.labels["gender"] == "female"
    assert angry.labels["statement"] == "Dogs are sitting by the door" and angry.labels["intensity"] == "normal"
    assert {i.labels["actor"] for i in load_ravdess(tmp_path, test_actors=[1]).filter(split="test")} == {"1"}
    with pytest.raises(CorpusError, match="not a RAVDESS file name"):
        parse_ravdess_name("03-01-09-01-01-01-01.wav")


def _shared_root() -> Path | None:
    try:
        return default_corpus_root()
    except CorpusError:
        return None


@pytest.mark.skipif(_shared_root() is None, reason="the shared corpus is not here")
def test_load_shared_corpus() -> None:
    m = load_shared_corpus(datasets=["fsdd", "librispeech", "clotho"])
    assert Counter(i.dataset for i in m) == {"fsdd": 3000, "librispeech": 448, "clotho": 7}
    utt = m.get("librispeech/1089-134686-0009")
    assert utt.labels["transcript"].startswith("AT MOST BY AN ALMS") and utt.labels["speaker"] == "1089"
    assert utt.labels["source_dataset"] == "librispeech_test-clean" and "path" not in utt.labels
    assert utt.path.is_file() and utt.split in ("train", "test") and utt.duration == pytest.approx(10.575)
    assert len(m.filter(dataset="fsdd", split="test")) == 300
    assert all(isinstance(v, str) for i in m for v in i.labels.values())
    with pytest.raises(CorpusError, match="no dataset"):
        load_shared_corpus(datasets=["timit"])


# ---------------------------------------------------------------------------------------------------------------
# lhotse
def test_lhotse_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("lhotse")
    from soundtok.corpus.lhotse_io import from_lhotse, to_lhotse

    one, two = write_sine(tmp_path / "1.wav", 0.5, 16000), write_sine(tmp_path / "2.flac", 0.25, 8000)
    m = Manifest(
        [
            AudioItem("a/1", one, 0.5, {"transcript": "HI", "speaker": "s"}, "train", "a"),
            AudioItem("a/2", two, 0.25, {"emotion": "sad"}, "test", "a"),
        ]
    )
    recordings, supervisions = to_lhotse(m)
    assert recordings["a/1"].sampling_rate == 16000 and recordings["a/2"].num_samples == 2000
    assert supervisions["a/1"].text == "HI" and supervisions["a/1"].speaker == "s"
    back = from_lhotse(recordings, supervisions)
    assert back == m
    assert from_lhotse(recordings).get("a/1").labels == {}  # recordings alone: no labels

    import lhotse

    extra = lhotse.SupervisionSegment(id="x", recording_id="a/1", start=0.0, duration=0.2)
    with pytest.raises(CorpusError, match="2 supervisions"):
        from_lhotse(recordings, lhotse.SupervisionSet.from_segments([*supervisions, extra]))


# ---------------------------------------------------------------------------------------------------------------
# sampler
def _durations(n: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(0.1, 8.0), 3) for _ in range(n)]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(0, 120),
    max_seconds=st.floats(0.5, 30.0),
    max_items=st.none() | st.integers(1, 10),
    buckets=st.integers(1, 8),
    seed=st.integers(0, 3),
)
def test_sampler_every_index_once_and_bounds(
    n: int, max_seconds: float, max_items: int | None, buckets: int, seed: int
) -> None:
    durations = _durations(n, seed)
    s = BucketBatchSampler(durations, max_seconds=max_seconds, max_items=max_items, num_buckets=buckets, seed=seed)
    for epoch in (0, 1):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(n))  # every index exactly once
        for b in batches:
            assert b and (len(b) == 1 or sum(durations[i] for i in b) <= max_seconds + 1e-9)
            assert max_items is None or len(b) <= max_items


def test_sampler_deterministic_and_epoch_dependent() -> None:
    durations = _durations(200)
    a = BucketBatchSampler(durations, max_seconds=20.0, seed=7)
    b = BucketBatchSampler(durations, max_seconds=20.0, seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(BucketBatchSampler(durations, max_seconds=20.0, seed=8)) != first
    # buckets keep similar lengths together
    spread = [max(durations[i] for i in batch) - min(durations[i] for i in batch) for batch in first if len(batch) > 1]
    assert np.mean(spread) < 1.5


def test_sampler_distributed_sharding() -> None:
    durations = _durations(101)
    kwargs: dict[str, Any] = dict(max_seconds=10.0, seed=3, num_buckets=5)
    plan = BucketBatchSampler(durations, **kwargs).plan()
    uneven = [list(BucketBatchSampler(durations, rank=r, world_size=3, even_batches=False, **kwargs)) for r in range(3)]
    assert sorted(i for shard in uneven for b in shard for i in b) == list(range(101))  # disjoint, complete
    assert [b for shard in uneven for b in shard] != [] and sum(map(len, uneven)) == len(plan)
    padded = [list(BucketBatchSampler(durations, rank=r, world_size=3, **kwargs)) for r in range(3)]
    assert len({len(p) for p in padded}) == 1 and {i for p in padded for b in p for i in b} == set(range(101))
    dropped = [list(BucketBatchSampler(durations, rank=r, world_size=3, drop_last=True, **kwargs)) for r in range(3)]
    assert len({len(p) for p in dropped}) == 1 and sum(map(len, dropped)) == len(plan) - len(plan) % 3


def test_sampler_validation() -> None:
    with pytest.raises(ValueError, match="max_seconds"):
        BucketBatchSampler([1.0])
    with pytest.raises(ValueError, match="rank"):
        BucketBatchSampler([1.0], max_items=1, rank=2, world_size=2)
    with pytest.raises(ValueError, match="durations"):
        BucketBatchSampler([float("nan")], max_items=1)
