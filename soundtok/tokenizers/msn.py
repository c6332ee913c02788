"""The Make Some Noise tokenizer (``msn``): VQ on frozen continuous latents, a flow-matching DiT decoder.

After "Make Some Noise: Towards LLM audio reasoning and generation using sound tokens" (arXiv 2503.22275), adapted
to work offline: the frozen latent autoencoder is soundtok's log-mel + a mel vocoder (:mod:`soundtok.latent`; the
paper's Stable Audio Open VAE cannot be had offline), or a user's own autoencoder folder.

Shapes: B batch items, T samples, D latent channels (80 mels), F latent frames (62.5/s), K = ``downsample``,
T' = F / K tokens, E model width.

**Pipeline.** audio ``[B, T]`` -> frozen autoencoder -> latents ``[B, D, F]`` -> per-channel normalisation
(``(z - mean) / std``, statistics held as buffers, computed from training data before training) -> encoder ->
one VQ codebook -> tokens ``[B, T']`` -> decoder -> normalised latents -> de-normalised -> autoencoder's decoder
-> audio.

* **Encoder**: a linear projection ``D -> E``, a causal transformer over latent frames whose attention sees the
  ``encoder_window`` previous frames (:mod:`soundtok.nn.transformer`: bounded reach, relative positions), then
  temporal downsampling by ``K`` (the ``K`` frames of a token concatenated and projected ``K E -> E``). Token ``i``
  depends on latent frames ``< (i + 1) K`` only.
* **Quantizer**: one codebook of ``codebook_size`` (8192 = 13 bits) entries, :class:`~soundtok.nn.quantize.
  VectorQuantizer` with factorised l2-normalised codes, k-means init and dead-code restarts. With the defaults
  (16 kHz, hop 256, K = 3): one level with hop 768 samples, 20.83 tokens/s, 270.8 bit/s (the paper: ~0.23 kbit/s).
* **Decoder**: a DiT. Token vectors are repeated ``K`` times to the latent frame rate, a learnt embedding of the
  frame's position inside its token is added, and the result is concatenated with the current state ``x_t``
  and projected to ``E``; a transformer whose attention sees ``decoder_window`` frames on each side, with
  adaLN-Zero conditioning on the flow time ``t`` in every block, predicts a velocity ``[B, D, F]``.

**Objectives** (``decoder``), over valid frames only, per element of ``[D, F]``:

* ``"cfm"``, conditional flow matching on the straight (OT) path: ``x0 ~ N(0, I)``, ``x1`` the normalised
  latents, ``t ~ U(0, 1)`` per item, ``x_t = (1 - (1 - sigma_min) t) x0 + t x1``, target velocity
  ``u = x1 - (1 - sigma_min) x0``; loss ``mean((v(x_t, t, c) - u)^2)``. For classifier-free guidance the token
  condition ``c`` is replaced by a learnt null vector with probability ``cfg_dropout`` per item.
* ``"mse"``, the paper's baseline: the same backbone given ``x_t = 0`` and ``t = 0``, predicting ``x1`` directly;
  loss ``mean((v - x1)^2)``.

Plus the quantizer's commitment and codebook losses (weighted by ``commitment`` and ``codebook_weight``).

**Sampling** (``cfm``): integrate ``dx/dt = v`` from ``x0`` at ``t = 0`` to ``t = 1`` with ``steps`` steps of
``euler`` or ``midpoint`` (two evaluations per step); with guidance ``w != 1`` each evaluation is
``v = v_u + w (v_c - v_u)``. ``x0`` is drawn per item from a generator seeded with ``seed``, for the whole item
(``randn(F_b, D)``), and windows slice it: the audio depends on neither the batch nor the windowing. The sampling
settings (:class:`SamplingConfig`; :meth:`MSNTokenizer.set_sampling`) are part of the tokenizer's identity, since
they change the decoded audio: tokens made before a change must be re-encoded (or decoded with the old settings).

**Long inputs, batching.** The family windows long inputs itself (``window_seconds``, default 60 s) instead of
the base class's chunking (``default_chunk_seconds = None``; the ``chunk_seconds`` argument of encode/decode has
no effect here): encoding keeps ``encoder_layers x encoder_window`` frames of history (+ the autoencoder's
context) before each window; decoding keeps ``evaluations x decoder_layers x decoder_window`` frames on each side,
because every ODE step widens the reach of one network pass (16 Euler steps x 6 layers x 8 frames = 768 frames,
12.3 s). Windowed == whole and batched == one by one up to float rounding in attention: tests hold decoded
latents to ``atol=1e-4`` and codes exactly.

>>> import torch
>>> tok = MSNTokenizer(MSNConfig(vocoder="griffin-lim", dim=16, heads=2, encoder_layers=1, decoder_layers=1,
...                              codebook_size=64, sampling=SamplingConfig(steps=2)))
>>> tok.frame_rates, round(tok.bitrate, 1)
((20.833333333333332,), 125.0)
>>> tokens = tok.encode(torch.rand(1, 1, 8000) - 0.5, 16000)
>>> tokens.codes[0].shape, tok.decode(tokens).shape
(torch.Size([1, 11]), torch.Size([1, 1, 8000]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundtok.config import Config
from soundtok.errors import InvalidAudioError
from soundtok.latent import LatentAutoencoder, autoencoder_fingerprint, check_latents, resolve_autoencoder
from soundtok.nn.quantize import QuantizerOutput, VectorQuantizer, VQConfig
from soundtok.nn.transformer import BandTransformer, TimestepEmbedding, modulate
from soundtok.registry import CHECKPOINTS, Preset, register_family, register_preset
from soundtok.tokenizers.base import AudioTokenizer
from soundtok.types import LevelSpec

SOLVERS = ("euler", "midpoint")


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
class MSNConfig(Config):
    # the frozen latent autoencoder: "mel" (soundtok's log-mel + `vocoder`) or a folder (soundtok.latent)
    autoencoder: str = "mel"
    vocoder: str = "vocoder-16k"  # for "mel": a vocoder name (soundtok.vocoder.load_vocoder), "griffin-lim", a folder
    sample_rate: int = 16000  # these three must match the autoencoder's
    latent_hop: int = 256
    latent_dim: int = 80
    # tokens: one level at sample_rate / (latent_hop * downsample) tokens/s, log2(codebook_size) bits each
    downsample: int = 3
    codebook_size: int = 8192
    codebook_dim: int = 8  # factorised, l2-normalised codes (soundtok.nn.quantize.VQConfig)
    kmeans_init: bool = True
    dead_code_threshold: float = 0.02
    commitment: float = 0.25
    codebook_weight: float = 1.0
    # networks
    dim: int = 256
    heads: int = 4
    mlp_ratio: float = 4.0
    encoder_layers: int = 4
    encoder_window: int = 32  # previous latent frames each encoder layer attends to (causal)
    decoder_layers: int = 6
    decoder_window: int = 8  # latent frames on each side each decoder layer attends to
    # objective
    decoder: str = "cfm"  # "cfm" (flow matching) or "mse" (the baseline)
    sigma_min: float = 1e-4
    cfg_dropout: float = 0.1  # cfm: chance per training item that the token condition is dropped
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # the defaults a loaded tokenizer starts with

    def __post_init__(self) -> None:
        if self.decoder not in ("cfm", "mse"):
            raise ValueError(f"decoder must be 'cfm' or 'mse', got {self.decoder!r}")
        positive = ("sample_rate", "latent_hop", "latent_dim", "downsample", "dim", "heads", "encoder_layers")
        for name in (*positive, "decoder_layers", "encoder_window", "decoder_window", "codebook_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MSNConfig.{name} must be a positive integer, got {value!r}")
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if not 0.0 <= self.cfg_dropout < 1.0 or not 0.0 <= self.sigma_min < 1.0 or self.mlp_ratio <= 0:
            raise ValueError(
                f"need 0 <= cfg_dropout < 1, 0 <= sigma_min < 1 and mlp_ratio > 0, got {self.cfg_dropout}, "
                f"{self.sigma_min}, {self.mlp_ratio}"
            )

    @property
    def hop_length(self) -> int:
        """Samples per token."""
        return self.latent_hop * self.downsample

    def vq_config(self) -> VQConfig:
        return VQConfig(
            dim=self.dim,
            codebook_size=self.codebook_size,
            codebook_dim=self.codebook_dim,
            kmeans_init=self.kmeans_init,
            dead_code_threshold=self.dead_code_threshold,
            commitment=self.commitment,
            codebook_weight=self.codebook_weight,
        )


@dataclass
class MSNOutput:
    """One training pass (:meth:`MSNTokenizer.forward`)."""

    loss: Tensor  # scalar: the flow-matching (cfm) or reconstruction (mse) loss over valid frames
    prediction: Tensor  # [B, D, F] the predicted velocity (cfm) or latents (mse)
    quantized: QuantizerOutput  # codes [B, 1, T'] and the weighted commitment / codebook losses

    @property
    def total(self) -> Tensor:
        """What training minimises: the objective plus the quantizer's (already weighted) losses."""
        return self.loss + self.quantized.commit_loss + self.quantized.codebook_loss

    def scalars(self) -> dict[str, float]:
        return {
            "objective": float(self.loss.detach()),
            "commitment": float(self.quantized.commit_loss.detach()),
            "codebook": float(self.quantized.codebook_loss.detach()),
        }


@dataclass
class LatentReconstruction:
    """Audio through the tokenizer in latent space (:meth:`MSNTokenizer.reconstruct_latents`)."""

    target: Tensor  # [B, D, F] normalised latents of the audio
    rebuilt: Tensor  # [B, D, F] normalised latents decoded from its tokens
    frame_lengths: Tensor  # [B] valid latent frames per item
    codes: Tensor  # [B, T'] the tokens, zero after each item's
    token_lengths: Tensor  # [B]

    @property
    def error(self) -> Tensor:
        """``[B]`` latent reconstruction error: :func:`latent_mse` of ``rebuilt`` against ``target``."""
        return latent_mse(self.rebuilt, self.target, self.frame_lengths)


def latent_mse(rebuilt: Tensor, target: Tensor, frame_lengths: Tensor) -> Tensor:
    """The latent reconstruction error per item ``[B]``: the mean, over the item's valid frames and the D channels,
    of the squared difference between normalised latents ``[B, D, F]``. Predicting the training mean everywhere
    scores about 1 (the latents are normalised to unit variance per channel)."""
    squared = (rebuilt - target) ** 2 * _frame_mask(target, frame_lengths)
    return squared.sum(dim=(1, 2)) / (frame_lengths.to(target.device) * target.shape[1])


class LatentEncoder(nn.Module):
    """Normalised latents ``[B, D, F]`` -> token vectors ``[B, E, F / K]`` (causal, bounded history)."""

    def __init__(self, config: MSNConfig) -> None:
        super().__init__()
        c = config
        self.downsample = c.downsample
        self.in_proj = nn.Linear(c.latent_dim, c.dim)
        self.transformer = BandTransformer(c.dim, c.encoder_layers, c.heads, c.encoder_window, 0, c.mlp_ratio)
        self.norm = nn.LayerNorm(c.dim)
        self.down = nn.Linear(c.downsample * c.dim, c.dim)

    @property
    def history(self) -> int:
        """Latent frames before a token's own frames that its vector depends on."""
        return self.transformer.reach[0]

    def forward(self, latents: Tensor, frame_lengths: Tensor) -> Tensor:
        batch, _, frames = latents.shape
        h = self.transformer(self.in_proj(latents.transpose(1, 2)), frame_lengths)  # [B, F, E]
        h = self.norm(h).reshape(batch, frames // self.downsample, -1)  # [B, T', K E]
        return self.down(h).transpose(1, 2)  # [B, E, T']


class FlowDecoder(nn.Module):
    """The DiT: ``(x_t [B, D, F], t [B], token vectors [B, E, T'])`` -> velocity (or latents) ``[B, D, F]``."""

    def __init__(self, config: MSNConfig) -> None:
        super().__init__()
        c = config
        self.downsample = c.downsample
        self.cond_proj = nn.Linear(c.dim, c.dim)
        self.phase = nn.Embedding(c.downsample, c.dim)  # where a frame sits inside its token
        self.null = nn.Parameter(torch.zeros(c.dim)) if c.decoder == "cfm" else None  # the dropped condition
        self.in_proj = nn.Linear(c.latent_dim + c.dim, c.dim)
        self.time = TimestepEmbedding(c.dim)
        self.transformer = BandTransformer(
            c.dim, c.decoder_layers, c.heads, c.decoder_window, c.decoder_window, c.mlp_ratio, conditioned=True
        )
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

    def condition(self, frame_vectors: Tensor, phase: Tensor, drop: Tensor | None = None) -> Tensor:
        """Per-frame token vectors ``[B, F, E]`` (each frame's token vector) and ``phase [F]`` (the frame's
        position inside its token, ``0..downsample-1``) -> per-frame condition ``[B, F, E]``; items where
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


class LatentFlowTokenizer(AudioTokenizer):
    """What every tokenizer decoded by a :class:`FlowDecoder` into a frozen autoencoder's latents shares: the
    autoencoder, the latent normalisation, the CFM / MSE objective, seeded ODE sampling and windowed decoding.

    A subclass (:class:`MSNTokenizer`; the semantic family) builds ``self.decoder = FlowDecoder(flow)`` after its
    own encoder modules (so that a seeded init is the same as ever), and provides the encoder side and three hooks:
    :meth:`_token_vectors` (codes -> vectors ``[B, E, T']``), :meth:`_frame_vectors` (vectors -> one vector and
    one phase per latent frame) and :meth:`_encode`. ``block_samples`` is the smallest span holding a whole number
    of tokens and of latent frames (MSN: one token = 3 frames; 50 Hz units: 4 units = 5 frames); decoding windows
    are whole blocks, so a window's frames map to its tokens exactly as in one pass.
    """

    default_chunk_seconds = None  # windows long inputs itself (see the msn module docstring)
    latent_mean: Tensor  # [D] per-channel statistics of the training latents (buffers)
    latent_std: Tensor  # [D]
    autoencoder: LatentAutoencoder  # frozen; set in __init__ outside the module tree
    decoder: FlowDecoder

    def __init__(
        self, config: Config, flow: MSNConfig, name: str | None = None, *, autoencoder: LatentAutoencoder | None
    ) -> None:
        super().__init__(config, name)
        ae = autoencoder if autoencoder is not None else resolve_autoencoder(flow.autoencoder, flow.vocoder)
        facts = (ae.sample_rate, ae.hop_length, ae.latent_dim)
        if facts != (flow.sample_rate, flow.latent_hop, flow.latent_dim):
            raise ValueError(
                f"the autoencoder gives (sample_rate, hop_length, latent_dim) = {facts}, the config says "
                f"{(flow.sample_rate, flow.latent_hop, flow.latent_dim)}; set them in the config to match"
            )
        object.__setattr__(self, "autoencoder", ae)  # frozen and external: not a submodule, not in the checkpoint
        self.flow = flow  # the decoder's settings (for MSN: the config itself)
        self.register_buffer("latent_mean", torch.zeros(flow.latent_dim))
        self.register_buffer("latent_std", torch.ones(flow.latent_dim))
        self._sampling = flow.sampling
        self.window_seconds = 60.0  # audio per window on long inputs; the result does not depend on it

    # ----------------------------------------------------------------------------------------------------
    # what a subclass provides
    @property
    def block_samples(self) -> int:
        """Samples in the smallest span holding whole numbers of tokens and of latent frames."""
        return math.lcm(self.levels[0].hop_length, self.flow.latent_hop)

    def _token_vectors(self, codes: list[Tensor]) -> Tensor:
        """Codes (one ``[B, T']`` per level) -> token vectors ``[B, E, T']``."""
        raise NotImplementedError

    def _frame_vectors(self, vectors: Tensor, frames: int) -> tuple[Tensor, Tensor]:
        """Token vectors ``[B, E, T']`` of whole blocks -> (each latent frame's token vector ``[B, F, E]``,
        its phase ``[F]``), ``F = frames``."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------------------
    # facts and settings
    @property
    def sample_rate(self) -> int:
        return self.flow.sample_rate

    @property
    def sampling(self) -> SamplingConfig:
        return self._sampling

    def set_sampling(
        self,
        *,
        solver: Literal["euler", "midpoint"] | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        seed: int | None = None,
    ) -> LatentFlowTokenizer:
        """Change how the CFM decoder samples (validated); the identity changes with them (MSE: no effect)."""
        changes: dict[str, Any] = {"solver": solver, "steps": steps, "guidance": guidance, "seed": seed}
        self._sampling = replace(self._sampling, **{k: v for k, v in changes.items() if v is not None})
        self.refresh_identity()
        return self

    def _identity_extra(self) -> str:
        ae = f"autoencoder={autoencoder_fingerprint(self.autoencoder)}"
        if self.flow.decoder == "mse":
            return ae  # deterministic: sampling settings do not change the audio
        return f"{ae},sampling={self._sampling.to_json()}"

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, decoder={self.flow.decoder!r}, sampling={self._sampling}"

    # ----------------------------------------------------------------------------------------------------
    # latent-space API (training, benchmarks)
    def latents(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Audio ``[B, T]`` -> (normalised latents ``[B, D, T // latent_hop]``, valid frames ``[B]``)."""
        z = self._autoencoder_on(wav.device).encode(wav, lengths)  # [B, D, F]
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[-1])
        return self.normalise(z), _ceil_div(lengths.to(z.device), self.flow.latent_hop)

    def normalise(self, z: Tensor) -> Tensor:
        return (z - self.latent_mean[:, None]) / self.latent_std[:, None]

    def denormalise(self, z: Tensor) -> Tensor:
        return z * self.latent_std[:, None] + self.latent_mean[:, None]

    @torch.no_grad()
    def set_latent_statistics(self, latents: Tensor, frame_lengths: Tensor | None = None) -> None:
        """Per-channel mean and std of raw latents ``[B, D, F]`` over their valid frames, kept as buffers."""
        check_latents(latents, self.flow.latent_dim)
        valid = _frame_mask(latents, frame_lengths)  # [B, 1, F]
        count = valid.sum() * 1.0
        mean = (latents * valid).sum(dim=(0, 2)) / count
        var = ((latents - mean[:, None]) ** 2 * valid).sum(dim=(0, 2)) / count
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(var.sqrt().clamp(min=1e-3))
        self.refresh_identity()

    def decoder_loss(
        self, x1: Tensor, vectors: Tensor, frame_lengths: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """The decoder's objective on normalised latents ``x1 [B, D, F]`` (zero after ``frame_lengths``) given
        token vectors ``[B, E, T']``: (loss over valid frames, prediction ``[B, D, F]``); see the msn module
        docstring. ``t``, ``x0`` and the condition dropout come from ``generator`` (CPU)."""
        c = self.flow
        batch, dim, frames = x1.shape
        frame_vectors, phase = self._frame_vectors(vectors, frames)
        if c.decoder == "cfm":
            t = torch.rand(batch, generator=generator).to(x1.device)
            x0 = torch.randn(batch, frames, dim, generator=generator).transpose(1, 2).to(x1.device)  # [B, D, F]
            drop = (torch.rand(batch, generator=generator) < c.cfg_dropout).to(x1.device)
            tt = t[:, None, None]
            x_t = (1 - (1 - c.sigma_min) * tt) * x0 + tt * x1
            target = x1 - (1 - c.sigma_min) * x0
            prediction = self.decoder(x_t, t, self.decoder.condition(frame_vectors, phase, drop), frame_lengths)
        else:
            prediction = self._mse_pass(self.decoder.condition(frame_vectors, phase), frame_lengths)
            target = x1
        valid = _frame_mask(x1, frame_lengths)
        loss = ((prediction - target) ** 2 * valid).sum() / (valid.sum() * dim)
        return loss, prediction

    @torch.no_grad()
    def decode_latents(self, codes: Tensor | list[Tensor], frame_lengths: Tensor | None = None) -> Tensor:
        """Normalised latents ``[B, D, F]`` from codes (``[B, T']``, or one such tensor per level) with the
        current sampling settings, in windows for long inputs; ``F`` covers the codes' whole blocks; zero after
        each item's ``frame_lengths`` (default: all frames)."""
        levels = [codes] if isinstance(codes, Tensor) else list(codes)
        for c in levels:
            if c.ndim != 2 or c.is_floating_point():
                raise InvalidAudioError(f"expected integer codes shaped [B, T'], got {c.dtype} {tuple(c.shape)}")
        block = self.block_samples
        per_block = [block // s.hop_length for s in self.levels]  # tokens per block, per level
        frames_per_block = block // self.flow.latent_hop
        blocks = max(_ceil_div(c.shape[1], n) for c, n in zip(levels, per_block, strict=True))
        levels = [F.pad(c, (0, blocks * n - c.shape[1])) for c, n in zip(levels, per_block, strict=True)]
        batch, frames = levels[0].shape[0], blocks * frames_per_block
        if frame_lengths is None:
            frame_lengths = torch.full((batch,), frames)
        frame_lengths = frame_lengths.to(levels[0].device)
        x0 = self._initial_noise(frame_lengths, frames).to(levels[0].device)  # [B, D, F]
        window = max(1, int(self.window_seconds * self.sample_rate) // block)
        context = _ceil_div(self._decode_reach(), frames_per_block)  # blocks on each side
        pieces = []
        for start in range(0, blocks, window):
            stop = min(start + window, blocks)
            lo, hi = max(0, start - context), min(blocks, stop + context)
            local = (frame_lengths - lo * frames_per_block).clamp(0, (hi - lo) * frames_per_block)
            window_codes = [c[:, lo * n : hi * n] for c, n in zip(levels, per_block, strict=True)]
            f0, f1 = lo * frames_per_block, hi * frames_per_block
            z = self._sample(window_codes, local, x0[..., f0:f1])  # [B, D, (hi - lo) blocks]
            pieces.append(z[..., (start - lo) * frames_per_block : (stop - lo) * frames_per_block])
        z = torch.cat(pieces, dim=-1)
        return z * _frame_mask(z, frame_lengths)

    @torch.no_grad()
    def reconstruct_latents(self, wav: Tensor, lengths: Tensor | None = None) -> LatentReconstruction:
        """Audio ``[B, T]`` -> its normalised latents, its tokens, and the latents decoded from them (current
        sampling settings), without the autoencoder's decoder; :attr:`LatentReconstruction.error` scores it."""
        was_training = self.training
        self.eval()
        try:
            if lengths is None:
                lengths = torch.full((wav.shape[0],), wav.shape[-1])
            block, hop = self.block_samples, self.levels[0].hop_length
            lengths = lengths.to(wav.device)
            padded = F.pad(wav, (0, -wav.shape[-1] % block))  # [B, whole blocks]
            padded = padded * (torch.arange(padded.shape[-1], device=wav.device)[None] < lengths[:, None])
            target, frame_lengths = self.latents(padded, lengths)  # [B, D, F]
            codes = self._encode(padded[:, None], lengths)  # per level [B, T']
            token_lengths = _ceil_div(lengths, hop)
            valid = torch.arange(codes[0].shape[1], device=codes[0].device)[None] < token_lengths[:, None]
            rebuilt = self.decode_latents(codes, frame_lengths)
            return LatentReconstruction(target, rebuilt, frame_lengths, codes[0] * valid, token_lengths)
        finally:
            self.train(was_training)

    # ----------------------------------------------------------------------------------------------------
    # decoding (the contract's second half)
    def _decode(self, codes: list[Tensor], lengths: Tensor) -> Tensor:
        frame_lengths = _ceil_div(lengths.to(codes[0].device), self.flow.latent_hop)
        z = self.denormalise(self.decode_latents(codes, frame_lengths))  # [B, D, F], whole blocks
        wav = self._autoencoder_on(z.device).decode(z, frame_lengths)  # [B, 1, F * latent_hop]
        return wav[..., : codes[0].shape[1] * self.levels[0].hop_length]

    def _decode_reach(self) -> int:
        """Latent frames on each side that one decoded frame depends on, through every network pass."""
        passes = 1 if self.flow.decoder == "mse" else self._sampling.evaluations
        return passes * self.decoder.reach

    def _initial_noise(self, frame_lengths: Tensor, frames: int) -> Tensor:
        """``x0 [B, D, frames]``: item ``b`` gets ``randn(F_b, D)`` from a generator seeded with the seed, zeros
        after; drawn on the CPU, so it is the same on every device, in every batch, for every windowing."""
        batch, dim = frame_lengths.shape[0], self.flow.latent_dim
        noise = torch.zeros(batch, dim, frames)
        if self.flow.decoder == "mse":
            return noise
        for b, n in enumerate(frame_lengths.tolist()):
            generator = torch.Generator().manual_seed(self._sampling.seed)
            noise[b, :, :n] = torch.randn(n, dim, generator=generator).T
        return noise

    def _sample(self, codes: list[Tensor], frame_lengths: Tensor, x0: Tensor) -> Tensor:
        """One window of whole blocks: codes -> normalised latents ``[B, D, F]`` from the initial state ``x0``."""
        frame_vectors, phase = self._frame_vectors(self._token_vectors(codes), x0.shape[-1])
        cond = self.decoder.condition(frame_vectors, phase)
        if self.flow.decoder == "mse":
            return self._mse_pass(cond, frame_lengths)
        s = self._sampling
        if s.guidance != 1.0:
            dropped = torch.ones(x0.shape[0], dtype=torch.bool, device=x0.device)
            null = self.decoder.condition(frame_vectors, phase, dropped)

        def velocity(x: Tensor, t: float) -> Tensor:
            times = torch.full((x.shape[0],), t, device=x.device)
            if s.guidance == 1.0:
                return cast(Tensor, self.decoder(x, times, cond, frame_lengths))
            both = self.decoder(
                torch.cat([x, x]), times.repeat(2), torch.cat([cond, null]), frame_lengths.repeat(2)
            )  # [2B, D, F]
            v_c, v_u = both.chunk(2)
            return v_u + s.guidance * (v_c - v_u)

        x, dt = x0, 1.0 / s.steps
        for i in range(s.steps):
            t = i * dt
            if s.solver == "euler":
                x = x + dt * velocity(x, t)
            else:
                x = x + dt * velocity(x + 0.5 * dt * velocity(x, t), t + 0.5 * dt)
        return x

    def _mse_pass(self, cond: Tensor, frame_lengths: Tensor) -> Tensor:
        """The MSE decoder: latents ``[B, D, F]`` from the per-frame condition ``[B, F, E]`` with ``x_t = 0``,
        ``t = 0``."""
        batch, frames = cond.shape[0], cond.shape[1]
        zeros = cond.new_zeros(batch, self.flow.latent_dim, frames)
        return cast(Tensor, self.decoder(zeros, cond.new_zeros(batch), cond, frame_lengths))

    def _autoencoder_on(self, device: torch.device) -> LatentAutoencoder:
        """The autoencoder, moved to ``device`` if it is a module (``.to()`` of the tokenizer does not reach it)."""
        if isinstance(self.autoencoder, nn.Module):
            self.autoencoder.to(device)
        return self.autoencoder


@register_family("msn", MSNConfig)
class MSNTokenizer(LatentFlowTokenizer):
    """Frozen latent autoencoder -> causal transformer -> one VQ codebook -> DiT (CFM or MSE) -> autoencoder.

    ``autoencoder`` replaces the one the config names (e.g. a mel autoencoder around a vocoder object); the
    identity follows the autoencoder actually used, but a checkpoint records only the config's names.
    """

    config: MSNConfig

    def __init__(
        self, config: MSNConfig, name: str | None = None, *, autoencoder: LatentAutoencoder | None = None
    ) -> None:
        super().__init__(config, config, name, autoencoder=autoencoder)
        self.encoder = LatentEncoder(config)
        self.quantizer = VectorQuantizer(config.vq_config())
        self.decoder = FlowDecoder(config)

    @property
    def levels(self) -> tuple[LevelSpec, ...]:
        return (LevelSpec(self.config.hop_length, self.config.codebook_size),)

    def _code_vectors(self, level: int) -> Tensor:
        return cast(Tensor, self.quantizer.code_vectors())  # [N, E]

    def _token_vectors(self, codes: list[Tensor]) -> Tensor:
        return cast(Tensor, self.quantizer.decode(codes[0]))  # [B, E, T']

    def _frame_vectors(self, vectors: Tensor, frames: int) -> tuple[Tensor, Tensor]:
        k = self.config.downsample  # each token covers K frames
        phase = torch.arange(frames, device=vectors.device) % k
        return vectors.transpose(1, 2).repeat_interleave(k, dim=1), phase

    def forward(
        self, latents: Tensor, frame_lengths: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> MSNOutput:
        """Training pass on normalised latents ``[B, D, F]`` (F a multiple of ``downsample``).

        ``generator`` (a CPU ``torch.Generator``) draws ``t``, ``x0`` and the condition dropout, so a step's
        randomness is a function of the caller's seed.
        """
        self._check_latents(latents)
        batch, _, frames = latents.shape
        if frame_lengths is None:
            frame_lengths = torch.full((batch,), frames, device=latents.device)
        x1 = latents.float() * _frame_mask(latents, frame_lengths)  # padding frames read as the mean, as in encoding
        q = self.quantizer(self.encoder(x1, frame_lengths))
        loss, prediction = self.decoder_loss(x1, q.quantized, frame_lengths, generator)
        return MSNOutput(loss, prediction, q)

    def training_inputs(self, wav: Tensor) -> dict[str, Tensor]:
        """The keyword arguments of :meth:`forward` for audio ``[B, 1, T]`` (``T`` whole tokens)."""
        with torch.no_grad():
            latents, _ = self.latents(wav[:, 0])  # [B, D, F] normalised
        return {"latents": latents}

    @torch.no_grad()
    def encode_latents(self, latents: Tensor, frame_lengths: Tensor | None = None) -> Tensor:
        """Codes ``[B, F / K]`` of normalised latents ``[B, D, F]`` in one pass (no windowing)."""
        self._check_latents(latents)
        if frame_lengths is None:
            frame_lengths = torch.full((latents.shape[0],), latents.shape[-1], device=latents.device)
        latents = latents * _frame_mask(latents, frame_lengths)
        return self.quantizer.encode(self.encoder(latents, frame_lengths))  # [B, T']

    def _encode(self, wav: Tensor, lengths: Tensor) -> list[Tensor]:
        c, ae = self.config, self.autoencoder
        audio = wav[:, 0]  # [B, T], T a multiple of the hop
        tokens = audio.shape[-1] // c.hop_length
        window = max(1, int(self.window_seconds * self.sample_rate) // c.hop_length)
        before = _ceil_div(self.encoder.history + ae.context_frames, c.downsample)  # tokens of history
        after = _ceil_div(ae.context_frames, c.downsample)  # the autoencoder looks ahead, the encoder does not
        lengths = lengths.to(audio.device)
        pieces = []
        for start in range(0, tokens, window):
            stop = min(start + window, tokens)
            lo, hi = max(0, start - before), min(tokens, stop + after)
            local = (lengths - lo * c.hop_length).clamp(0, (hi - lo) * c.hop_length)
            z, frame_lengths = self.latents(audio[:, lo * c.hop_length : hi * c.hop_length], local)
            codes = self.encode_latents(z, frame_lengths)  # [B, hi - lo]
            pieces.append(codes[:, start - lo : stop - lo])
        return [torch.cat(pieces, dim=1)]

    def _check_latents(self, latents: Tensor) -> None:
        check_latents(latents, self.config.latent_dim)
        if latents.shape[-1] % self.config.downsample:
            raise InvalidAudioError(
                f"{latents.shape[-1]} latent frames is not a multiple of downsample={self.config.downsample}; "
                f"crop to a whole number of tokens ({self.config.hop_length} samples each)"
            )


def _ceil_div(a: Any, b: int) -> Any:
    return -(-a // b)


def _frame_mask(x: Tensor, frame_lengths: Tensor | None) -> Tensor:
    """``[B, 1, F]`` float: 1 on each item's valid frames of ``x [B, D, F]``."""
    if frame_lengths is None:
        return x.new_ones(x.shape[0], 1, x.shape[-1])
    frames = torch.arange(x.shape[-1], device=x.device)
    return (frames[None, None, :] < frame_lengths.to(x.device)[:, None, None]).to(x.dtype)


for _name, _decoder, _what in (
    ("msn-16k", "cfm", "flow-matching DiT decoder (CFM; sampling settings: set_sampling)"),
    ("msn-mse-16k", "mse", "MSE-trained decoder (the paper's baseline)"),
):
    register_preset(
        Preset(
            _name,
            "msn",
            f"Make Some Noise tokens: VQ (8192) on log-mel latents, 20.8 tokens/s (271 bit/s), {_what}; "
            "needs vocoder-16k",
            checkpoint=CHECKPOINTS / _name,
        )
    )
