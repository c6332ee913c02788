"""Semantic tokens (``semantic``): k-means over a frozen speech encoder's layers, decoded by the MSN DiT.

As in DASB (and HuBERT's targets): a pretrained encoder's hidden states at one or more layers
(:mod:`soundtok.encoders`; by default Whisper base's last layer) are assigned to their nearest k-means centroid,
one codebook level per layer. The tokens keep what the encoder keeps (phonetic content, for an ASR encoder) and
lose much of the rest (voice, recording conditions), which is the point of the comparison with compression tokens.

Shapes: B batch, T samples, L levels (layers), U units (50/s for Whisper: one per 320 samples), K clusters,
D_f feature dimension, E decoder width, D latent channels (80 mels), F latent frames (62.5/s).

**Encode.** audio -> encoder layers ``[B, U, D_f]`` each -> nearest centroid (squared Euclidean) -> codes
``[B, U]`` per level. The encoder is frozen and external (like the latent autoencoder: not a submodule, not in the
checkpoint; its name and settings are in the config, its weights' fingerprint in the identity). It windows long
audio itself (Whisper: 30 s windows), so the base class's chunking is off and a long file is encoded in the
encoder's own windows.

**Centroids** come from :func:`fit_centroids`: streaming mini-batch k-means (:mod:`soundtok.nn.kmeans`) over a
:class:`~soundtok.encoders.store.FeatureStore` of the training split.

**Deduplication** (optional, for sequence models): :func:`deduplicate` collapses runs of a repeated unit into
(unit, duration) pairs. The tokens themselves stay one per frame, so the contract (fixed frame rate, lengths,
decoding) holds; dedup is a view for consumers that want shorter sequences.

**Decode** (resynthesis): the units of all levels are embedded and summed ``[B, E, U]``; each latent frame ``f``
takes the vector of the unit that holds its centre (``floor((256 f + 128) / 320)``), and the flow decoder
(:class:`~soundtok.nn.flow.FlowDecoder`, CFM or MSE, as in msn; its config from :meth:`SemanticConfig.flow_decoder`)
predicts normalised mel latents, which the mel vocoder turns into audio. A block of 4 units = 5 latent frames =
1280 samples is the unit of windowing (:mod:`soundtok.tokenizers.latent_flow`). Units carry little of the voice,
so a decoder can at best keep the words,
not the speaker. ``benchmarks/resynthesis.py --tokenizers NAME`` measures it (for the shipped, CPU-trained decoder:
``benchmarks/results/resynthesis_semantic/``, not yet intelligible).

>>> import torch
>>> tok = SemanticTokenizer(SemanticConfig(encoder="none", feature_dim=8, num_clusters=4, vocoder="griffin-lim",
...                                        dim=16, heads=2, decoder_layers=1))
>>> tok.frame_rates, tok.bitrate
((50.0,), 100.0)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from soundtok.config import Config
from soundtok.encoders import load_encoder
from soundtok.encoders.base import FeatureEncoder
from soundtok.encoders.store import FeatureStore
from soundtok.errors import InvalidAudioError
from soundtok.latent import LatentAutoencoder, module_fingerprint
from soundtok.nn.flow import FlowDecoder, FlowDecoderConfig, SamplingConfig
from soundtok.nn.kmeans import KMeansResult, fit_kmeans, nearest
from soundtok.registry import CHECKPOINTS, Preset, register_family, register_preset
from soundtok.tokenizers.latent_flow import LatentFlowTokenizer
from soundtok.types import LevelSpec


@dataclass(frozen=True)
class SemanticConfig(Config):
    # the frozen feature encoder (soundtok.encoders.load_encoder), its options, and the layers to quantize
    encoder: str = "whisper-base"  # "none": no encoder (codes from features only: tests, fit_centroids)
    window_seconds: float | None = 1.0  # Whisper's short windows (soundtok.encoders.whisper); None: 30 s padding
    layers: tuple[int, ...] = (6,)  # one codebook level per layer
    feature_dim: int = 512
    unit_hop: int = 320  # samples per encoder frame
    num_clusters: int = 1000
    # resynthesis: the flow decoder (soundtok.nn.flow) conditioned on units, into soundtok's mel latents
    autoencoder: str = "mel"
    vocoder: str = "vocoder-16k"
    sample_rate: int = 16000
    latent_hop: int = 256
    latent_dim: int = 80
    decoder: str = "mse"  # "cfm" or "mse" (soundtok.nn.flow)
    dim: int = 256
    heads: int = 4
    mlp_ratio: float = 4.0
    decoder_layers: int = 6
    decoder_window: int = 8
    sigma_min: float = 1e-4
    cfg_dropout: float = 0.1
    sampling: SamplingConfig = field(default_factory=SamplingConfig)

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("layers is empty; quantize at least one encoder layer")
        for name in ("feature_dim", "unit_hop", "num_clusters"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"SemanticConfig.{name} must be an integer >= 2, got {value!r}")
        for name in ("sample_rate", "latent_hop"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SemanticConfig.{name} must be a positive integer, got {value!r}")
        self.flow_decoder()  # validates the decoder's fields

    def flow_decoder(self) -> FlowDecoderConfig:
        """The decoder's config, from the fields semantic checkpoints record it under; a latent frame takes its
        unit's vector whole (one phase)."""
        return FlowDecoderConfig(
            latent_dim=self.latent_dim,
            dim=self.dim,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            layers=self.decoder_layers,
            window=self.decoder_window,
            phases=1,
            objective=self.decoder,
            sigma_min=self.sigma_min,
            cfg_dropout=self.cfg_dropout,
            sampling=self.sampling,
        )


@dataclass
class SemanticOutput:
    """One training pass of the decoder (:meth:`SemanticTokenizer.forward`)."""

    loss: Tensor  # scalar: the CFM or MSE objective over valid frames
    prediction: Tensor  # [B, D, F]

    @property
    def total(self) -> Tensor:
        return self.loss

    def scalars(self) -> dict[str, float]:
        return {"objective": float(self.loss.detach())}


def _unavailable() -> str | None:
    if importlib.util.find_spec("transformers") is None:  # the feature encoders run through transformers
        return "transformers is not installed: pip install 'soundtok[encoders]'"
    return None


@register_family("semantic", SemanticConfig, _unavailable)
class SemanticTokenizer(LatentFlowTokenizer):
    """Frozen encoder layers -> k-means units (one level per layer) -> unit embeddings -> DiT -> mel -> vocoder.

    ``encoder`` replaces the one the config names (an already loaded :class:`FeatureEncoder`).
    """

    config: SemanticConfig
    centroids: Tensor  # [L, K, D_f] buffer
    encoder: FeatureEncoder | None  # frozen; set in __init__ outside the module tree

    def __init__(
        self,
        config: SemanticConfig,
        name: str | None = None,
        *,
        encoder: FeatureEncoder | None = None,
        autoencoder: LatentAutoencoder | None = None,
    ) -> None:
        super().__init__(config, name, autoencoder=autoencoder)
        c = config
        if encoder is None and c.encoder != "none":
            options: dict[str, Any] = {}
            if c.encoder.startswith("whisper-"):
                options["window_seconds"] = c.window_seconds
            with torch.device("cpu"):  # a real model even when this tokenizer is planned on "meta" (checkpoint.py)
                encoder = load_encoder(c.encoder, layers=list(c.layers), **options)
        if encoder is not None:
            facts = (encoder.dim, round(encoder.sample_rate / encoder.frame_rate), encoder.sample_rate)
            if facts != (c.feature_dim, c.unit_hop, c.sample_rate):
                raise ValueError(
                    f"the encoder gives (dim, samples per frame, sample_rate) = {facts}, the config says "
                    f"{(c.feature_dim, c.unit_hop, c.sample_rate)}; set them in SemanticConfig to match"
                )
            encoder.resolve_layers(list(c.layers))  # checks the layer numbers
        object.__setattr__(self, "encoder", encoder)  # frozen and external, as the autoencoder
        # random until fitted (set_centroids, or a checkpoint), like any untrained weights
        self.register_buffer("centroids", torch.randn(len(c.layers), c.num_clusters, c.feature_dim))
        self.unit_embeddings = nn.ModuleList(nn.Embedding(c.num_clusters, c.dim) for _ in c.layers)
        self.decoder = FlowDecoder(self.flow)

    @property
    def levels(self) -> tuple[LevelSpec, ...]:
        return tuple(LevelSpec(self.config.unit_hop, self.config.num_clusters) for _ in self.config.layers)

    @property
    def licence(self) -> str:
        return "Whisper weights MIT; shipped centroids/decoder fitted on CC BY-NC(-SA) data: non-commercial"

    def _code_vectors(self, level: int) -> Tensor:
        return self.centroids[level]  # [K, D_f]: the encoder features each cluster stands for

    def _identity_extra(self) -> str:
        encoder = "none" if self.encoder is None else module_fingerprint(self.encoder)
        settings = getattr(self.encoder, "settings", {})
        return f"{super()._identity_extra()},encoder={encoder},{sorted(settings.items())}"

    # ----------------------------------------------------------------------------------------------------
    # units
    def set_centroids(self, centroids: Tensor) -> None:
        """``[L, K, D_f]`` (or ``[K, D_f]`` for one level) k-means centroids, one set per layer."""
        if centroids.ndim == 2:
            centroids = centroids[None]
        if centroids.shape != self.centroids.shape:
            raise ValueError(f"centroids must be shaped {tuple(self.centroids.shape)}, got {tuple(centroids.shape)}")
        with torch.no_grad():
            self.centroids.copy_(centroids)
        self.refresh_identity()

    def units(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Features ``[..., D_f]`` of each layer (in ``config.layers`` order) -> nearest-centroid codes ``[...]``."""
        codes = []
        for level, h in enumerate(features):
            index, _ = nearest(h.reshape(-1, h.shape[-1]), self.centroids[level].to(h.device))
            codes.append(index.reshape(h.shape[:-1]))
        return codes

    def _encode(self, wav: Tensor, lengths: Tensor) -> list[Tensor]:
        if self.encoder is None:
            raise InvalidAudioError(
                "this semantic tokenizer has no feature encoder (encoder='none'); build it with one to encode audio"
            )
        out = self.encoder(wav[:, 0], lengths)  # hidden [B, U, D_f] per layer
        units = wav.shape[-1] // self.config.unit_hop
        codes = self.units([out.layer(i) for i in self.encoder.resolve_layers(list(self.config.layers))])
        return [torch.nn.functional.pad(c, (0, units - c.shape[1])) for c in codes]  # [B, U] each

    # ----------------------------------------------------------------------------------------------------
    # the decoder's hooks
    def _token_vectors(self, codes: list[Tensor]) -> Tensor:
        vectors = torch.stack([emb(c) for emb, c in zip(self.unit_embeddings, codes, strict=True)]).sum(0)
        return vectors.transpose(1, 2)  # [B, E, U]: the levels' unit embeddings summed

    def _frame_vectors(self, vectors: Tensor, frames: int) -> tuple[Tensor, Tensor]:
        hop, unit = self.config.latent_hop, self.config.unit_hop
        centre = torch.arange(frames, device=vectors.device) * hop + hop // 2
        index = (centre // unit).clamp(max=vectors.shape[-1] - 1)  # the unit holding each frame's centre
        phase = torch.zeros(frames, dtype=torch.long, device=vectors.device)
        return vectors.transpose(1, 2)[:, index], phase

    def forward(
        self,
        latents: Tensor,
        codes: list[Tensor],
        frame_lengths: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> SemanticOutput:
        """Training pass of the decoder on normalised latents ``[B, D, F]`` and the units of the same audio
        (``[B, U]`` per level; ``F`` and ``U`` cover the same whole blocks of :attr:`block_samples`)."""
        batch, _, frames = latents.shape
        if frame_lengths is None:
            frame_lengths = torch.full((batch,), frames, device=latents.device)
        x1 = latents.float() * (torch.arange(frames, device=latents.device) < frame_lengths[:, None])[:, None]
        loss, prediction = self.decoder_loss(x1, self._token_vectors(codes), frame_lengths, generator)
        return SemanticOutput(loss, prediction)

    def training_inputs(self, wav: Tensor) -> dict[str, Any]:
        """The decoder's training inputs for audio ``[B, 1, T]`` (``T`` whole blocks): latents and units."""
        with torch.no_grad():
            latents, _ = self.latents(wav[:, 0])
            codes = self._encode(wav, torch.full((wav.shape[0],), wav.shape[-1]))
        return {"latents": latents, "codes": codes}


def deduplicate(codes: Tensor) -> tuple[Tensor, Tensor]:
    """Runs of one unit collapsed: ``codes [U]`` -> (units ``[N]``, durations in frames ``[N]``)."""
    if codes.ndim != 1:
        raise ValueError(f"deduplicate takes one item's codes [U], got shape {tuple(codes.shape)}")
    if codes.numel() == 0:
        return codes.clone(), codes.new_zeros(0)
    units, durations = torch.unique_consecutive(codes, return_counts=True)
    return units, durations


def fit_centroids(
    store: FeatureStore,
    layer: int,
    num_clusters: int,
    *,
    ids: Sequence[str] | None = None,
    batch_size: int = 20000,
    passes: int = 5,
    seed: int = 0,
    progress: bool = False,
) -> KMeansResult:
    """k-means centroids of ``layer``'s features over the items ``ids`` of ``store`` (default: its train split),
    streaming shuffled batches of ``batch_size`` frames."""
    if ids is None:
        ids = [i for i, item in store.items.items() if item.split == "train"]
    rows = store.rows(ids)
    array = store.array(layer)
    generator = np.random.default_rng(seed)

    def batches() -> Any:
        order = generator.permutation(rows)  # a fresh shuffle per pass
        for start in range(0, len(order), batch_size):
            picked = np.sort(order[start : start + batch_size])  # sorted reads from the memory map
            yield torch.from_numpy(np.asarray(array[picked], dtype=np.float32))

    return fit_kmeans(batches, num_clusters, passes=passes, seed=seed, progress=progress)


register_preset(
    Preset(
        "semantic-whisper-base-1000",
        "semantic",
        "semantic tokens: k-means (1000) over Whisper base's last layer, 50 tokens/s (498 bit/s); resynthesis "
        "through a unit-to-mel DiT + vocoder-16k",
        checkpoint=CHECKPOINTS / "semantic-whisper-base-1000",
    )
)
