"""soundtok.icl: episodes, code-to-word maps, prompts and label scoring (on the tiny in-memory LM)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from soundtok.errors import SoundtokError
from soundtok.eval.stats import mcnemar, wilson
from soundtok.icl import (
    Example,
    PromptFormat,
    WordMap,
    audio_words,
    nearest_neighbour,
    prompt_parts,
    sample_episodes,
    score_labels,
)

EXAMPLES = [Example(f"{label}-{s}-{i}", label, f"s{s}") for label in "abcd" for s in range(3) for i in range(3)]


def test_episodes_are_balanced_fresh_and_never_show_the_query() -> None:
    episodes = sample_episodes(EXAMPLES, n_way=3, k_shot=2, count=400, seed=1)
    assert Counter(e.query.label for e in episodes) == {label: 100 for label in "abcd"}
    for e in episodes:
        assert len(e.labels) == 3 and e.query.label in e.labels and len(set(e.labels)) == 3
        assert Counter(s.label for s in e.support) == dict.fromkeys(e.labels, 2)
        assert e.query.id not in {s.id for s in e.support}
    assert len({e.support for e in episodes}) > 300  # a fresh support set per episode
    assert len({e.labels for e in episodes}) > 12  # labels in random order
    assert episodes == sample_episodes(EXAMPLES, n_way=3, k_shot=2, count=400, seed=1)
    assert episodes != sample_episodes(EXAMPLES, n_way=3, k_shot=2, count=400, seed=2)


@pytest.mark.parametrize("groups", ["same", "disjoint"])
def test_groups_keep_the_support_with_or_away_from_the_query_source(groups: str) -> None:
    for e in sample_episodes(EXAMPLES, n_way=2, k_shot=2, count=100, seed=0, groups=groups):  # type: ignore[arg-type]
        assert all((s.group == e.query.group) == (groups == "same") for s in e.support)


def test_impossible_episodes_are_an_error() -> None:
    with pytest.raises(SoundtokError, match="labels"):
        sample_episodes(EXAMPLES, n_way=5, k_shot=1, count=1, seed=0)
    with pytest.raises(SoundtokError, match="too few"):  # 3 clips per label and speaker, one is the query
        sample_episodes(EXAMPLES, n_way=2, k_shot=3, count=1, seed=0, groups="same")


def test_word_maps_and_collapsed_repeats() -> None:
    candidates = list(range(100, 200))
    m = WordMap.random(50, candidates, seed=0)
    assert len(set(m.token_ids.tolist())) == 50 and set(m.token_ids.tolist()) <= set(candidates)
    assert torch.equal(m.token_ids, WordMap.random(50, candidates, seed=0).token_ids)
    codes = torch.tensor([3, 3, 3, 7, 7, 3])
    assert audio_words(codes, m) == m.token_ids[[3, 7, 3]].tolist()
    assert len(audio_words(codes, m, collapse_repeats=False)) == 6
    embeddings = torch.randn(300, 16)
    near = WordMap.nearest(torch.randn(50, 4), embeddings, candidates, seed=0)
    assert set(near.token_ids.tolist()) <= set(candidates) and near.token_ids.shape == (50,)


def test_nearest_neighbour_reads_bags_of_codes() -> None:
    e = sample_episodes([Example("q", "x"), Example("x1", "x"), Example("y1", "y")], 2, 1, 1, seed=0)[0]
    codes = {"q": torch.tensor([1, 1, 2]), "x1": torch.tensor([1, 2, 1, 1]), "y1": torch.tensor([5, 6])}
    if e.query.id != "q":  # the sampler picked another query: make that one look like its own demonstration
        codes[e.query.id], codes["q"] = codes["q"], codes[e.query.id]
    assert nearest_neighbour(e, codes, 8) == e.query.label


def test_prompt_layout() -> None:
    from soundtok.llm.dummies import tiny_chat_tokenizer

    tok = tiny_chat_tokenizer(("\n", " ", ":", ",", ".", "Input", "Output", "dog", "cat", "yes", "no"))
    clips = [Example("d", "dog"), Example("d2", "dog"), Example("c", "cat"), Example("c2", "cat")]
    e = sample_episodes(clips, 2, 1, 1, seed=0)[0]
    words = {"d": [7], "d2": [7, 7], "c": [8], "c2": [8, 8]}  # token ids as audio words
    prefix, query, tail = prompt_parts(e, words, tok, PromptFormat(induction=False, repeats=2))
    text = tok.decode(prefix + query + tail)
    assert text.count("Input:") == 5 and text.endswith("\nOutput:") and query == words[e.query.id]
    first = tok.decode(prompt_parts(e, words, tok, PromptFormat())[0])
    assert f": {', '.join(e.labels)}.\nInput:" in first  # the induction line ends with the labels (its words are
    # unknown to the tiny vocabulary)


def test_cached_scores_equal_a_plain_forward() -> None:
    from soundtok.llm.dummies import tiny_causal_lm

    model = tiny_causal_lm(40, seed=3).eval()
    prefix, queries, labels = [1, 5, 7, 2], [[9, 4], [3]], [[11], [12, 13, 14]]
    scores = score_labels(model, prefix, queries, labels)
    for q, row in zip(queries, scores, strict=True):
        for label, value in zip(labels, row, strict=True):
            ids = torch.tensor([prefix + q + label])
            with torch.no_grad():
                logp = model(ids).logits[0].log_softmax(-1)
            start = len(prefix) + len(q)
            expected = sum(float(logp[start - 1 + i, t]) for i, t in enumerate(label))
            assert value == pytest.approx(expected, abs=1e-4)


def test_statistics() -> None:
    lo, hi = wilson(500, 1000)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(0.062, abs=0.001)
    assert wilson(0, 0) == (0.0, 1.0)
    assert mcnemar([True, False], [True, False]) == 1.0
    assert mcnemar([True] * 10, [False] * 10) == pytest.approx(2 / 2**10)


def test_native_words_are_an_llm_codecs_own_token_ids() -> None:
    import soundtok
    import soundtok.testing.dummies  # noqa: F401  (registers llm-codec-tiny)
    from soundtok.icl import native_words

    tok = soundtok.load("llm-codec-tiny")
    word_map = native_words(tok)
    assert word_map.kind == "native" and torch.equal(word_map.token_ids, tok.token_ids(0))
    with pytest.raises(SoundtokError, match="not LLM words"):
        native_words(soundtok.load("mulaw-8bit-8k"))
