"""A tiny neural tokenizer for tests: random weights, two levels at different frame rates, a known receptive field.

It exercises everything a real family brings to the contract (parameters and a weight fingerprint, levels at
different rates, a receptive field that spans frame borders, checkpoints) in a few thousand parameters. Importing
this module registers the ``toy`` family and the ``toy-tiny`` preset.

>>> import soundtok, torch
>>> import soundtok.testing.dummies  # registers "toy"
>>> tok = soundtok.load("toy-tiny")
>>> tok.frame_rates, tok.codebook_sizes
((100.0, 50.0), (16, 32))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from soundtok.config import Config
from soundtok.registry import PRESETS, Preset, register_family, register_preset
from soundtok.tokenizers.base import AudioTokenizer
from soundtok.tokenizers.codec import CodecConfig
from soundtok.tokenizers.llm_codec import LLMCodecConfig
from soundtok.tokenizers.msn import MSNConfig, SamplingConfig
from soundtok.tokenizers.semantic import SemanticConfig
from soundtok.types import LevelSpec


@dataclass(frozen=True)
class ToyConfig(Config):
    sample_rate: int = 16000
    hops: tuple[int, ...] = (160, 320)
    codebook_sizes: tuple[int, ...] = (16, 32)
    dim: int = 8
    context: int = 80  # samples each frame sees beyond its own span, on each side
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.hops) != len(self.codebook_sizes) or not self.hops:
            raise ValueError("hops and codebook_sizes need one entry per level")
        if min(self.hops) <= 0 or min(self.codebook_sizes) < 2 or self.context < 0 or self.dim <= 0:
            raise ValueError(f"invalid toy config {self}")


class _ToyLevel(nn.Module):
    def __init__(self, hop: int, size: int, dim: int, context: int) -> None:
        super().__init__()
        self.hop, self.context = hop, context
        self.analysis = nn.Conv1d(1, dim, kernel_size=hop + 2 * context, stride=hop)
        self.codebook = nn.Parameter(torch.randn(size, dim))
        self.synthesis = nn.Linear(dim, hop)  # one frame -> its hop samples

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        x = F.pad(wav, (self.context, self.context))  # zeros beyond the window = zeros beyond the signal
        z = torch.tanh(self.analysis(x)).transpose(1, 2)  # [B, T', D]
        distances = torch.cdist(z, self.codebook[None].expand(z.shape[0], -1, -1))  # [B, T', N]
        return distances.argmin(dim=-1)  # [B, T']

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        frames = torch.tanh(self.synthesis(F.embedding(codes, self.codebook))) * 0.5  # [B, T', hop]
        return frames.reshape(codes.shape[0], 1, -1)  # [B, 1, T' * hop]


@register_family("toy", ToyConfig)
class ToyTokenizer(AudioTokenizer):
    """Random-weight multi-rate tokenizer; chunked == whole exactly since ``context_samples`` covers its field."""

    config: ToyConfig

    def __init__(self, config: ToyConfig, name: str | None = None) -> None:
        super().__init__(config, name)
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(config.seed)
        self.level_nets = nn.ModuleList(
            _ToyLevel(h, n, config.dim, config.context) for h, n in zip(config.hops, config.codebook_sizes, strict=True)
        )
        torch.random.set_rng_state(gen_state)
        self.context_samples = config.context

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def levels(self) -> tuple[LevelSpec, ...]:
        return tuple(LevelSpec(h, n) for h, n in zip(self.config.hops, self.config.codebook_sizes, strict=True))

    def _code_vectors(self, level: int) -> torch.Tensor:
        return self._levels()[level].codebook  # [N, dim]

    def _encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        return [level.encode(wav) for level in self._levels()]

    def _decode(self, codes: list[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        parts = [level.decode(c) for level, c in zip(self._levels(), codes, strict=True)]  # each [B, 1, T]
        return torch.stack(parts).sum(dim=0)

    def _levels(self) -> list[_ToyLevel]:
        return [m for m in self.level_nets if isinstance(m, _ToyLevel)]


if "toy-tiny" not in PRESETS:
    register_preset(Preset("toy-tiny", "toy", "tiny random two-rate tokenizer for tests", config=ToyConfig()))
if "codec-tiny" not in PRESETS:
    register_preset(
        Preset(
            "codec-tiny",
            "codec",
            "the RVQ codec architecture at toy size, random weights (tests)",
            config=CodecConfig(channels=4, strides=(2, 4), latent_dim=8, num_quantizers=3, codebook_size=16),
        )
    )
if "llm-codec-tiny" not in PRESETS:
    register_preset(
        Preset(
            "llm-codec-tiny",
            "llm_codec",
            "the LLM-Codec architecture at toy size: random weights, token ids 0..N-1 as its words (tests)",
            config=LLMCodecConfig(
                latent_dim=8,
                encoder_layers=1,
                decoder_dim=16,
                decoder_intermediate_dim=32,
                decoder_layers=1,
                level_sizes=(16, 32, 32),
                embedding_dim=12,
                whisper_dim=8,
            ),
        )
    )
if "codec-spectral-tiny" not in PRESETS:
    register_preset(
        Preset(
            "codec-spectral-tiny",
            "codec",
            "the RVQ codec with the STFT encoder and the Vocos-style inverse-STFT decoder at toy size, random weights",
            config=CodecConfig(
                channels=4,
                strides=(2, 4, 5),
                latent_dim=8,
                num_quantizers=3,
                codebook_size=16,
                encoder="stft",
                encoder_layers=1,
                decoder="istft",
                decoder_dim=16,
                decoder_intermediate_dim=32,
                decoder_layers=2,
            ),
        )
    )
if "msn-tiny" not in PRESETS:
    register_preset(
        Preset(
            "msn-tiny",
            "msn",
            "the Make Some Noise tokenizer at toy size, random weights, decoded through the shipped vocoder-16k",
            config=MSNConfig(
                vocoder="vocoder-16k",
                dim=16,
                heads=2,
                encoder_layers=1,
                decoder_layers=1,
                codebook_size=64,
                sampling=SamplingConfig(steps=2),
            ),
        )
    )
if "semantic-tiny" not in PRESETS:
    register_preset(
        Preset(
            "semantic-tiny",
            "semantic",
            "semantic tokens at toy size: random centroids (32) over Whisper tiny.en layers 2 and 4, a random decoder "
            "and the shipped vocoder-16k",
            config=SemanticConfig(
                encoder="whisper-tiny.en",
                layers=(2, 4),
                feature_dim=384,
                num_clusters=32,
                dim=16,
                heads=2,
                decoder_layers=1,
                decoder_window=2,
            ),
        )
    )
