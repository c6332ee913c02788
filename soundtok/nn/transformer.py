"""Transformer blocks over frame sequences with banded (sliding-window) self-attention, and DiT conditioning.

Shapes: B batch items, F frames, D model width, H heads, d = D / H features per head, S keys per query block.

**Band attention.** Query frame ``i`` attends to key frames ``j`` with ``i - left <= j <= i + right`` (``right = 0``
is causal) that are valid (``j < lengths[b]``). Positions enter only through a learned bias per head and offset
``j - i`` (T5-style relative bias, no absolute position), so a frame's output depends only on the frames within
the band, wherever the sequence starts: running a window of a long sequence with enough context on both sides
gives the frames of the whole-sequence run (up to float rounding). ``L`` layers reach ``L * left`` frames back and
``L * right`` frames ahead (:attr:`BandTransformer.reach`).

Valid frames never see padding, so a batched item comes out as it would alone. Padding frames' outputs are
meaningless (each attends at least to itself, so nothing is NaN); callers mask them.

The attention is computed block by block (blocks of ``block`` queries, each against the ``block + left + right``
keys around it), so memory grows with ``F * (block + left + right)``, not ``F ** 2``: hour-long windows fit.

**DiT conditioning** (Peebles & Xie, 2023, "adaLN-Zero"): a block given a conditioning vector ``c [B, D]`` (e.g.
the embedding of the flow time ``t``) normalises without learnt affine parameters and applies a per-item shift,
scale and gate predicted from ``c``; the predicting layer starts at zero, so every block starts as the identity.

>>> import torch
>>> net = BandTransformer(dim=16, depth=2, heads=2, left=4, right=0)  # causal, 8 frames of history
>>> x = torch.randn(3, 50, 16)  # [B, F, D]
>>> net(x, torch.tensor([50, 20, 7])).shape
torch.Size([3, 50, 16])
>>> net.reach
(8, 0)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BandAttention(nn.Module):
    """Multi-head self-attention restricted to a band of ``left`` past and ``right`` future frames."""

    def __init__(self, dim: int, heads: int, left: int, right: int, block: int | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        if left < 0 or right < 0:
            raise ValueError(f"the band must not be negative, got left={left}, right={right}")
        self.heads, self.left, self.right = heads, left, right
        self.block = block or max(16, left + right)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.rel_bias = nn.Parameter(torch.zeros(heads, left + right + 1))  # [H, offsets -left..right]

    def extra_repr(self) -> str:
        return f"heads={self.heads}, left={self.left}, right={self.right}"

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``x [B, F, D]``, ``lengths [B]`` valid frames per item -> ``[B, F, D]``."""
        batch, frames, dim = x.shape
        h, bs, span = self.heads, self.block, self.block + self.left + self.right
        blocks = -(-frames // bs)
        q, k, v = self.qkv(x).view(batch, frames, 3, h, dim // h).permute(2, 0, 3, 1, 4)  # each [B, H, F, d]
        pad = blocks * bs - frames
        q = F.pad(q, (0, 0, 0, pad)).view(batch, h, blocks, bs, -1)  # [B, H, nb, bs, d]
        k, v = (F.pad(t, (0, 0, self.left, pad + self.right)).unfold(2, span, bs) for t in (k, v))  # [B, H, nb, d, S]
        scores = q @ k * (q.shape[-1] ** -0.5)  # [B, H, nb, bs, S]
        # query a of block n sits at n * bs + a; key c at n * bs - left + c: offset j - i = c - left - a
        a = torch.arange(bs, device=x.device)[:, None]
        c = torch.arange(span, device=x.device)[None, :]
        band = (c >= a) & (c <= a + self.left + self.right)  # [bs, S]
        scores = scores + self.rel_bias[:, (c - a).clamp(0, self.left + self.right)][:, None]  # [H, 1, bs, S]
        key_pos = torch.arange(blocks, device=x.device)[:, None] * bs - self.left + c  # [nb, S]
        valid = (key_pos >= 0) & (key_pos < lengths.to(x.device)[:, None, None])  # [B, nb, S]
        allowed = band & (valid[:, :, None, :] | (c == a + self.left))  # [B, nb, bs, S]; self always allowed
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        weights = scores.softmax(dim=-1)
        out = weights @ v.transpose(-1, -2)  # [B, H, nb, bs, d]
        out = out.reshape(batch, h, blocks * bs, -1)[:, :, :frames]  # [B, H, F, d]
        return self.out(out.transpose(1, 2).reshape(batch, frames, dim))


class TransformerBlock(nn.Module):
    """Pre-norm block: band attention and an MLP, each in a residual branch; adaLN-Zero when ``conditioned``."""

    def __init__(
        self, dim: int, heads: int, mlp_ratio: float, left: int, right: int, *, conditioned: bool = False
    ) -> None:
        super().__init__()
        self.conditioned = conditioned
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=not conditioned, eps=1e-6)
        self.attn = BandAttention(dim, heads, left, right)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=not conditioned, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.modulation: nn.Module | None = None
        if conditioned:
            predict = nn.Linear(dim, 6 * dim)
            nn.init.zeros_(predict.weight)  # adaLN-Zero: gates start at 0, the block at the identity
            nn.init.zeros_(predict.bias)
            self.modulation = nn.Sequential(nn.SiLU(), predict)

    def forward(self, x: Tensor, lengths: Tensor, cond: Tensor | None = None) -> Tensor:
        """``x [B, F, D]``, ``lengths [B]``, ``cond [B, D]`` (required iff conditioned) -> ``[B, F, D]``."""
        if self.modulation is None:
            x = x + self.attn(self.norm1(x), lengths)
            return x + self.mlp(self.norm2(x))
        if cond is None:
            raise ValueError("this block is conditioned (adaLN): pass cond [B, D]")
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond)[:, None].chunk(6, dim=-1)  # [B, 1, D]
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), lengths)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class BandTransformer(nn.Module):
    """``depth`` :class:`TransformerBlock` s with the same band; see the module docstring."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        left: int,
        right: int,
        mlp_ratio: float = 4.0,
        *,
        conditioned: bool = False,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio, left, right, conditioned=conditioned) for _ in range(depth)
        )
        self.left, self.right = left, right

    @property
    def reach(self) -> tuple[int, int]:
        """Frames (back, ahead) that one output frame depends on."""
        return len(self.layers) * self.left, len(self.layers) * self.right

    def forward(self, x: Tensor, lengths: Tensor, cond: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, lengths, cond)
        return x


class TimestepEmbedding(nn.Module):
    """Flow time ``t [B]`` in [0, 1] -> ``[B, D]``: sinusoidal features of ``1000 t``, then an MLP (DiT)."""

    def __init__(self, dim: int, frequencies: int = 256) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        half = self.frequencies // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        angles = 1000.0 * t.float()[:, None] * freqs[None]  # [B, half]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: ``x * (1 + scale) + shift`` (``shift``, ``scale`` broadcast over frames)."""
    return x * (1 + scale) + shift
