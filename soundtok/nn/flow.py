"""The flow-matching decoder of the latent families (``msn``, ``semantic``): a DiT over latent frames, its training
objective (CFM or MSE) and its seeded ODE sampler.

Shapes: B batch items, D latent channels, F latent frames, E model width.

**Network.** Each latent frame gets a condition: the vector of the token it belongs to (the family decides which:
MSN repeats a token over its ``K`` frames, semantic units pick the unit under the frame's centre), projected, plus
a learnt embedding of the frame's *phase*, its position inside its token (``0 .. phases - 1``). The condition is
concatenated with the current state ``x_t`` and projected to ``E``; a transformer whose attention sees ``window``
frames on each side (:class:`~soundtok.nn.transformer.BandTransformer`), with adaLN-Zero conditioning on the flow
time ``t`` in every block, predicts a velocity ``[B, D, F]``.

**Objectives** (``objective``), over valid frames only, per element of ``[D, F]``:

* ``"cfm"``, conditional flow matching on the straight (OT) path: ``x0 ~ N(0, I)``, ``x1`` the target latents,
  ``t ~ U(0, 1)`` per item, ``x_t = (1 - (1 - sigma_min) t) x0 + t x1``, target velocity
  ``u = x1 - (1 - sigma_min) x0``; loss ``mean((v(x_t, t, c) - u)^2)``. For classifier-free guidance the condition
  ``c`` is replaced by a learnt null vector with probability ``cfg_dropout`` per item.
* ``"mse"``, the baseline: the same backbone given ``x_t = 0`` and ``t = 0``, predicting ``x1`` directly; loss
  ``mean((v - x1)^2)``.

**Sampling** (``cfm``): integrate ``dx/dt = v`` from ``x0`` at ``t = 0`` to ``t = 1`` with ``steps`` steps of
``euler`` or ``midpoint`` (two evaluations per step); with guidance ``w != 1`` each evaluation is
``v = v_u + w (v_c - v_u)``. ``x0`` is drawn per item from a generator seeded with ``seed``, for the whole item
(``randn(F_b, D)``, :meth:`FlowDecoder.initial_noise`), and windows slice it: the result depends on neither the
batch nor the windowing. One network pass reaches :attr:`FlowDecoder.reach` frames on each side; a sample reaches
:meth:`FlowDecoder.passes` times that.

>>> import torch
>>> decoder = FlowDecoder(FlowDecoderConfig(latent_dim=4, dim=16, heads=2, layers=1, window=2))
>>> frames, lengths = torch.randn(1, 10, 16), torch.tensor([10])  # [B, F, E] one token vector per frame
>>> phase = torch.zeros(10, dtype=torch.long)
>>> x0 = decoder.initial_noise(lengths, 10, SamplingConfig(steps=2))  # [B, D, F]
>>> decoder.sample(frames, phase, lengths, x0, SamplingConfig(steps=2)).shape
torch.Size([1, 4, 10])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn

from soundtok.config import Config
from soundtok.nn.transformer import BandTransformer, TimestepEmbedding, modulate

SOLVERS = ("euler", "midpoint")
OBJECTIVES = ("cfm", "mse")


@dataclass(frozen=True)
class SamplingConfig(Config):
    """How the CFM decoder is sampled (ignored by the MSE decoder, which is deterministic)."""

    solver: str = "midpoint"  # "euler" (1 network pass per step) or "midpoint" (2)
    steps: int = 8
    guidance: float = 1.0  # classifier-free guidance weight w; 1 = the conditional velocity alone
    seed: int = 0  # of the initial noise

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise ValueError(f"guidance must be a finite weight >= 0 (1 = no guidance), got {self.guidance}")

    @property
    def evaluations(self) -> int:
        """Network passes per sample (a guided pass counts once: it runs both halves side by side)."""
        return self.steps * (2 if self.solver == "midpoint" else 1)


@dataclass(frozen=True)
class FlowDecoderConfig(Config):
    """The decoder's network, objective and default sampling. A family's config produces it (``MSNConfig.
    flow_decoder()``, ``SemanticConfig.flow_decoder()``) from the fields its checkpoints have always recorded."""

    latent_dim: int = 80  # D: channels of the latents it predicts
    dim: int = 256  # E
    heads: int = 4
    mlp_ratio: float = 4.0
    layers: int = 6
    window: int = 8  # latent frames on each side each layer attends to
    phases: int = 1  # positions a frame can have inside its token (MSN: downsample; semantic: 1)
    objective: str = "cfm"  # "cfm" (flow matching) or "mse" (the baseline)
    sigma_min: float = 1e-4
    cfg_dropout: float = 0.1  # cfm: chance per training item that the condition is dropped
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"decoder must be 'cfm' or 'mse', got {self.objective!r}")
        for name in ("latent_dim", "dim", "heads", "layers", "window", "phases"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"the flow decoder's {name} must be a positive integer, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if not 0.0 <= self.cfg_dropout < 1.0 or not 0.0 <= self.sigma_min < 1.0 or self.mlp_ratio <= 0:
            raise ValueError(
                f"need 0 <= cfg_dropout < 1, 0 <= sigma_min < 1 and mlp_ratio > 0, got {self.cfg_dropout}, "
                f"{self.sigma_min}, {self.mlp_ratio}"
            )


class FlowDecoder(nn.Module):
    """The DiT: ``(x_t [B, D, F], t [B], condition [B, F, E])`` -> velocity (or latents) ``[B, D, F]``, with its
    objective (:meth:`loss`) and sampler (:meth:`sample`); see the module docstring."""

    def __init__(self, config: FlowDecoderConfig) -> None:
        super().__init__()
        c = self.config = config
        self.cond_proj = nn.Linear(c.dim, c.dim)
        self.phase = nn.Embedding(c.phases, c.dim)  # where a frame sits inside its token
        self.null = nn.Parameter(torch.zeros(c.dim)) if c.objective == "cfm" else None  # the dropped condition
        self.in_proj = nn.Linear(c.latent_dim + c.dim, c.dim)
        self.time = TimestepEmbedding(c.dim)
        self.transformer = BandTransformer(c.dim, c.layers, c.heads, c.window, c.window, c.mlp_ratio, conditioned=True)
        self.final_norm = nn.LayerNorm(c.dim, elementwise_affine=False, eps=1e-6)
        final = nn.Linear(c.dim, 2 * c.dim)
        self.final_modulation = nn.Sequential(nn.SiLU(), final)
        self.out = nn.Linear(c.dim, c.latent_dim)
        for layer in (final, self.out):  # adaLN-Zero: the network starts by predicting 0
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def reach(self) -> int:
        """Latent frames on each side that one pass's output frame depends on."""
        return self.transformer.reach[1]

    def passes(self, sampling: SamplingConfig) -> int:
        """Network passes one sample takes with ``sampling`` (the MSE decoder: one)."""
        return 1 if self.config.objective == "mse" else sampling.evaluations

    def condition(self, frame_vectors: Tensor, phase: Tensor, drop: Tensor | None = None) -> Tensor:
        """Per-frame token vectors ``[B, F, E]`` (each frame's token vector) and ``phase [F]`` (the frame's
        position inside its token, ``0..phases-1``) -> per-frame condition ``[B, F, E]``; items where
        ``drop [B]`` get the null vector instead."""
        cond = self.cond_proj(frame_vectors)
        if drop is not None:
            if self.null is None:
                raise ValueError("this decoder has no null condition (decoder='mse' trains no guidance)")
            cond = torch.where(drop[:, None, None], self.null.to(cond.dtype), cond)
        return cond + self.phase(phase)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor, frame_lengths: Tensor) -> Tensor:
        h = self.in_proj(torch.cat([x.transpose(1, 2), cond], dim=-1))  # [B, F, E]
        c = self.time(t)  # [B, E]
        h = self.transformer(h, frame_lengths, c)
        shift, scale = self.final_modulation(c)[:, None].chunk(2, dim=-1)  # [B, 1, E]
        return self.out(modulate(self.final_norm(h), shift, scale)).transpose(1, 2)  # [B, D, F]

    def loss(
        self,
        x1: Tensor,
        frame_vectors: Tensor,
        phase: Tensor,
        frame_lengths: Tensor,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor]:
        """The objective on target latents ``x1 [B, D, F]`` (zero after ``frame_lengths``) given each frame's
        token vector ``[B, F, E]`` and phase ``[F]``: (loss over valid frames, prediction ``[B, D, F]``). ``t``,
        ``x0`` and the condition dropout come from ``generator`` (CPU), in that order."""
        c = self.config
        batch, dim, frames = x1.shape
        if c.objective == "cfm":
            t = torch.rand(batch, generator=generator).to(x1.device)
            x0 = torch.randn(batch, frames, dim, generator=generator).transpose(1, 2).to(x1.device)  # [B, D, F]
            drop = (torch.rand(batch, generator=generator) < c.cfg_dropout).to(x1.device)
            tt = t[:, None, None]
            x_t = (1 - (1 - c.sigma_min) * tt) * x0 + tt * x1
            target = x1 - (1 - c.sigma_min) * x0
            prediction = self(x_t, t, self.condition(frame_vectors, phase, drop), frame_lengths)
        else:
            prediction = self.predict(self.condition(frame_vectors, phase), frame_lengths)
            target = x1
        valid = frame_mask(x1, frame_lengths)
        loss = ((prediction - target) ** 2 * valid).sum() / (valid.sum() * dim)
        return loss, prediction

    def initial_noise(self, frame_lengths: Tensor, frames: int, sampling: SamplingConfig) -> Tensor:
        """``x0 [B, D, frames]``: item ``b`` gets ``randn(F_b, D)`` from a generator seeded with the seed, zeros
        after; drawn on the CPU, so it is the same on every device, in every batch, for every windowing (the MSE
        decoder: zeros)."""
        batch, dim = frame_lengths.shape[0], self.config.latent_dim
        noise = torch.zeros(batch, dim, frames)
        if self.config.objective == "mse":
            return noise
        for b, n in enumerate(frame_lengths.tolist()):
            generator = torch.Generator().manual_seed(sampling.seed)
            noise[b, :, :n] = torch.randn(n, dim, generator=generator).T
        return noise

    def sample(
        self, frame_vectors: Tensor, phase: Tensor, frame_lengths: Tensor, x0: Tensor, sampling: SamplingConfig
    ) -> Tensor:
        """Latents ``[B, D, F]`` for each frame's token vector ``[B, F, E]`` and phase ``[F]``, from the initial
        state ``x0 [B, D, F]`` (:meth:`initial_noise`), integrated with ``sampling``."""
        cond = self.condition(frame_vectors, phase)
        if self.config.objective == "mse":
            return self.predict(cond, frame_lengths)
        s = sampling
        if s.guidance != 1.0:
            dropped = torch.ones(x0.shape[0], dtype=torch.bool, device=x0.device)
            null = self.condition(frame_vectors, phase, dropped)

        def velocity(x: Tensor, t: float) -> Tensor:
            times = torch.full((x.shape[0],), t, device=x.device)
            if s.guidance == 1.0:
                return cast(Tensor, self(x, times, cond, frame_lengths))
            both = self(torch.cat([x, x]), times.repeat(2), torch.cat([cond, null]), frame_lengths.repeat(2))
            v_c, v_u = both.chunk(2)  # [B, D, F] each
            return v_u + s.guidance * (v_c - v_u)

        x, dt = x0, 1.0 / s.steps
        for i in range(s.steps):
            t = i * dt
            if s.solver == "euler":
                x = x + dt * velocity(x, t)
            else:
                x = x + dt * velocity(x + 0.5 * dt * velocity(x, t), t + 0.5 * dt)
        return x

    def predict(self, cond: Tensor, frame_lengths: Tensor) -> Tensor:
        """The MSE decoder's one pass: latents ``[B, D, F]`` from the per-frame condition ``[B, F, E]`` with
        ``x_t = 0``, ``t = 0``."""
        batch, frames = cond.shape[0], cond.shape[1]
        zeros = cond.new_zeros(batch, self.config.latent_dim, frames)
        return cast(Tensor, self(zeros, cond.new_zeros(batch), cond, frame_lengths))


def frame_mask(x: Tensor, frame_lengths: Tensor | None) -> Tensor:
    """``[B, 1, F]`` float: 1 on each item's valid frames of ``x [B, D, F]``."""
    if frame_lengths is None:
        return x.new_ones(x.shape[0], 1, x.shape[-1])
    frames = torch.arange(x.shape[-1], device=x.device)
    return (frames[None, None, :] < frame_lengths.to(x.device)[:, None, None]).to(x.dtype)
