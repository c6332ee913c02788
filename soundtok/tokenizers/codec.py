"""The RVQ waveform codec (DASB's "compression tokens", EnCodec/DAC family).

An encoder turns 16 kHz audio into latents at ``sample_rate / hop`` frames per second (50 by default): strided
convolutions over samples (``encoder="conv"``, SEANet/DAC, :mod:`soundtok.nn.conv`) or ConvNeXt blocks over
log-magnitude STFT frames (``encoder="stft"``, :mod:`soundtok.nn.spectral`). A residual vector quantizer
(:mod:`soundtok.nn.quantize`) turns each latent frame into up to ``num_quantizers`` codes. The decoder mirrors the
conv encoder (``decoder="conv"``) or predicts STFT magnitudes and phases for an inverse STFT (``decoder="istft"``,
Vocos-style). The shipped ``codec-16k`` is the spectral pair, which trains much faster from spectral losses alone
(``benchmarks/results/codec_architecture_pilots.md``); only the conv pair can be causal.

Trained with quantizer dropout, one model serves every bitrate from 1 to ``num_quantizers`` codebooks:
:meth:`CodecTokenizer.set_num_codebooks` picks how many levels ``encode`` emits (each level is one codebook; its
fingerprint records the count, so tokens made with 4 levels are never decoded as 8-level tokens).

Training lives apart from the model (``soundtok.train``); this module only defines the architecture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from soundtok.config import Config
from soundtok.nn.conv import Decoder, Encoder
from soundtok.nn.quantize import QuantizerOutput, ResidualVectorQuantizer, RVQConfig
from soundtok.nn.spectral import ISTFTDecoder, STFTEncoder
from soundtok.registry import CHECKPOINTS, Preset, register_family, register_preset
from soundtok.tokenizers.base import AudioTokenizer
from soundtok.types import LevelSpec


@dataclass(frozen=True)
class CodecConfig(Config):
    sample_rate: int = 16000
    channels: int = 32  # encoder width before the first downsampling; doubles at each
    strides: tuple[int, ...] = (2, 4, 5, 8)  # hop 320: 50 frames/s at 16 kHz
    dilations: tuple[int, ...] = (1, 3, 9)  # one residual unit per dilation, at every rate
    activation: str = "snake"  # or "elu" (no sine: cheaper on CPU)
    latent_dim: int = 64
    num_quantizers: int = 12
    codebook_size: int = 1024
    codebook_dim: int = 8  # the search space of factorised codes (DAC); unused by the default Euclidean codes
    quantizer_dropout: float = 0.5
    causal: bool = False
    # "conv": the SEANet/DAC strided-conv encoder over samples; "stft": ConvNeXt blocks over log-magnitude STFT
    # frames at `istft_upsample` x the frame rate (soundtok.nn.spectral.STFTEncoder), sized like the istft decoder
    encoder: str = "conv"
    encoder_layers: int = 4  # stft only
    # "conv": the mirrored transposed-conv decoder (SEANet/DAC); "istft": a Vocos-style decoder, ConvNeXt blocks at
    # `istft_upsample` x the frame rate predicting STFT magnitudes and phases (soundtok.nn.spectral.ISTFTDecoder)
    decoder: str = "conv"
    decoder_dim: int = 256  # the spectral networks' ConvNeXt width and MLP width (stft encoder and istft decoder)
    decoder_intermediate_dim: int = 768
    decoder_layers: int = 8
    istft_upsample: int = 2
    # codebook practice (soundtok.nn.quantize.VQConfig). Default: EnCodec's Euclidean EMA codes with k-means init and
    # restarts below 40% of a uniform share. benchmarks/codebook_practices.py measured it on the codec-16k model
    # (300 steps, batch 8): 82% of the codes used per level, where DAC's factorised codes (factorised=True,
    # ema=False, dead_code_threshold=0.02) collapsed to 1%
    factorised: bool = False
    unit_codes: bool = False  # l2-normalised codes in the losses and the output too (factorised only)
    ema: bool = True
    kmeans_init: bool = True
    dead_code_threshold: float = 0.4

    def __post_init__(self) -> None:
        if not self.strides or min(self.strides) < 1:
            raise ValueError(f"strides must be positive, got {self.strides}")
        if not self.dilations or self.activation not in ("snake", "elu"):
            raise ValueError(f"need at least one dilation and activation 'snake' or 'elu', got {self}")
        if self.num_quantizers < 1 or self.codebook_size < 2 or self.channels < 1 or self.latent_dim < 1:
            raise ValueError(f"invalid codec config {self}")
        if self.decoder not in ("conv", "istft") or self.encoder not in ("conv", "stft"):
            raise ValueError(f"encoder must be 'conv' or 'stft' and decoder 'conv' or 'istft', got {self}")
        if (self.decoder == "istft" or self.encoder == "stft") and self.causal:
            raise ValueError("the stft encoder and istft decoder look both ways; use 'conv' for a causal codec")
        if min(self.decoder_dim, self.decoder_intermediate_dim, self.decoder_layers, self.istft_upsample) < 1:
            raise ValueError(f"spectral network sizes must be positive, got {self}")
        if self.encoder_layers < 0:
            raise ValueError(f"encoder_layers must be >= 0, got {self.encoder_layers}")

    @property
    def hop_length(self) -> int:
        return math.prod(self.strides)

    def rvq_config(self) -> RVQConfig:
        return RVQConfig(
            dim=self.latent_dim,
            num_quantizers=self.num_quantizers,
            codebook_size=self.codebook_size,
            codebook_dim=self.codebook_dim,
            quantizer_dropout=self.quantizer_dropout,
            factorised=self.factorised,
            unit_codes=self.unit_codes,
            ema=self.ema,
            kmeans_init=self.kmeans_init,
            dead_code_threshold=self.dead_code_threshold,
        )


@dataclass
class CodecOutput:
    """What a training step needs from one pass: the reconstruction and the quantizer's result."""

    reconstruction: torch.Tensor  # [B, 1, T]
    quantized: QuantizerOutput


@register_family("codec", CodecConfig)
class CodecTokenizer(AudioTokenizer):
    """Convolutional or spectral encoder -> residual VQ -> convolutional or inverse-STFT decoder."""

    config: CodecConfig

    def __init__(self, config: CodecConfig, name: str | None = None) -> None:
        super().__init__(config, name)
        c = config
        # the spectral pair shares its width and its STFT rate (istft_upsample STFT frames per codec frame)
        spectral = {"dim": c.decoder_dim, "intermediate_dim": c.decoder_intermediate_dim}
        self.encoder: Encoder | STFTEncoder
        if c.encoder == "stft":
            self.encoder = STFTEncoder(
                c.latent_dim, c.hop_length, num_layers=c.encoder_layers, downsample=c.istft_upsample, **spectral
            )
        else:
            self.encoder = Encoder(c.channels, c.strides, c.latent_dim, c.causal, c.dilations, c.activation)
        self.quantizer = ResidualVectorQuantizer(config.rvq_config())
        self.decoder: Decoder | ISTFTDecoder
        if c.decoder == "istft":
            self.decoder = ISTFTDecoder(
                c.latent_dim, c.hop_length, num_layers=c.decoder_layers, upsample=c.istft_upsample, **spectral
            )
        else:
            self.decoder = Decoder(c.channels, c.strides, c.latent_dim, c.causal, c.dilations, c.activation)
        reach = self.encoder.receptive_field()
        self.context_samples = max(reach.left, reach.right)
        self.decode_context_frames = self.decoder.receptive_field_frames()
        self.num_codebooks = config.num_quantizers

    def set_num_codebooks(self, n: int) -> CodecTokenizer:
        """Emit (and expect) the first ``n`` codebooks: bitrate = n x frame rate x log2(codebook size)."""
        if not 1 <= n <= self.config.num_quantizers:
            raise ValueError(f"num_codebooks must be in [1, {self.config.num_quantizers}], got {n}")
        self.num_codebooks = n
        self.refresh_identity()
        return self

    def _identity_extra(self) -> str:
        return f"codebooks={self.num_codebooks}"

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def levels(self) -> tuple[LevelSpec, ...]:
        return tuple(LevelSpec(self.config.hop_length, self.config.codebook_size) for _ in range(self.num_codebooks))

    def _code_vectors(self, level: int) -> torch.Tensor:
        return self.quantizer.level(level).code_vectors()  # [N, D]: this level's share of the latent

    def forward(self, wav: torch.Tensor) -> CodecOutput:
        """Training pass on ``[B, 1, T]`` (T a multiple of the hop): quantizer dropout applies in train mode."""
        q = self.quantizer(self.encoder(wav))  # quantized [B, D, T']
        return CodecOutput(self.decoder(q.quantized), q)

    def _encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        z = self.encoder(wav, lengths)  # [B, D, T']
        codes = self.quantizer.encode(z, n_q=self.num_codebooks)  # [B, n, T']
        return list(codes.unbind(dim=1))

    def _decode(self, codes: list[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        z = self.quantizer.decode(torch.stack(codes, dim=1))  # [B, D, T']
        return self.decoder(z, lengths)  # [B, 1, T' * hop]


register_preset(
    Preset(
        "codec-16k",
        "codec",
        "RVQ codec trained on the corpus: 16 kHz, 50 frames/s, 12 x 1024 codebooks (6 kbit/s; "
        "set_num_codebooks(n) for n x 0.5 kbit/s)",
        checkpoint=CHECKPOINTS / "codec-16k",
    )
)
