"""The data that crosses the tokenizer contract.

Shape legend, used in comments across soundtok:

    B  batch items            C  audio channels        T  samples
    L  token levels           T' frames of one level   D  feature dimension

A *level* is one stream of codes from one codebook at one frame rate. An RVQ codec with 8 codebooks has 8
levels at the same rate; a multi-scale RVQ has levels at different rates; k-means tokens have one level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from soundtok.errors import TokenizerMismatchError

#: sample rates soundtok accepts anywhere (audio, token files, configs): below or above is a mistake, not audio
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384_000


@dataclass(frozen=True)
class TokenizerId:
    """Who made a set of tokens.

    ``fingerprint`` hashes the tokenizer's config and, for trained tokenizers, its weights: two tokenizers with
    the same fingerprint produce the same codes for the same audio, so codes are only ever decoded by a
    tokenizer with the same fingerprint.
    """

    family: str
    name: str
    fingerprint: str

    def __str__(self) -> str:
        return f"{self.name} ({self.family}, {self.fingerprint})"

    def to_dict(self) -> dict[str, str]:
        return {"family": self.family, "name": self.name, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> TokenizerId:
        return cls(family=str(d["family"]), name=str(d["name"]), fingerprint=str(d["fingerprint"]))

    def check_same(self, other: TokenizerId) -> None:
        """Raise :class:`TokenizerMismatchError` unless ``other`` made compatible tokens."""
        if self.fingerprint != other.fingerprint or self.family != other.family:
            raise TokenizerMismatchError(
                f"these tokens were made by {other}, but this tokenizer is {self}; "
                f"decode them with soundtok.load({other.name!r}) (the same checkpoint that encoded them)"
            )


@dataclass(frozen=True)
class LevelSpec:
    """One token level: its frame rate is ``sample_rate / hop_length`` of its tokenizer."""

    hop_length: int  # samples (at the tokenizer's sample rate) per frame
    codebook_size: int


def nominal_bitrate(frame_rates: tuple[float, ...], codebook_sizes: tuple[int, ...]) -> float:
    """Bits per second without entropy coding: sum over levels of frame rate x log2(codebook size)."""
    return sum(r * math.log2(n) for r, n in zip(frame_rates, codebook_sizes, strict=True))


def frames_for(length: int | torch.Tensor, hop_length: int) -> torch.Tensor:
    """Frames a level emits for ``length`` samples: ceil(length / hop). The last frame may cover padding."""
    return torch.div(torch.as_tensor(length) + hop_length - 1, hop_length, rounding_mode="floor")


@dataclass
class Tokens:
    """Codes for a batch of audio items, one tensor per level.

    ``codes[l]`` is ``[B, T'_l]`` int64 with ``T'_l`` = frames of the longest item at level ``l``;
    item ``b`` owns the first ``frame_lengths(l)[b]`` frames and the rest are padding (value 0).
    ``lengths`` is ``[B]``: each item's audio length in samples at ``sample_rate`` (what decode gives back).
    """

    codes: tuple[torch.Tensor, ...]
    lengths: torch.Tensor
    sample_rate: int
    levels: tuple[LevelSpec, ...]
    tokenizer: TokenizerId

    def __post_init__(self) -> None:
        if len(self.codes) != len(self.levels):
            raise ValueError(f"{len(self.codes)} code tensors for {len(self.levels)} levels")
        batch = self.lengths.shape[0]
        for level, (c, spec) in enumerate(zip(self.codes, self.levels, strict=True)):
            if c.ndim != 2 or c.shape[0] != batch:
                raise ValueError(f"level {level}: expected codes shaped [B={batch}, T'], got {tuple(c.shape)}")
            need = int(frames_for(int(self.lengths.max()), spec.hop_length)) if batch else 0
            if c.shape[1] < need:
                raise ValueError(f"level {level}: {c.shape[1]} frames cannot hold {need} frames of the longest item")

    @property
    def batch_size(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def frame_rates(self) -> tuple[float, ...]:
        return tuple(self.sample_rate / s.hop_length for s in self.levels)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return tuple(s.codebook_size for s in self.levels)

    @property
    def bitrate(self) -> float:
        """Nominal bits per second (:func:`nominal_bitrate`)."""
        return nominal_bitrate(self.frame_rates, self.codebook_sizes)

    def frame_lengths(self, level: int) -> torch.Tensor:
        """``[B]`` number of valid frames per item at ``level``."""
        return frames_for(self.lengths, self.levels[level].hop_length)

    def item(self, index: int) -> Tokens:
        """Item ``index`` alone, its padding removed."""
        length = self.lengths[index : index + 1]
        codes = tuple(
            c[index : index + 1, : int(frames_for(int(length), s.hop_length))]
            for c, s in zip(self.codes, self.levels, strict=True)
        )
        return Tokens(codes, length.clone(), self.sample_rate, self.levels, self.tokenizer)

    def items(self) -> list[Tokens]:
        return [self.item(i) for i in range(self.batch_size)]

    @staticmethod
    def stack(items: list[Tokens]) -> Tokens:
        """Batch single- or multi-item Tokens from the same tokenizer, padding codes with 0."""
        if not items:
            raise ValueError("cannot stack an empty list of Tokens")
        first = items[0]
        for other in items[1:]:
            first.tokenizer.check_same(other.tokenizer)
        singles = [one for t in items for one in t.items()]
        lengths = torch.cat([t.lengths for t in singles])
        codes = []
        for level, spec in enumerate(first.levels):
            width = int(frames_for(int(lengths.max()), spec.hop_length))
            out = torch.zeros(len(singles), width, dtype=torch.long)
            for b, t in enumerate(singles):
                out[b, : t.codes[level].shape[1]] = t.codes[level][0]
            codes.append(out)
        return Tokens(tuple(codes), lengths, first.sample_rate, first.levels, first.tokenizer)

    def to(self, device: torch.device | str) -> Tokens:
        return Tokens(
            tuple(c.to(device) for c in self.codes), self.lengths, self.sample_rate, self.levels, self.tokenizer
        )

    def equal(self, other: Tokens) -> bool:
        """Same tokenizer, lengths and valid codes (padding ignored)."""
        if self.tokenizer != other.tokenizer or not torch.equal(self.lengths.cpu(), other.lengths.cpu()):
            return False
        for level in range(self.num_levels):
            for b, n in enumerate(self.frame_lengths(level).tolist()):
                if not torch.equal(self.codes[level][b, :n].cpu(), other.codes[level][b, :n].cpu()):
                    return False
        return True
