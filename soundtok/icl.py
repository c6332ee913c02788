"""In-context audio learning by a frozen LLM (UniAudio 1.5's test, Yang et al. 2024): N-way K-shot episodes whose
demonstrations and query are audio written as LLM words, answered by the label the LLM finds most likely.

>>> examples = [Example(f"{d}-{i}", str(d), group=f"s{i % 2}") for d in range(3) for i in range(4)]
>>> episodes = sample_episodes(examples, n_way=2, k_shot=1, count=4, seed=0, groups="disjoint")
>>> [len(e.labels) for e in episodes], [len(e.support) for e in episodes]
([2, 2, 2, 2], [2, 2, 2, 2])
>>> all(e.query.label in e.labels and all(s.group != e.query.group for s in e.support) for e in episodes)
True

Pieces, each usable alone:

* :func:`sample_episodes`: balanced queries (each label the query's label equally often), a fresh support set per
  episode that never holds the query, labels and demonstrations in random order, seeded; ``groups`` keeps the
  support within the query's group (e.g. speaker), outside it, or ignores groups.
* :class:`WordMap`: a tokenizer's codes as single-token LLM words, by a fixed random mapping or by the nearest word
  embedding of a random projection of the code vectors; :func:`audio_words` writes one clip (repeats collapsed).
* :func:`prompt_parts` and :func:`score_labels`: the prompt (optional task-induction line, ``Input: <words>`` /
  ``Output: <label>`` demonstrations, repeated ``repeats`` times, then the query) and the log-likelihood of each
  label after it. The demonstrations are run once and their cache reused for every variant of the query
  (the real one, a shuffled one, an empty one for contextual calibration, Zhao et al. 2021).
* :func:`nearest_neighbour`: a non-LLM reader of the same demonstrations (1-NN on bags of codes).
Intervals and paired tests (Wilson, McNemar) are :mod:`soundtok.eval.stats`.
"""

from __future__ import annotations

import copy
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from soundtok.errors import SoundtokError

Groups = Literal["any", "same", "disjoint"]


@dataclass(frozen=True)
class Example:
    """One labelled clip: ``id`` names its codes, ``group`` its source (a speaker; ``""`` for none)."""

    id: str
    label: str
    group: str = ""


@dataclass(frozen=True)
class Episode:
    labels: tuple[str, ...]  # the N labels, in the order the task induction lists them
    support: tuple[Example, ...]  # N x K demonstrations, in prompt order
    query: Example


def sample_episodes(
    examples: Sequence[Example], n_way: int, k_shot: int, count: int, seed: int, *, groups: Groups = "any"
) -> list[Episode]:
    """``count`` episodes; query labels cycle over the labels (balanced); draws that cannot be completed under
    the ``groups`` constraint are redrawn (up to 100 times each, then an error names the task's shortfall)."""
    by_label: dict[str, list[Example]] = defaultdict(list)
    for example in sorted(examples, key=lambda e: e.id):
        by_label[example.label].append(example)
    labels = sorted(by_label)
    if len(labels) < n_way:
        raise SoundtokError(f"{n_way}-way episodes need {n_way} labels; the examples have {len(labels)}")
    rng = random.Random(seed)
    order = labels[:]
    episodes = []
    for i in range(count):
        if i % len(labels) == 0:
            rng.shuffle(order)
        for _ in range(100):
            episode = _draw(by_label, labels, order[i % len(labels)], n_way, k_shot, groups, rng)
            if episode is not None:
                episodes.append(episode)
                break
        else:
            raise SoundtokError(
                f"cannot draw {n_way}-way {k_shot}-shot episodes with groups={groups!r}: too few examples per "
                f"label and group for label {order[i % len(labels)]!r}"
            )
    return episodes


def _draw(
    by_label: dict[str, list[Example]],
    labels: list[str],
    query_label: str,
    n_way: int,
    k_shot: int,
    groups: Groups,
    rng: random.Random,
) -> Episode | None:
    query = rng.choice(by_label[query_label])
    chosen = [query_label, *rng.sample([x for x in labels if x != query_label], n_way - 1)]
    rng.shuffle(chosen)
    support: list[Example] = []
    for label in chosen:
        pool = [
            e
            for e in by_label[label]
            if e.id != query.id and (groups == "any" or (e.group == query.group) == (groups == "same"))
        ]
        if len(pool) < k_shot:
            return None
        support += rng.sample(pool, k_shot)
    rng.shuffle(support)
    return Episode(tuple(chosen), tuple(support), query)


# ------------------------------------------------------------------------------------------------- words


def word_candidates(tokenizer: Any, exclude: Sequence[str] = (), min_letters: int = 3) -> list[int]:
    """Token ids of the LLM's single-token lowercase words written with a leading space (``" house"``), sorted:
    the words codes are mapped to. ``exclude`` removes words (e.g. the task's labels)."""
    excluded = {w.strip().lower() for w in exclude}
    ids = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        word = text[1:]
        if (
            text.startswith(" ")
            and len(word) >= min_letters
            and word.isascii()
            and word.isalpha()
            and word.islower()
            and word not in excluded
        ):
            ids.append(token_id)
    return ids


@dataclass(frozen=True)
class WordMap:
    """``token_ids[c]``: the LLM token that writes code ``c``."""

    token_ids: torch.Tensor  # [codebook_size] int64
    kind: str

    @classmethod
    def random(cls, codebook_size: int, candidates: Sequence[int], seed: int) -> WordMap:
        """Distinct random words (codes beyond the candidates' count share words)."""
        rng = random.Random(seed)
        picked = rng.sample(list(candidates), min(codebook_size, len(candidates)))
        picked += [rng.choice(list(candidates)) for _ in range(codebook_size - len(picked))]
        return cls(torch.tensor(picked, dtype=torch.long), "random")

    @classmethod
    def nearest(
        cls, code_vectors: torch.Tensor, embeddings: torch.Tensor, candidates: Sequence[int], seed: int
    ) -> WordMap:
        """Each code vector ``[K, d]``, projected to the LLM's width by a seeded Gaussian matrix, written as the
        candidate word with the nearest input embedding (cosine; several codes may share a word)."""
        g = torch.Generator().manual_seed(seed)
        width = embeddings.shape[1]
        projection = torch.randn(code_vectors.shape[1], width, generator=g) / math.sqrt(code_vectors.shape[1])
        projected = torch.nn.functional.normalize((code_vectors.float() - code_vectors.float().mean(0)) @ projection)
        ids = torch.tensor(list(candidates), dtype=torch.long)
        words = torch.nn.functional.normalize(embeddings[ids].float() - embeddings[ids].float().mean(0))
        return cls(ids[(projected @ words.T).argmax(dim=1)], "nearest")


def native_words(tokenizer: Any, level: int = 0) -> WordMap:
    """The words an LLM-driven tokenizer's codes already are (``llm_codec``: :meth:`token_ids`), unmapped."""
    token_ids = getattr(tokenizer, "token_ids", None)
    if token_ids is None:
        raise SoundtokError(f"{tokenizer.name}'s codes are not LLM words; map them with WordMap.random or .nearest")
    return WordMap(token_ids(level).long().cpu(), "native")


def audio_words(codes: torch.Tensor, word_map: WordMap, *, collapse_repeats: bool = True) -> list[int]:
    """One clip's codes ``[T]`` (one level) as LLM token ids; runs of one code written once by default."""
    if collapse_repeats and codes.numel():
        keep = torch.ones_like(codes, dtype=torch.bool)
        keep[1:] = codes[1:] != codes[:-1]
        codes = codes[keep]
    return word_map.token_ids[codes.long()].tolist()


# ------------------------------------------------------------------------------------------------ prompts


@dataclass(frozen=True)
class PromptFormat:
    induction: bool = True  # a first line naming the task's labels
    repeats: int = 1  # the demonstrations, this many times over


def prompt_parts(
    episode: Episode, words: dict[str, list[int]], tokenizer: Any, fmt: PromptFormat
) -> tuple[list[int], list[int], list[int]]:
    """``(prefix, query_words, query_tail)`` token ids: the prompt is ``prefix + query_words + query_tail``, and
    variants of the query replace ``query_words`` only (``prefix`` is shared, so its cache is computed once)."""

    def text(s: str) -> list[int]:
        return list(tokenizer(s, add_special_tokens=False)["input_ids"])

    prefix: list[int] = []
    if fmt.induction:
        prefix += text(f"Classify each input as one of: {', '.join(episode.labels)}.\n")
    for _ in range(fmt.repeats):
        for demo in episode.support:
            prefix += text("Input:") + words[demo.id] + text(f"\nOutput: {demo.label}\n")
    prefix += text("Input:")
    return prefix, words[episode.query.id], text("\nOutput:")


def label_ids(labels: Sequence[str], tokenizer: Any) -> list[list[int]]:
    """Each label's continuation after ``Output:`` (a space, then the label) as token ids."""
    return [list(tokenizer(f" {label}", add_special_tokens=False)["input_ids"]) for label in labels]


@torch.no_grad()
def score_labels(
    model: Any, prefix: list[int], queries: Sequence[list[int]], labels: Sequence[list[int]]
) -> list[list[float]]:
    """Log-likelihood of every label after ``prefix + query`` for each query variant: ``[len(queries)][labels]``.

    The prefix runs once; each query (and each label's tokens after the first) continues a copy of its cache."""
    device = next(model.parameters()).device
    # logits_to_keep=1: the vocabulary projection only where a next token is read (a fifth of the compute)
    base = model(torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1)
    scores = []
    for query in queries:
        cache = copy.deepcopy(base.past_key_values)
        out = model(torch.tensor([query], device=device), past_key_values=cache, use_cache=True, logits_to_keep=1)
        first = out.logits[0, -1].float().log_softmax(-1)
        row = []
        for label in labels:
            value = float(first[label[0]])
            if len(label) > 1:
                rest = model(
                    torch.tensor([label[:-1]], device=device), past_key_values=copy.deepcopy(out.past_key_values)
                )
                logp = rest.logits[0].float().log_softmax(-1)
                value += float(logp[torch.arange(len(label) - 1), torch.tensor(label[1:])].sum())
            row.append(value)
        scores.append(row)
    return scores


def nearest_neighbour(episode: Episode, codes: dict[str, torch.Tensor], codebook_size: int) -> str:
    """The label of the demonstration whose bag of codes (normalised counts) is closest in cosine to the query's."""

    def bag(item: str) -> torch.Tensor:
        counts = torch.bincount(codes[item].long(), minlength=codebook_size).float()
        return counts / counts.norm().clamp(min=1e-8)

    query = bag(episode.query.id)
    similarity = [float(bag(demo.id) @ query) for demo in episode.support]
    return episode.support[max(range(len(similarity)), key=similarity.__getitem__)].label
