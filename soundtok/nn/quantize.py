"""Vector quantizers: one codebook (:class:`VectorQuantizer`) and a residual stack (:class:`ResidualVectorQuantizer`).

Shapes: B batch items, D feature dimension, T' frames, K levels (codebooks), V entries per codebook,
d the search space (``codebook_dim`` when factorised, else D), N = B * T' vectors.

Defaults follow DAC: *factorised* codes (a 1x1 conv projects D -> d, nearest neighbour by cosine similarity
between the l2-normalised projection and the l2-normalised codebook, a 1x1 conv projects the code back to D),
codebook learnt by gradient, quantizer dropout. EMA codebooks (EnCodec, VQ-VAE-2) and plain Euclidean codebooks
in D are one flag away. Search, losses and statistics always run in fp32, outside autocast; outputs are fp32.

Gradients (training):

* the input gets the identity (straight-through): ``d quantized / d x == I`` exactly, so an encoder before the
  quantizer is trained as if the quantizer were not there;
* the projections get DAC's latent straight-through, fed from a detached input: the loss after the quantizer
  trains ``in_proj`` and ``out_proj`` exactly as in DAC;
* the codebook gets only the codebook loss (or, with ``ema=True``, no gradient: EMA means of its vectors);
* ``commit_loss`` pulls the (projected) input towards its codes and is the only loss the encoder sees from here.

Losses come back already weighted (``commitment``, ``codebook_weight``): add both to the objective.

>>> import torch
>>> rvq = ResidualVectorQuantizer(RVQConfig(dim=16, num_quantizers=4, codebook_size=32)).eval()
>>> x = torch.randn(2, 16, 10)  # [B, D, T']
>>> codes = rvq.encode(x, n_q=2)  # [B, 2, T']: a lower bitrate than all 4 levels
>>> codes.shape
torch.Size([2, 2, 10])
>>> torch.equal(rvq.decode(codes), rvq(x, n_q=2).quantized)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from soundtok.config import Config


@dataclass(frozen=True)
class VQConfig(Config):
    """One codebook."""

    dim: int  # D: features in and out
    codebook_size: int = 1024  # V: codes lie in [0, V)
    codebook_dim: int = 8  # d, the search space when factorised; ignored otherwise (the search runs in D)
    factorised: bool = True  # project D -> d, cosine search, project back (DAC); else Euclidean search in D
    # factorised only: the projected input and the code are l2-normalised for the losses and the output too, not
    # only for the search, and a ResidualVectorQuantizer scales each input frame to unit RMS first (without that
    # the encoder's output length changes no value and drifted to 1e18). It bounds the codebook and commitment
    # losses, which grew until DAC's codes diverged in a CPU run; but there every frame then fell on 1-4 codes per
    # level, so codec-16k uses EMA Euclidean codes instead (benchmarks/codebook_practices.py compares them)
    unit_codes: bool = False
    weight_norm: bool = True  # weight-normalised projections, as DAC's WNConv1d
    ema: bool = False  # codebook = EMA mean of the vectors each entry was chosen for, not learnt by gradient
    ema_decay: float = 0.99  # of the EMA codebook and of the usage statistics
    commitment: float = 0.25  # beta, the weight of commit_loss
    codebook_weight: float = 1.0  # the weight of codebook_loss (which is 0 under ema)
    kmeans_init: bool = True  # the first training batch initialises the codebook by k-means
    kmeans_iters: int = 10
    # restart an entry whose EMA usage falls below this fraction of a uniform share (usage.mean()); 0 = never
    dead_code_threshold: float = 0.02

    def __post_init__(self) -> None:
        if self.dim < 1 or self.codebook_dim < 1:
            raise ValueError(f"dim and codebook_dim must be positive, got {self.dim} and {self.codebook_dim}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1), e.g. 0.99; got {self.ema_decay}")
        if self.commitment < 0 or self.codebook_weight < 0:
            raise ValueError(
                f"loss weights must be non-negative, got commitment={self.commitment}, "
                f"codebook_weight={self.codebook_weight}"
            )
        if self.unit_codes and not self.factorised:
            raise ValueError("unit_codes needs factorised=True (l2-normalised codes are searched by cosine)")
        if self.kmeans_iters < 1:
            raise ValueError(f"kmeans_iters must be at least 1 (or set kmeans_init=False), got {self.kmeans_iters}")
        if not 0.0 <= self.dead_code_threshold < 1.0:
            raise ValueError(
                f"dead_code_threshold is a fraction of a uniform share, in [0, 1) (0 disables restarts); "
                f"got {self.dead_code_threshold}"
            )


@dataclass(frozen=True)
class RVQConfig(VQConfig):
    """``num_quantizers`` codebooks (all configured alike) on successive residuals."""

    num_quantizers: int = 8  # K
    quantizer_dropout: float = 0.5  # per item and training batch: the chance it uses only n ~ U{1..K} levels

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_quantizers < 1:
            raise ValueError(f"num_quantizers must be at least 1, got {self.num_quantizers}")
        if not 0.0 <= self.quantizer_dropout <= 1.0:
            raise ValueError(f"quantizer_dropout is a probability in [0, 1], got {self.quantizer_dropout}")


@dataclass
class QuantizerOutput:
    """What a quantizer's forward returns, whatever its flags."""

    quantized: Tensor  # [B, D, T'] fp32; its gradient wrt the input is the identity
    codes: Tensor  # [B, K, T'] int64; -1 where an item dropped that level (training with quantizer dropout)
    commit_loss: Tensor  # scalar, weighted by `commitment`
    codebook_loss: Tensor  # scalar, weighted by `codebook_weight`; 0 for EMA codebooks
    num_quantizers: int  # K, the levels run (items may have used fewer under dropout)


@dataclass
class _Level:
    """One codebook's result before the straight-through estimator."""

    value: Tensor  # [B, D, T'] decoded codes, detached
    grad_path: Tensor | None  # [B, D, T'] zeros whose gradient trains the projections (None: nothing to train)
    codes: Tensor  # [B, T']
    commit: Tensor  # [B] unweighted, per item
    codebook: Tensor  # [B] unweighted, per item


class VectorQuantizer(nn.Module):
    """One codebook of ``codebook_size`` entries over features ``[B, D, T']``.

    Codebook hygiene, in training mode only: the first batch initialises the codebook by k-means (flagged by
    the ``initialised`` buffer, so a reloaded model does not redo it); ``usage`` keeps an EMA of how many
    vectors per batch chose each entry, and entries below ``dead_code_threshold * usage.mean()`` are restarted
    on random vectors of the current batch (counted in ``num_replaced``, which is not saved).
    """

    codebook: Tensor  # [V, d]: a Parameter, or a buffer under ema
    usage: Tensor  # [V] EMA of per-batch counts; only ratios matter, so it starts at 0
    embed_sum: Tensor  # [V, d] EMA of per-batch sums of the vectors each entry was chosen for (ema only)
    initialised: Tensor  # bool scalar: k-means initialisation done
    num_replaced: Tensor  # int64 scalar: entries restarted since construction

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        self.cosine = config.factorised
        search_dim = config.codebook_dim if config.factorised else config.dim
        self.in_proj = _projection(config.dim, search_dim, config.weight_norm) if config.factorised else None
        self.out_proj = _projection(search_dim, config.dim, config.weight_norm) if config.factorised else None
        codebook = torch.randn(config.codebook_size, search_dim)
        if config.ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("embed_sum", torch.zeros_like(codebook))
        else:
            self.codebook = nn.Parameter(codebook)
        self.register_buffer("usage", torch.zeros(config.codebook_size))
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer("num_replaced", torch.tensor(0), persistent=False)
        self._known_initialised: bool | None = None  # host copy of `initialised`, so training never syncs on it
        self.register_load_state_dict_post_hook(_forget_initialised)

    def extra_repr(self) -> str:
        c = self.config
        search = f"cosine in {c.codebook_dim}" if c.factorised else f"euclidean in {c.dim}"
        return f"dim={c.dim}, codebook_size={c.codebook_size}, search={search}, ema={c.ema}"

    # ----------------------------------------------------------------------------------------------------
    # public API
    def forward(self, x: Tensor) -> QuantizerOutput:
        """Quantize ``x [B, D, T']``; in training mode also update the codebook statistics."""
        _check_features(x, self.config.dim)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            level = self._quantize(x, torch.arange(x.shape[0]) if self.training else None)
            quantized = _straight_through(x, level.value, level.grad_path)
        return QuantizerOutput(
            quantized=quantized,
            codes=level.codes[:, None],  # [B, 1, T']
            commit_loss=level.commit.mean() * self.config.commitment,
            codebook_loss=level.codebook.mean() * self.config.codebook_weight,
            num_quantizers=1,
        )

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Codes ``[B, T']`` of ``x [B, D, T']``. Pure: never updates statistics, even in training mode."""
        _check_features(x, self.config.dim)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._search(x.float())

    @torch.no_grad()
    def code_vectors(self) -> Tensor:
        """``[V, D]`` float32: the vector of every code, as :meth:`decode` gives it."""
        return self._project_out(self._unit(self.codebook.float())).detach().clone()

    def decode(self, codes: Tensor) -> Tensor:
        """Vectors ``[B, D, T']`` for ``codes [B, T']``: what forward outputs for those codes in eval mode.

        A code of -1 (a level dropped under quantizer dropout) decodes to zeros.
        """
        _check_codes(codes, 2, self.config.codebook_size)
        with torch.autocast(device_type=codes.device.type, enabled=False):
            return self._decode(codes.long())

    # ----------------------------------------------------------------------------------------------------
    # the steps, shared with ResidualVectorQuantizer (inputs are fp32, autocast is off)
    def _quantize(self, x: Tensor, items: Tensor | None) -> _Level:
        """Quantize ``x [B, D, T']``; the vectors of batch ``items`` (a CPU index, None outside training)
        initialise and update the codebook statistics."""
        batch, frames = x.shape[0], x.shape[2]
        rows = _frames_to_rows(x)  # [N, D]
        z = self._unit(self._project_in(rows)).view(batch, frames, -1)  # [B, T', d]; commit_loss's gradient to x
        train_rows = None
        if items is not None and len(items):
            train_rows = z.detach()[items.to(x.device)].flatten(0, 1)  # [n, d]
            if self.config.kmeans_init and self._needs_init():
                self._kmeans_init(train_rows)
        with torch.no_grad():
            codes = _nearest(z.detach().flatten(0, 1), self.codebook.float(), self.cosine).view(batch, frames)
        z_q = self._unit(F.embedding(codes, self.codebook.float()))  # [B, T', d]; carries codebook_loss's gradient
        commit = (z - z_q.detach()).pow(2).mean(dim=(1, 2))  # [B]
        if self.config.ema:
            codebook_loss = z.new_zeros(batch)
        else:
            codebook_loss = (z_q - z.detach()).pow(2).mean(dim=(1, 2))  # [B]
        with torch.no_grad():
            value = self._decode(codes)  # [B, D, T']
        grad_path = None
        if self.in_proj is not None and torch.is_grad_enabled():
            z_detached = self._unit(self._project_in(rows.detach())).view(batch, frames, -1)  # [B, T', d]; none to x
            projected = self._project_out(z_detached + (z_q - z_detached).detach())  # DAC's latent straight-through
            grad_path = (projected - projected.detach()).transpose(1, 2)  # [B, D, T'], exactly 0
        if train_rows is not None and items is not None:
            self._update_statistics(train_rows, codes[items.to(x.device)].flatten())
        return _Level(value, grad_path, codes, commit, codebook_loss)

    def _search(self, x: Tensor) -> Tensor:
        z = self._project_in(_frames_to_rows(x))  # [N, d]
        return _nearest(z, self.codebook.float(), self.cosine).view(x.shape[0], x.shape[2])  # [B, T']

    def _decode(self, codes: Tensor) -> Tensor:
        # a lookup in the decoded codebook: each frame's vector is independent of the batch, bit for bit
        table = self._project_out(self._unit(self.codebook.float()))  # [V, D]
        vectors = F.embedding(codes.clamp(min=0), table) * (codes >= 0)[..., None]  # [B, T', D]; -1 -> 0
        return vectors.transpose(1, 2)  # [B, D, T']

    def _project_in(self, rows: Tensor) -> Tensor:
        return rows if self.in_proj is None else cast(Tensor, self.in_proj(rows))

    def _unit(self, rows: Tensor) -> Tensor:
        return F.normalize(rows, dim=-1) if self.config.unit_codes else rows

    def _project_out(self, rows: Tensor) -> Tensor:
        return rows if self.out_proj is None else cast(Tensor, self.out_proj(rows))

    # ----------------------------------------------------------------------------------------------------
    # codebook hygiene (training mode only)
    def _needs_init(self) -> bool:
        if self._known_initialised is None:
            self._known_initialised = bool(self.initialised)
        return not self._known_initialised

    @torch.no_grad()
    def _kmeans_init(self, rows: Tensor) -> None:
        centroids = _kmeans(rows, self.config.codebook_size, self.config.kmeans_iters, self.cosine)  # [V, d]
        self.codebook.copy_(centroids)
        self.initialised.fill_(True)
        self._known_initialised = True

    @torch.no_grad()
    def _update_statistics(self, rows: Tensor, codes: Tensor) -> None:
        """``rows [N, d]``: this batch's training vectors in the search space; ``codes [N]``: their entries."""
        decay = self.config.ema_decay
        counts = torch.zeros_like(self.usage).index_add_(0, codes, torch.ones_like(rows[:, 0]))  # [V]
        self.usage.mul_(decay).add_(counts, alpha=1 - decay)
        if self.config.ema:
            sums = torch.zeros_like(self.embed_sum).index_add_(0, codes, rows)  # [V, d]
            self.embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
            seen = (self.usage > 1e-12)[:, None]  # entries never chosen keep their vector
            self.codebook.copy_(torch.where(seen, self.embed_sum / self.usage.clamp_min(1e-12)[:, None], self.codebook))
        if self.config.dead_code_threshold > 0:
            self._restart_dead_codes(rows)

    @torch.no_grad()
    def _restart_dead_codes(self, rows: Tensor) -> None:
        share = self.usage.mean()  # the usage of an entry in a uniformly used codebook
        dead = self.usage < self.config.dead_code_threshold * share  # [V]
        samples = rows[torch.randint(rows.shape[0], (self.config.codebook_size,), device=rows.device)]  # [V, d]
        self.codebook.copy_(torch.where(dead[:, None], samples, self.codebook))
        self.usage.copy_(torch.where(dead, share, self.usage))  # a uniform share: a grace period before judged again
        if self.config.ema:
            self.embed_sum.copy_(torch.where(dead[:, None], samples * share, self.embed_sum))
        self.num_replaced += dead.sum()


class ResidualVectorQuantizer(nn.Module):
    """``num_quantizers`` codebooks; level ``i`` quantizes what levels ``0..i-1`` left over.

    Decoding the first ``n`` levels of the codes gives a coarser reconstruction at ``n / K`` of the bitrate.
    Quantizer dropout (training only) trains every prefix: each item, with probability ``quantizer_dropout``,
    uses only its first ``n ~ U{1..n_q}`` levels; its codes at the other levels are -1 and contribute nothing.
    Every level is still computed for every item (so every parameter gets a gradient, as DDP wants), but only
    the items that use a level count in its losses and statistics.
    """

    def __init__(self, config: RVQConfig) -> None:
        super().__init__()
        self.config = config
        self.quantizers = nn.ModuleList(VectorQuantizer(config) for _ in range(config.num_quantizers))

    @property
    def num_quantizers(self) -> int:
        return self.config.num_quantizers

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def level(self, i: int) -> VectorQuantizer:
        return cast(VectorQuantizer, self.quantizers[i])

    def forward(self, x: Tensor, n_q: int | None = None) -> QuantizerOutput:
        """Quantize ``x [B, D, T']`` with the first ``n_q`` levels (default all).

        Losses: for each item, the sum over the levels it used of that level's mean squared error; averaged
        over the batch (an item that dropped a level adds 0 to it, as in DAC); then weighted.
        """
        n_q = self._check_levels(n_q)
        _check_features(x, self.config.dim)
        levels_used = self._levels_per_item(x.shape[0], n_q)  # [B] on the CPU
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = self._scaled(x.float())
            residual = x  # its gradient wrt x (as scaled) is the identity: earlier levels' values are detached
            total = torch.zeros_like(x)  # [B, D, T'] sum of the values of the levels each item uses
            grad_path: Tensor | None = None
            codes, commit, codebook_loss = [], x.new_zeros(()), x.new_zeros(())
            for i in range(n_q):
                uses = levels_used > i  # [B] on the CPU
                level = self.level(i)._quantize(residual, uses.nonzero().flatten() if self.training else None)
                mask = uses.to(x.device)  # [B]
                total = total + level.value * mask[:, None, None]
                if level.grad_path is not None:
                    masked = level.grad_path * mask[:, None, None]
                    grad_path = masked if grad_path is None else grad_path + masked
                residual = residual - level.value
                commit = commit + (level.commit * mask).mean()
                codebook_loss = codebook_loss + (level.codebook * mask).mean()
                codes.append(torch.where(mask[:, None], level.codes, -1))  # [B, T']
            quantized = _straight_through(x, total, grad_path)
        return QuantizerOutput(
            quantized=quantized,
            codes=torch.stack(codes, dim=1),  # [B, n_q, T']
            commit_loss=commit * self.config.commitment,
            codebook_loss=codebook_loss * self.config.codebook_weight,
            num_quantizers=n_q,
        )

    @torch.no_grad()
    def encode(self, x: Tensor, n_q: int | None = None) -> Tensor:
        """Codes ``[B, n_q, T']`` of ``x [B, D, T']``. Pure: no dropout and no statistics, in any mode."""
        n_q = self._check_levels(n_q)
        _check_features(x, self.config.dim)
        with torch.autocast(device_type=x.device.type, enabled=False):
            residual = self._scaled(x.float())
            codes = []
            for i in range(n_q):
                level_codes = self.level(i)._search(residual)  # [B, T']
                residual = residual - self.level(i)._decode(level_codes)
                codes.append(level_codes)
            return torch.stack(codes, dim=1)  # [B, n_q, T']

    def decode(self, codes: Tensor) -> Tensor:
        """``[B, D, T']`` from ``codes [B, n, T']``: the sum of the first ``n`` levels' vectors (``n <= K``).

        Equals forward's ``quantized`` for the same codes (-1 codes, from dropout, contribute nothing).
        """
        _check_codes(codes, 3, self.config.codebook_size)
        self._check_levels(codes.shape[1])
        codes = codes.long()
        with torch.autocast(device_type=codes.device.type, enabled=False):
            total = torch.zeros(codes.shape[0], self.config.dim, codes.shape[2], device=codes.device)  # [B, D, T']
            for i in range(codes.shape[1]):
                total = total + self.level(i)._decode(codes[:, i])
            return total

    def _scaled(self, x: Tensor) -> Tensor:
        """``x [B, D, T']`` with each frame at unit RMS under ``unit_codes`` (so its length cannot drift), else x."""
        if not self.config.unit_codes:
            return x
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)

    def _check_levels(self, n_q: int | None) -> int:
        k = self.config.num_quantizers
        if n_q is None:
            return k
        if not 1 <= n_q <= k:
            raise ValueError(f"n_q must lie in [1, {k}] (this quantizer has {k} levels), got {n_q}")
        return n_q

    def _levels_per_item(self, batch: int, n_q: int) -> Tensor:
        levels = torch.full((batch,), n_q)  # [B]
        if self.training and self.config.quantizer_dropout > 0:
            dropped = torch.rand(batch) < self.config.quantizer_dropout
            levels = torch.where(dropped, torch.randint(1, n_q + 1, (batch,)), levels)
        return levels


# --------------------------------------------------------------------------------------------------------
# helpers
def _projection(features_in: int, features_out: int, normalised: bool) -> nn.Module:
    """A 1x1 convolution, written as a linear map of each frame's vector (DAC's WNConv1d when normalised)."""
    linear = nn.Linear(features_in, features_out)
    return weight_norm(linear) if normalised else linear


def _forget_initialised(module: nn.Module, incompatible_keys: Any) -> None:
    cast(VectorQuantizer, module)._known_initialised = None  # re-read the loaded buffer on the next batch


def _straight_through(x: Tensor, value: Tensor, grad_path: Tensor | None) -> Tensor:
    """``value`` exactly, with ``d / d x == I`` and ``grad_path``'s gradients (its value is exactly 0)."""
    out = value.detach() + (x - x.detach())
    return out if grad_path is None else out + grad_path


def _frames_to_rows(z: Tensor) -> Tensor:
    return z.transpose(1, 2).reshape(-1, z.shape[1])  # [B, F, T'] -> [B * T', F]


def _nearest(rows: Tensor, codebook: Tensor, cosine: bool) -> Tensor:
    """Index ``[N]`` of the nearest entry of ``codebook [V, d]`` to each of ``rows [N, d]``."""
    if cosine:
        scores = F.normalize(rows, dim=-1) @ F.normalize(codebook, dim=-1).T  # [N, V] cosine similarity
    else:
        scores = 2 * rows @ codebook.T - codebook.pow(2).sum(dim=-1)  # [N, V] = |x|^2 - |x - c|^2
    return scores.argmax(dim=-1)


def _kmeans(rows: Tensor, k: int, iters: int, cosine: bool) -> Tensor:
    """``k`` centroids ``[k, d]`` of ``rows [N, d]`` (Lloyd), assigning as the search does; empty ones stay put."""
    n = rows.shape[0]
    if n >= k:
        start = torch.randperm(n, device=rows.device)[:k]
    else:
        start = torch.randint(n, (k,), device=rows.device)
    centroids = rows[start]  # [k, d]
    for _ in range(iters):
        assign = _nearest(rows, centroids, cosine)  # [N]
        counts = torch.zeros(k, device=rows.device).index_add_(0, assign, torch.ones_like(rows[:, 0]))  # [k]
        sums = torch.zeros_like(centroids).index_add_(0, assign, rows)  # [k, d]
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
    return centroids


def _check_features(x: Tensor, dim: int) -> None:
    if x.ndim != 3 or x.shape[1] != dim or not x.is_floating_point():
        raise ValueError(
            f"expected float features shaped [B, D={dim}, T'], got {x.dtype} {tuple(x.shape)}; "
            "features go on dim 1 (use x.transpose(1, 2) for [B, T', D])"
        )


def _check_codes(codes: Tensor, ndim: int, size: int) -> None:
    want = "[B, T']" if ndim == 2 else "[B, n, T']"
    if codes.ndim != ndim or codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise ValueError(f"expected integer codes shaped {want}, got {codes.dtype} {tuple(codes.shape)}")
    if codes.numel() and (int(codes.min()) < -1 or int(codes.max()) >= size):
        raise ValueError(
            f"codes must lie in [0, {size}) (or be -1 for a dropped level), got values in "
            f"[{int(codes.min())}, {int(codes.max())}]; were they made by a quantizer of another size?"
        )
