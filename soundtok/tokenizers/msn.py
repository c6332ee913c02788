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
* **Decoder**: the flow-matching DiT of :mod:`soundtok.nn.flow` (:class:`~soundtok.nn.flow.FlowDecoder`, its
  config from :meth:`MSNConfig.flow_decoder`): token vectors are repeated ``K`` times to the latent frame rate, each
  frame's position inside its token is its phase, and a transformer whose attention sees ``decoder_window`` frames
  on each side predicts a velocity ``[B, D, F]`` (``decoder="cfm"``) or the latents themselves (``"mse"``, the
  paper's baseline); see that module for the objectives and the seeded ODE sampler.

Training minimises the decoder's objective plus the quantizer's commitment and codebook losses (weighted by
``commitment`` and ``codebook_weight``). The sampling settings (:class:`~soundtok.nn.flow.SamplingConfig`;
:meth:`MSNTokenizer.set_sampling`) are part of the tokenizer's identity, since they change the decoded audio.

**Long inputs, batching** (:mod:`soundtok.tokenizers.latent_flow`, shared with the semantic family): encoding keeps
``encoder_layers x encoder_window`` frames of history (+ the autoencoder's context) before each window; decoding
keeps ``evaluations x decoder_layers x decoder_window`` frames on each side. Windowed == whole and batched == one
by one up to float rounding in attention: tests hold decoded latents to ``atol=1e-4`` and codes exactly.

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

from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn

from soundtok.config import Config
from soundtok.errors import InvalidAudioError
from soundtok.latent import LatentAutoencoder, check_latents
from soundtok.nn.flow import FlowDecoder, FlowDecoderConfig, SamplingConfig, frame_mask
from soundtok.nn.quantize import QuantizerOutput, VectorQuantizer, VQConfig
from soundtok.nn.transformer import BandTransformer
from soundtok.registry import CHECKPOINTS, Preset, register_family, register_preset
from soundtok.tokenizers.latent_flow import LatentFlowTokenizer, LatentReconstruction, ceil_div, latent_mse
from soundtok.types import LevelSpec

# the latent-flow pieces this module has always exported (tests, benchmarks and recipes import them from here)
__all__ = [
    "LatentEncoder",
    "LatentFlowTokenizer",
    "LatentReconstruction",
    "MSNConfig",
    "MSNOutput",
    "MSNTokenizer",
    "SamplingConfig",
    "latent_mse",
]


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
        positive = ("sample_rate", "latent_hop", "downsample", "encoder_layers", "encoder_window", "codebook_dim")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MSNConfig.{name} must be a positive integer, got {value!r}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}")
        self.flow_decoder()  # validates the decoder's fields

    def flow_decoder(self) -> FlowDecoderConfig:
        """The decoder's config, from the fields MSN checkpoints record it under; a token's ``downsample`` frames
        are its phases."""
        return FlowDecoderConfig(
            latent_dim=self.latent_dim,
            dim=self.dim,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            layers=self.decoder_layers,
            window=self.decoder_window,
            phases=self.downsample,
            objective=self.decoder,
            sigma_min=self.sigma_min,
            cfg_dropout=self.cfg_dropout,
            sampling=self.sampling,
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
        super().__init__(config, name, autoencoder=autoencoder)
        self.encoder = LatentEncoder(config)
        self.quantizer = VectorQuantizer(config.vq_config())
        self.decoder = FlowDecoder(self.flow)

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
        x1 = latents.float() * frame_mask(latents, frame_lengths)  # padding frames read as the mean, as in encoding
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
        latents = latents * frame_mask(latents, frame_lengths)
        return self.quantizer.encode(self.encoder(latents, frame_lengths))  # [B, T']

    def _encode(self, wav: Tensor, lengths: Tensor) -> list[Tensor]:
        c, ae = self.config, self.autoencoder
        audio = wav[:, 0]  # [B, T], T a multiple of the hop
        tokens = audio.shape[-1] // c.hop_length
        window = max(1, int(self.window_seconds * self.sample_rate) // c.hop_length)
        before = ceil_div(self.encoder.history + ae.context_frames, c.downsample)  # tokens of history
        after = ceil_div(ae.context_frames, c.downsample)  # the autoencoder looks ahead, the encoder does not
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
