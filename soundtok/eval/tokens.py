"""Token statistics: nominal bitrate and token rate, codebook usage, unigram entropy, entropy-coded bitrate.

Statistics are over the *valid* frames of each item (padding is ignored), pooled over every item given.

>>> import torch
>>> from soundtok.types import LevelSpec, Tokens, TokenizerId
>>> codes = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3]])  # 4 of 8 codes, uniformly
>>> t = Tokens((codes,), torch.tensor([8 * 160]), 16000, (LevelSpec(160, 8),), TokenizerId("demo", "demo", "0"))
>>> s = token_stats(t)
>>> s.usage, s.entropy_bits, s.nominal_bitrate, s.entropy_bitrate
((0.5,), (2.0,), 300.0, 200.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from soundtok import types
from soundtok.types import Tokens


class _HasRates(Protocol):
    @property
    def frame_rates(self) -> tuple[float, ...]: ...

    @property
    def codebook_sizes(self) -> tuple[int, ...]: ...


def nominal_bitrate(source: _HasRates) -> float:
    """Bits per second without entropy coding: sum over levels of frame rate x log2(codebook size).

    ``source`` is an :class:`~soundtok.tokenizers.base.AudioTokenizer` or a :class:`~soundtok.types.Tokens`.
    """
    return types.nominal_bitrate(tuple(source.frame_rates), tuple(source.codebook_sizes))


def token_rate(source: _HasRates) -> float:
    """Tokens per second of audio, all levels together (what an LLM's context pays)."""
    return float(sum(source.frame_rates))


def _as_list(tokens: Tokens | Sequence[Tokens]) -> list[Tokens]:
    items = [tokens] if isinstance(tokens, Tokens) else list(tokens)
    if not items:
        raise ValueError("no Tokens given; pass a Tokens or a non-empty list of them")
    first = items[0]
    for other in items[1:]:
        first.tokenizer.check_same(other.tokenizer)
        if other.levels != first.levels or other.sample_rate != first.sample_rate:
            raise ValueError("all Tokens must have the same levels and sample rate to pool their statistics")
    return items


def code_counts(tokens: Tokens | Sequence[Tokens]) -> list[torch.Tensor]:
    """Per level, how often each code occurs: a list of ``[codebook_size]`` int64 tensors (valid frames only)."""
    items = _as_list(tokens)
    counts = [torch.zeros(n, dtype=torch.long) for n in items[0].codebook_sizes]
    for t in items:
        for level, n in enumerate(t.codebook_sizes):
            lengths = t.frame_lengths(level).cpu()  # [B]
            codes = t.codes[level].cpu()  # [B, T']
            valid = torch.arange(codes.shape[1])[None, :] < lengths[:, None]  # [B, T']
            values = codes[valid]
            if values.numel() and (int(values.min()) < 0 or int(values.max()) >= n):
                raise ValueError(f"level {level} holds codes outside [0, {n}); the tokens are corrupt")
            counts[level] += torch.bincount(values, minlength=n)
    return counts


def codebook_usage(tokens: Tokens | Sequence[Tokens]) -> tuple[float, ...]:
    """Per level, the fraction of the codebook that occurs at least once (0..1)."""
    return tuple(float((c > 0).sum()) / c.numel() for c in code_counts(tokens))


def _entropy_bits(counts: torch.Tensor) -> float:
    total = int(counts.sum())
    if total == 0:
        return 0.0
    p = counts[counts > 0].double() / total
    return max(0.0, float(-(p * p.log2()).sum()))


def code_entropy(tokens: Tokens | Sequence[Tokens]) -> tuple[float, ...]:
    """Per level, the unigram entropy of the codes in bits (0..log2(codebook size))."""
    return tuple(_entropy_bits(c) for c in code_counts(tokens))


@dataclass(frozen=True)
class TokenStats:
    """Token statistics pooled over a set of items; tuples have one entry per level."""

    frame_rates: tuple[float, ...]
    codebook_sizes: tuple[int, ...]
    num_frames: tuple[int, ...]  # valid frames counted per level
    usage: tuple[float, ...]  # fraction of codes used
    entropy_bits: tuple[float, ...]  # unigram entropy per level
    nominal_bitrate: float  # sum of frame_rate * log2(codebook_size)
    entropy_bitrate: float  # "bits actually needed": sum of frame_rate * entropy
    token_rate: float  # tokens per second, all levels

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def token_stats(tokens: Tokens | Sequence[Tokens]) -> TokenStats:
    """All token statistics of ``tokens`` (one :class:`Tokens`, or a list of them from the same tokenizer).

    ``entropy_bitrate`` is what an ideal unigram entropy coder would need per second; its ratio to
    ``nominal_bitrate`` shows how much of the codebooks' capacity is used.
    """
    items = _as_list(tokens)
    counts = code_counts(items)
    first = items[0]
    entropy = tuple(_entropy_bits(c) for c in counts)
    return TokenStats(
        frame_rates=first.frame_rates,
        codebook_sizes=first.codebook_sizes,
        num_frames=tuple(int(c.sum()) for c in counts),
        usage=tuple(float((c > 0).sum()) / c.numel() for c in counts),
        entropy_bits=entropy,
        nominal_bitrate=nominal_bitrate(first),
        entropy_bitrate=sum(r * h for r, h in zip(first.frame_rates, entropy, strict=True)),
        token_rate=token_rate(first),
    )
