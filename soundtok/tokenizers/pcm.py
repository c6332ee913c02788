"""Scalar quantisation of each sample (mu-law or linear PCM): one level, one code per sample.

No training, frame-independent, exact under batching and chunking: the simplest tokenizer that satisfies the
contract, for tests and as a high-bitrate reference.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from soundtok.config import Config
from soundtok.registry import Preset, register_family, register_preset
from soundtok.tokenizers.base import AudioTokenizer
from soundtok.types import LevelSpec


@dataclass(frozen=True)
class PCMConfig(Config):
    sample_rate: int = 16000
    bits: int = 8
    companding: str = "mulaw"  # "mulaw" (ITU G.711-style, mu = 2**bits - 1) or "linear"

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 16:
            raise ValueError(f"bits must be in [1, 16], got {self.bits}")
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.companding not in ("mulaw", "linear"):
            raise ValueError(f"companding must be 'mulaw' or 'linear', got {self.companding!r}")


@register_family("pcm", PCMConfig)
class PCMTokenizer(AudioTokenizer):
    config: PCMConfig

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def levels(self) -> tuple[LevelSpec, ...]:
        return (LevelSpec(hop_length=1, codebook_size=2**self.config.bits),)

    @property
    def licence(self) -> str:
        return "public domain algorithm (ITU-T G.711 mu-law)"

    def _encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        x = wav.clamp(-1.0, 1.0).mean(dim=1)  # [B, T]; channels == 1
        if self.config.companding == "mulaw":
            mu = 2**self.config.bits - 1
            x = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
        n = 2**self.config.bits
        codes = torch.floor((x + 1.0) / 2.0 * n).clamp(0, n - 1)  # uniform bins over [-1, 1]
        return [codes.long()]  # [B, T]

    def _decode(self, codes: list[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        return self._table.to(codes[0].device)[codes[0]][:, None, :]  # [B, 1, T]

    @functools.cached_property
    def _table(self) -> torch.Tensor:
        """Sample value of every code: a lookup keeps decoding exact whatever the batch shape."""
        n = 2**self.config.bits
        y = (torch.arange(n, dtype=torch.float64) + 0.5) / n * 2.0 - 1.0  # bin centres
        if self.config.companding == "mulaw":
            mu = n - 1
            y = torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu
        return y.float()


for _sr in (8000, 16000):
    register_preset(
        Preset(
            name=f"mulaw-8bit-{_sr // 1000}k",
            family="pcm",
            description=f"8-bit mu-law PCM at {_sr} Hz (G.711-like); trivial reference",
            config=PCMConfig(sample_rate=_sr, bits=8),
        )
    )
register_preset(
    Preset(
        name="mulaw-4bit-8k",
        family="pcm",
        description="4-bit mu-law PCM at 8 kHz (32 kbit/s); a low-quality reference",
        config=PCMConfig(sample_rate=8000, bits=4),
    )
)
