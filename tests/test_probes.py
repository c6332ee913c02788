"""Probes: task splits, the head's input alignment and padding invariance, and that training learns (and only
learns) what the inputs carry. Everything runs on tiny synthetic data except one test of the shared corpus."""

from __future__ import annotations

import math
import random
from typing import Literal

import pytest
import torch

from soundtok.corpus.loaders import default_corpus_root, load_shared_corpus
from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.errors import CorpusError
from soundtok.probes import (
    ALPHABET,
    TASKS,
    InputSpec,
    ProbeConfig,
    ProbeHead,
    ProbeResult,
    ProbeTask,
    TaskSplit,
    TokenEmbedding,
    collate,
    ctc_greedy_decode,
    encode_target,
    summarise,
    task_split,
    train_probe,
)
from soundtok.probes.train import _random_crop

TINY = ProbeConfig(hidden=16, lstm_layers=1, dropout=0.0, batch_size=8, lr=3e-3)


def _item(item_id: str, split: str = "", dataset: str = "toy", **labels: str) -> AudioItem:
    return AudioItem(item_id, "x.wav", 1.0, labels, split, dataset)


# ---------------------------------------------------------------------------------------------------------------
# tasks
def test_speaker_split_holds_every_speaker_on_both_sides() -> None:
    items = [_item(f"librispeech/{s}-{u:02d}", "train", "librispeech", speaker=s) for s in "abc" for u in range(9)]
    split = task_split("speaker", Manifest(random.Random(0).sample(items, len(items))))
    train_ids, test_ids = {i.id for i in split.train}, {i.id for i in split.test}
    assert not train_ids & test_ids and len(train_ids | test_ids) == len(items)
    assert {i.labels["speaker"] for i in split.test} == {i.labels["speaker"] for i in split.train} == set("abc")
    assert sorted(test_ids) == [f"librispeech/{s}-{u:02d}" for s in "abc" for u in (3, 7)]  # index % 4 == 3
    assert split.classes == ("a", "b", "c") and encode_target(split, split.test[-1]) == 2


def test_task_split_errors_say_what_is_wrong() -> None:
    fsdd = Manifest([_item("fsdd/a", "train", "fsdd", digit="1"), _item("fsdd/b", "test", "fsdd", digit="2")])
    with pytest.raises(CorpusError, match="'ravdess'"):
        task_split("emotion", fsdd)
    with pytest.raises(CorpusError, match=r"test classes \['2'\] never occur in train"):
        task_split("digits", fsdd)
    lenient = ProbeTask("d", "fsdd", "digit", "classify", "accuracy", "digits", unseen_test_classes="drop")
    with pytest.raises(CorpusError, match="no test item has a class that occurs in train"):
        task_split(lenient, fsdd)
    bad = Manifest([_item(f"librispeech/{s}", s, "librispeech", transcript="HI 2") for s in ("train", "test")])
    with pytest.raises(CorpusError, match=r"\['2'\] outside the probe alphabet"):
        task_split("asr", bad)
    with pytest.raises(ValueError, match="known tasks"):
        task_split("nope", fsdd)


def test_ctc_targets_are_one_based_character_ids() -> None:
    split = TaskSplit(TASKS["asr"], [], [], ALPHABET)
    assert encode_target(split, _item("a", transcript="AB' Z")) == [3, 4, 2, 1, 28]


def test_shared_corpus_splits() -> None:
    try:
        default_corpus_root()
    except CorpusError:
        pytest.skip("the shared corpus (../shared/corpus) is not here")
    manifest = load_shared_corpus(datasets=sorted({t.dataset for t in TASKS.values()}))
    splits = {name: task_split(name, manifest) for name in TASKS}
    assert (len(splits["digits"].train), len(splits["digits"].test)) == (2700, 300)
    assert (len(splits["asr"].train), len(splits["asr"].test)) == (364, 84)
    speaker = splits["speaker"]
    assert not {i.id for i in speaker.train} & {i.id for i in speaker.test}
    assert {i.labels["speaker"] for i in speaker.test} == {i.labels["speaker"] for i in speaker.train}
    assert len(speaker.classes) == 32 and len(speaker.train) + len(speaker.test) == 448
    assert {i.labels["actor"] for i in splits["emotion"].test} == {"17", "18", "19", "20"}
    assert not {i.labels["actor"] for i in splits["emotion"].train} & {"17", "18", "19", "20"}
    assert len(splits["instruments"].classes) == 10
    events = splits["events"]  # washing_machine: one recording, all in test, so dropped
    assert len(events.classes) == 49 and len(events.test) == 116 and "washing_machine" not in events.classes


# ---------------------------------------------------------------------------------------------------------------
# heads
def test_token_embedding_reads_each_level_by_nearest_index() -> None:
    spec = InputSpec("tokens", frame_rates=(50.0, 75.0), codebook_sizes=(8, 16))  # coarse level first
    embed = TokenEmbedding(spec, hidden=1)
    with torch.no_grad():
        embed.embeddings[0].weight.copy_(100.0 * torch.arange(8.0)[:, None])  # coarse code j -> 100 j
        embed.embeddings[1].weight.copy_(torch.arange(16.0)[:, None])  # fine code i -> i
    short = [torch.tensor([1, 2, 3, 4, 5]), torch.arange(9)]  # 9 fine frames would read 6 coarse ones: clipped
    long = [torch.arange(8) % 8, torch.arange(12)]
    batch = collate([short, long], spec)
    out = embed(batch.inputs, batch.level_lengths)[..., 0]  # [B, F]
    coarse_index = [0, 0, 1, 2, 2, 3, 4, 4, 4]  # floor(f * 50 / 75), clipped to the last of 5 codes
    assert out[0, :9].tolist() == [f + 100.0 * short[0][j].item() for f, j in enumerate(coarse_index)]
    assert out[1].tolist() == [f + 100.0 * (f * 2 // 3) for f in range(12)]
    assert batch.lengths.tolist() == [9, 12]


def _random_items(spec: InputSpec, n: int, gen: torch.Generator) -> list:
    items = []
    for _ in range(n):
        frames = int(torch.randint(1, 20, (1,), generator=gen))
        if spec.kind == "features":
            items.append(torch.randn(frames, spec.dim, generator=gen))
        else:  # the coarse level sometimes a frame short or long, as real tokenizers' rounding makes it
            coarse = max(1, math.ceil(frames / 2) + int(torch.randint(-1, 2, (1,), generator=gen)))
            items.append([torch.randint(16, (frames,), generator=gen), torch.randint(8, (coarse,), generator=gen)])
    return items


@pytest.mark.parametrize("kind", ["classify", "ctc"])
@pytest.mark.parametrize(
    "spec",
    [InputSpec("tokens", (50.0, 25.0), (16, 8)), InputSpec("features", (50.0,), dim=6)],
    ids=["tokens", "features"],
)
@pytest.mark.parametrize(("pooling", "downsample"), [("attention", 1), ("mean", 1), ("attention", 3)])
def test_padding_never_changes_an_items_output(
    spec: InputSpec, kind: Literal["classify", "ctc"], pooling: str, downsample: int
) -> None:
    if kind == "ctc" and pooling == "mean":
        pytest.skip("pooling does not apply to ctc")
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    head = ProbeHead(spec, 5, kind, ProbeConfig(hidden=16, pooling=pooling, downsample=downsample)).eval()
    items = _random_items(spec, 6, gen)
    with torch.no_grad():
        together = head(collate(items, spec))
        for b, item in enumerate(items):
            alone = head(collate([item], spec))[0]
            frames = int(head.output_lengths(torch.tensor([spec.num_frames(item)]))[0])
            expected = together[b] if kind == "classify" else together[b, :frames]
            torch.testing.assert_close(alone[:frames] if kind == "ctc" else alone, expected, atol=1e-5, rtol=0)


def test_inputs_are_checked_against_the_spec() -> None:
    tokens = InputSpec("tokens", (50.0, 25.0), (16, 8))
    with pytest.raises(ValueError, match=r"outside \[0, 8\)"):
        tokens.check([torch.arange(4), torch.tensor([0, 8])])
    with pytest.raises(ValueError, match="list of 2 tensors"):
        tokens.check([torch.arange(4)])
    with pytest.raises(ValueError, match=r"\[T', 6\]"):
        InputSpec("features", (50.0,), dim=6).check(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="one codebook size"):
        InputSpec("tokens", (50.0, 25.0), (16,))


def test_random_crop_keeps_levels_aligned() -> None:
    spec = InputSpec("tokens", (50.0, 25.0), (64, 64))
    fine, coarse = torch.arange(40), torch.arange(0, 40, 2)  # each code names the fine frame where it starts
    for seed in range(10):
        cropped = _random_crop([fine, coarse], spec, 6, torch.Generator().manual_seed(seed))
        assert len(cropped[0]) == 6 and len(cropped[1]) == 3
        assert 0 <= int(cropped[0][0] - cropped[1][0]) <= 1  # the same time, within one frame


# ---------------------------------------------------------------------------------------------------------------
# training
def _token_task(n_train: int, n_test: int, informative: bool, seed: int = 0) -> tuple[TaskSplit, list, list]:
    """Three classes; when ``informative``, a class draws most of its fine-level codes from its own quarter."""
    gen = torch.Generator().manual_seed(seed)
    task = ProbeTask("toy", "toy", "y", "classify", "accuracy", "which code range dominates?")
    items, inputs = [], []
    for i in range(n_train + n_test):
        label = i % 3 if informative else int(torch.randint(3, (1,), generator=gen))
        frames = int(torch.randint(8, 30, (1,), generator=gen))
        fine = torch.randint(16, (frames,), generator=gen)
        if informative:
            own = 4 * label + torch.randint(4, (frames,), generator=gen)
            fine = torch.where(torch.rand(frames, generator=gen) < 0.7, own, fine)
        inputs.append([fine, torch.randint(8, ((frames + 1) // 2,), generator=gen)])
        items.append(_item(f"toy/{i}", y=str(label)))
    split = TaskSplit(task, items[:n_train], items[n_train:], ("0", "1", "2"))
    return split, inputs[:n_train], inputs[n_train:]


def test_classify_probe_learns_what_tokens_carry_and_nothing_else() -> None:
    spec = InputSpec("tokens", (50.0, 25.0), (16, 8))
    config = ProbeConfig.from_dict({**TINY.to_dict(), "epochs": 6})
    split, train, test = _token_task(60, 60, informative=True)
    learnt = train_probe(split, spec, train, test, config, seed=0)
    assert learnt.metrics["accuracy"] > 0.9 and learnt.num_train == 60 and learnt.num_test == 60

    split, train, test = _token_task(60, 90, informative=False)
    blind = train_probe(split, spec, train, test, config, seed=0)
    assert learnt.chance is not None and blind.chance is not None
    assert abs(blind.metrics["accuracy"] - 1 / 3) < 0.15 and blind.chance < 0.5


def _ctc_task(n_train: int, n_test: int) -> tuple[TaskSplit, list, list]:
    """Transcripts over A-D; each character is two noisy one-hot frames, characters separated by a gap frame."""
    gen = torch.Generator().manual_seed(0)
    task = ProbeTask("toy-asr", "toy", "text", "ctc", "cer", "read the characters")
    items, inputs = [], []
    for i in range(n_train + n_test):
        chars = torch.randint(4, (int(torch.randint(2, 6, (1,), generator=gen)),), generator=gen).tolist()
        frames = [c for ch in chars for c in (ch, ch, 4)]
        inputs.append(torch.eye(5)[frames] + 0.1 * torch.randn(len(frames), 5, generator=gen))  # [T', D]
        items.append(_item(f"toy/{i}", text="".join("ABCD"[c] for c in chars)))
    split = TaskSplit(task, items[:n_train], items[n_train:], tuple("ABCD"))
    return split, inputs[:n_train], inputs[n_train:]


def test_ctc_probe_learns_a_character_mapping() -> None:
    split, train, test = _ctc_task(96, 24)
    spec = InputSpec("features", (50.0,), dim=5)
    result = train_probe(split, spec, train, test, ProbeConfig.from_dict({**TINY.to_dict(), "epochs": 25}), seed=0)
    assert result.metrics["cer"] < 0.2 and set(result.metrics) == {"cer", "wer"} and result.chance is None


def test_ctc_greedy_decode_collapses_repeats_and_drops_blanks() -> None:
    path = torch.tensor([0, 1, 1, 0, 1, 2, 2, 0])
    assert ctc_greedy_decode(torch.eye(3)[path].log()) == [1, 1, 2]


def test_same_seed_same_result() -> None:
    split, train, test = _ctc_task(16, 8)
    spec = InputSpec("features", (50.0,), dim=5)
    config = ProbeConfig.from_dict({**TINY.to_dict(), "epochs": 2, "dropout": 0.2, "lstm_layers": 2})
    first, again, other = (train_probe(split, spec, train, test, config, seed=s).metrics for s in (1, 1, 2))
    assert first == again and first != other


def test_summarise_matches_a_hand_computed_t_interval() -> None:
    results = [ProbeResult("digits", s, {"accuracy": a}, 0.1, 30, 1.0, 90, 10) for s, a in enumerate([0.8, 0.9, 0.85])]
    interval = summarise(results)["accuracy"]
    half = 4.302652729749462 * 0.05 / math.sqrt(3)  # t_{0.975, 2} * sample std / sqrt(n)
    assert interval.n == 3 and interval.mean == pytest.approx(0.85)
    assert (interval.low, interval.high) == pytest.approx((0.85 - half, 0.85 + half))
    assert math.isnan(summarise(results[:1])["accuracy"].low)
    with pytest.raises(ValueError, match="seeds repeat"):
        summarise([results[0], results[0]])
