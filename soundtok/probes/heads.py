"""Probe heads: a small BiLSTM over frozen tokens or features, with a classification or a CTC output.

A probe reads, per item (the data format has no batch axis):

- **tokens**: a list with one ``[T'_l]`` int64 tensor per level; levels may run at different frame rates (a
  multi-scale codec), given by the :class:`InputSpec`;
- **features**: one ``[T', D]`` float tensor (e.g. an encoder's hidden states) at ``spec.frame_rates[0]``.

The head works at the *finest* frame rate of its input (``F`` frames per item below). :class:`TokenEmbedding`
brings every level to it by nearest index: frame ``f`` reads level ``l``'s code ``floor(f * r_l / r_max)``,
clipped to that item's last code of the level, and the levels' embeddings are summed.

:func:`collate` pads items into a :class:`ProbeBatch`. With ``downsample = r > 1`` the head first averages its
frames in groups of ``r`` (an item's last group over its own frames only), so the LSTM takes ``ceil(F / r)`` steps
(:meth:`ProbeHead.output_lengths`; CTC outputs come at that rate). The LSTM runs on packed sequences and pooling
ignores padded frames, so padding never changes an item's output: an item scored alone or in any batch gets the same
logits.

Shapes: ``B`` items, ``L`` token levels, ``T'_l`` frames of level ``l``, ``F`` frames at the head's rate,
``D`` feature dimension, ``H`` the head's hidden width, ``C`` classes.

>>> import torch
>>> spec = InputSpec("tokens", frame_rates=(50.0, 25.0), codebook_sizes=(16, 8))
>>> items = [[torch.randint(16, (10,)), torch.randint(8, (5,))], [torch.randint(16, (6,)), torch.randint(8, (3,))]]
>>> batch = collate(items, spec)
>>> head = ProbeHead(spec, num_outputs=3, kind="classify", config=ProbeConfig(hidden=8)).eval()
>>> batch.lengths.tolist(), tuple(head(batch).shape)
([10, 6], (2, 3))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from soundtok.config import Config

#: one item's probe input: a list of ``[T'_l]`` code tensors (tokens) or one ``[T', D]`` tensor (features)
ProbeInput: TypeAlias = Sequence[Tensor] | Tensor


@dataclass(frozen=True)
class InputSpec:
    """What a probe reads: ``tokens`` (one level per frame rate and codebook size) or ``features`` (``dim`` wide).

    For tokens, pass the tokenizer's ``frame_rates`` and ``codebook_sizes``; for features, one frame rate.
    """

    kind: Literal["tokens", "features"]
    frame_rates: tuple[float, ...]
    codebook_sizes: tuple[int, ...] = ()
    dim: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_rates", tuple(float(r) for r in self.frame_rates))
        object.__setattr__(self, "codebook_sizes", tuple(int(n) for n in self.codebook_sizes))
        if not self.frame_rates or min(self.frame_rates) <= 0:
            raise ValueError(f"frame_rates must be one or more positive rates (frames/s), got {self.frame_rates}")
        if self.kind == "tokens":
            if len(self.codebook_sizes) != len(self.frame_rates) or min(self.codebook_sizes) < 1:
                raise ValueError(
                    "a tokens InputSpec needs one codebook size (>= 1) per frame rate, got "
                    f"frame_rates={self.frame_rates}, codebook_sizes={self.codebook_sizes}"
                )
        elif self.kind == "features":
            if len(self.frame_rates) != 1 or self.dim < 1:
                raise ValueError(
                    f"a features InputSpec needs one frame rate and dim >= 1, got frame_rates={self.frame_rates}, "
                    f"dim={self.dim}"
                )
        else:
            raise ValueError(f"InputSpec kind must be 'tokens' or 'features', got {self.kind!r}")

    @property
    def frame_rate(self) -> float:
        """The head's frame rate: the finest of the input's rates."""
        return max(self.frame_rates)

    @property
    def finest(self) -> int:
        """Index of the level at the finest rate (the first, if several share it)."""
        return self.frame_rates.index(self.frame_rate)

    def num_frames(self, item: ProbeInput) -> int:
        """Frames of ``item`` at the head's frame rate."""
        return len(item[self.finest]) if self.kind == "tokens" else len(item)

    def check(self, item: ProbeInput, what: str = "item") -> None:
        """Raise ``ValueError`` unless ``item`` is a valid input of this spec (see the module docstring)."""
        if self.kind == "features":
            if (
                not isinstance(item, Tensor)
                or item.ndim != 2
                or item.shape[1] != self.dim
                or not item.is_floating_point()
            ):
                got = tuple(item.shape) if isinstance(item, Tensor) else type(item).__name__
                raise ValueError(f"{what}: features must be a float tensor [T', {self.dim}], got {got}")
            if item.shape[0] < 1 or not bool(torch.isfinite(item).all()):
                raise ValueError(f"{what}: features must have at least one frame and finite values")
            return
        if isinstance(item, Tensor) or len(item) != len(self.codebook_sizes):
            raise ValueError(
                f"{what}: tokens must be a list of {len(self.codebook_sizes)} tensors [T'_l], one per level "
                "(e.g. [codes[level][b, :length] for level ...])"
            )
        for level, (codes, size) in enumerate(zip(item, self.codebook_sizes, strict=True)):
            if not isinstance(codes, Tensor) or codes.ndim != 1 or codes.is_floating_point() or len(codes) < 1:
                raise ValueError(f"{what}: level {level} must be a non-empty 1-D integer tensor [T'_l]")
            if int(codes.min()) < 0 or int(codes.max()) >= size:
                raise ValueError(f"{what}: level {level} holds codes outside [0, {size}); wrong InputSpec?")


@dataclass
class ProbeBatch:
    """Items padded into a batch by :func:`collate`."""

    inputs: list[Tensor]  # tokens: one [B, T'_l] int64 per level; features: a single [B, T', D]
    level_lengths: Tensor  # [B, L] valid frames of each input (features: L = 1)
    lengths: Tensor  # [B] valid frames at the head's frame rate

    def to(self, device: str | torch.device) -> ProbeBatch:
        return ProbeBatch([x.to(device) for x in self.inputs], self.level_lengths.to(device), self.lengths.to(device))


def collate(items: Sequence[ProbeInput], spec: InputSpec) -> ProbeBatch:
    """Pad ``items`` (each in ``spec``'s format, see the module docstring) into one batch; padding is zeros."""
    if not items:
        raise ValueError("cannot collate an empty list of items")
    if spec.kind == "features":
        features = pad_sequence(cast(list[Tensor], list(items)), batch_first=True)  # [B, T', D]
        lengths = torch.tensor([len(x) for x in items])  # [B]
        return ProbeBatch([features], lengths[:, None], lengths)
    levels = [
        pad_sequence([item[level] for item in items], batch_first=True)  # [B, T'_l]
        for level in range(len(spec.frame_rates))
    ]
    level_lengths = torch.tensor([[len(codes) for codes in item] for item in items])  # [B, L]
    return ProbeBatch(levels, level_lengths, level_lengths[:, spec.finest].clone())


class TokenEmbedding(nn.Module):
    """One embedding table per level; every level read at the finest rate by nearest index, and summed."""

    def __init__(self, spec: InputSpec, hidden: int) -> None:
        super().__init__()
        if spec.kind != "tokens":
            raise ValueError(f"TokenEmbedding reads tokens, but the spec is for {spec.kind}")
        self.spec = spec
        self.embeddings = nn.ModuleList(nn.Embedding(n, hidden) for n in spec.codebook_sizes)

    def forward(self, codes: Sequence[Tensor], level_lengths: Tensor) -> Tensor:
        """``codes``: one ``[B, T'_l]`` per level; ``level_lengths``: ``[B, L]`` -> ``[B, F, H]``."""
        frames = codes[self.spec.finest].shape[1]
        embedded = [
            table(codes[level].gather(1, self.nearest_index(level, frames, level_lengths[:, level])))  # [B, F, H]
            for level, table in enumerate(self.embeddings)
        ]
        return torch.stack(embedded).sum(0)

    def nearest_index(self, level: int, frames: int, lengths: Tensor) -> Tensor:
        """``[B, F]``: which code of ``level`` each finest-rate frame reads, for items of ``lengths`` ``[B]`` codes."""
        f = torch.arange(frames, dtype=torch.float64)  # float64: exact floors for rate ratios such as 2/3
        index = torch.floor(f * self.spec.frame_rates[level] / self.spec.frame_rate).long()  # [F]
        last = (lengths - 1).clamp(min=0)  # [B]
        return torch.minimum(index.to(lengths.device)[None, :], last[:, None])  # [B, F]


class FeatureProjection(nn.Module):
    """LayerNorm over the feature dimension, then a linear map to the head's width."""

    def __init__(self, spec: InputSpec, hidden: int) -> None:
        super().__init__()
        if spec.kind != "features":
            raise ValueError(f"FeatureProjection reads features, but the spec is for {spec.kind}")
        self.norm = nn.LayerNorm(spec.dim)
        self.proj = nn.Linear(spec.dim, hidden)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, T', D]`` -> ``[B, T', H]``."""
        return self.proj(self.norm(x))


@dataclass(frozen=True)
class ProbeConfig(Config):
    """The head's size and its training recipe (the same for every tokenizer, so probes compare inputs)."""

    hidden: int = 128  # H: LSTM output width, hidden / 2 per direction
    lstm_layers: int = 2  # bidirectional
    dropout: float = 0.1  # on the input embedding and between LSTM layers
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-4
    max_frames: int = 1500  # classification training crops longer items at random; evaluation sees whole items
    pooling: str = "attention"  # "attention" (learnt weights over valid frames) or "mean"
    downsample: int = 1  # input frames averaged in groups of this many before the LSTM (fewer sequential steps)

    def __post_init__(self) -> None:
        if self.hidden < 2 or self.hidden % 2:
            raise ValueError(f"hidden must be an even number >= 2 (split over two directions), got {self.hidden}")
        if min(self.lstm_layers, self.epochs, self.batch_size, self.max_frames, self.downsample) < 1:
            raise ValueError(f"lstm_layers, epochs, batch_size, max_frames and downsample must be >= 1, got {self}")
        if not 0 <= self.dropout < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"need 0 <= dropout < 1, lr > 0 and weight_decay >= 0, got {self}")
        if self.pooling not in ("attention", "mean"):
            raise ValueError(f"pooling must be 'attention' or 'mean', got {self.pooling!r}")


#: the probe both benchmarks use (benchmarks/dasb.py, benchmarks/semantic_study.py), fixed before any run: small
#: enough that 3 seeds x 6 tasks x several tokenizers train on 2 CPU cores in about an hour (one BiLSTM layer over
#: frames averaged in pairs, 2 s training crops for classification, 15 epochs)
BENCHMARK_PROBE = ProbeConfig(
    hidden=128, lstm_layers=1, downsample=2, max_frames=100, batch_size=32, lr=2e-3, epochs=15
)


class ProbeHead(nn.Module):
    """Input module -> dropout -> BiLSTM -> a class per item (``classify``) or per-frame CTC log-probs (``ctc``).

    ``classify`` returns logits ``[B, C]`` with ``C = num_outputs``; ``ctc`` returns log-probabilities
    ``[B, F, C + 1]`` where index 0 is the blank and ``1..C`` the characters.
    """

    def __init__(
        self, spec: InputSpec, num_outputs: int, kind: Literal["classify", "ctc"], config: ProbeConfig | None = None
    ) -> None:
        super().__init__()
        config = config or ProbeConfig()
        if kind not in ("classify", "ctc") or num_outputs < 1:
            raise ValueError(f"kind must be 'classify' or 'ctc' and num_outputs >= 1, got {kind!r}, {num_outputs}")
        self.spec, self.kind, self.config = spec, kind, config
        self.embed: nn.Module = (
            TokenEmbedding(spec, config.hidden) if spec.kind == "tokens" else FeatureProjection(spec, config.hidden)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.hidden,
            config.hidden // 2,
            num_layers=config.lstm_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.lstm_layers > 1 else 0.0,
        )
        self.attention = nn.Linear(config.hidden, 1) if kind == "classify" and config.pooling == "attention" else None
        self.out = nn.Linear(config.hidden, num_outputs + 1 if kind == "ctc" else num_outputs)  # ctc: + blank

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Valid output frames ``[B]`` (CTC) for ``lengths [B]`` input frames: ``ceil(lengths / downsample)``."""
        return -(-lengths // self.config.downsample)

    def forward(self, batch: ProbeBatch) -> Tensor:
        if self.spec.kind == "tokens":
            x = self.embed(batch.inputs, batch.level_lengths)  # [B, F, H]
        else:
            x = self.embed(batch.inputs[0])  # [B, F, H]
        x, lengths = self._downsample(x, batch.lengths.to(x.device))  # [B, F / r, H]
        frames = x.shape[1]
        packed = pack_padded_sequence(self.dropout(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=frames)  # [B, F, H]
        if self.kind == "ctc":
            return self.out(y).log_softmax(-1)  # [B, F, C + 1]
        valid = torch.arange(frames, device=y.device)[None, :] < lengths[:, None]  # [B, F]
        if self.attention is not None:
            scores = self.attention(y).squeeze(-1).masked_fill(~valid, float("-inf"))  # [B, F]
            weights = scores.softmax(-1)
        else:
            weights = valid.float() / valid.sum(-1, keepdim=True)
        pooled = torch.einsum("bf,bfh->bh", weights, y)  # [B, H]
        return self.out(pooled)  # [B, C]

    def _downsample(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Mean of each group of ``downsample`` frames, over the item's valid frames only (padding never leaks in)."""
        r = self.config.downsample
        if r == 1:
            return x, lengths
        batch, frames, hidden = x.shape
        valid = (torch.arange(frames, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)  # [B, F]
        pad = -frames % r
        sums = F.pad(x * valid[..., None], (0, 0, 0, pad)).reshape(batch, -1, r, hidden).sum(2)  # [B, F / r, H]
        counts = F.pad(valid, (0, pad)).reshape(batch, -1, r).sum(2).clamp(min=1)  # [B, F / r]
        return sums / counts[..., None], self.output_lengths(lengths)
