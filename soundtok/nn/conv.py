"""SEANet/DAC-style convolutional waveform encoder and decoder, causal or not, with a known receptive field.

Every convolution pads with zeros (never reflect), and given per-item ``lengths`` both networks zero each item's
activations past its end after every layer (the activations map 0 to 0), so a batched item sees exactly what it
would see alone: batched encoding equals one-by-one encoding. Each layer's reach is added up in
:func:`receptive_field`, which the tokenizer uses as its chunking context, so chunked == whole holds exactly.

Shapes: the encoder maps ``[B, 1, T]`` (T a multiple of ``hop = prod(strides)``) to ``[B, D, T / hop]``; the
decoder maps ``[B, D, T']`` to ``[B, 1, T' * hop]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


@dataclass(frozen=True)
class Reach:
    """How far one output frame looks beyond the input span it owns, in input samples."""

    left: int = 0
    right: int = 0

    def __add__(self, other: Reach) -> Reach:
        return Reach(self.left + other.left, self.right + other.right)


class Snake(nn.Module):
    """Snake activation ``x + sin^2(alpha x) / alpha`` (BigVGAN/DAC), good at periodic signals."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.sin(self.alpha * x).pow(2) / (self.alpha + 1e-9)


def activation(name: str, channels: int) -> nn.Module:
    """``snake`` (periodic-friendly, DAC) or ``elu`` (cheaper: no sine, EnCodec)."""
    if name == "snake":
        return Snake(channels)
    if name == "elu":
        return nn.ELU()
    raise ValueError(f"activation must be 'snake' or 'elu', got {name!r}")


class PaddedConv1d(nn.Module):
    """Conv1d with explicit zero padding: causal (all on the left) or centred; knows its reach."""

    def __init__(
        self, cin: int, cout: int, kernel: int, *, stride: int = 1, dilation: int = 1, causal: bool = False
    ) -> None:
        super().__init__()
        self.conv = weight_norm(nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation))
        span = (kernel - 1) * dilation  # input frames an output sees beyond its first
        # for a strided conv, output t owns inputs [t*s, t*s + s - 1]
        extra = span - (stride - 1)  # input frames seen beyond the span the output owns
        self.pad_left = extra if causal else (extra + 1) // 2
        self.pad_right = extra - self.pad_left
        self.stride = stride

    def reach(self, hop_in: int) -> Reach:
        return Reach(self.pad_left * hop_in, self.pad_right * hop_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.pad_left, self.pad_right)))  # [B, C, T / stride]


class PaddedConvTranspose1d(nn.Module):
    """Upsample by ``stride`` with a kernel of ``2 * stride``; output frame t owns samples [t*s, t*s + s)."""

    def __init__(self, cin: int, cout: int, stride: int, *, causal: bool = False) -> None:
        super().__init__()
        self.conv = weight_norm(nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride))
        self.stride = stride
        self.crop_left = 0 if causal else stride // 2

    def reach(self, hop_in: int) -> Reach:
        # each output sample mixes at most two neighbouring input frames
        return Reach(hop_in, hop_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # [B, C, (T' + 1) * s]
        return y[..., self.crop_left : self.crop_left + x.shape[-1] * self.stride]


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int, causal: bool, act: str = "snake") -> None:
        super().__init__()
        self.act1, self.act2 = activation(act, channels), activation(act, channels)
        self.conv1 = PaddedConv1d(channels, channels, 7, dilation=dilation, causal=causal)
        self.conv2 = PaddedConv1d(channels, channels, 1)

    def reach(self, hop_in: int) -> Reach:
        return self.conv1.reach(hop_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act2(self.conv1(self.act1(x))))


def _units(channels: int, causal: bool, dilations: tuple[int, ...], act: str) -> list[ResidualUnit]:
    return [ResidualUnit(channels, d, causal, act) for d in dilations]


class Encoder(nn.Module):
    """``[B, 1, T] -> [B, dim, T / hop]`` with channels doubling at each of the ``strides`` downsamplings."""

    def __init__(
        self,
        channels: int,
        strides: tuple[int, ...],
        dim: int,
        causal: bool,
        dilations: tuple[int, ...] = (1, 3, 9),
        act: str = "snake",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [PaddedConv1d(1, channels, 7, causal=causal)]
        width = channels
        for s in strides:
            layers += _units(width, causal, dilations, act)
            layers += [activation(act, width), PaddedConv1d(width, 2 * width, 2 * s, stride=s, causal=causal)]
            width *= 2
        layers += [activation(act, width), PaddedConv1d(width, dim, 3, causal=causal)]
        self.layers = nn.Sequential(*layers)
        self.strides = strides

    def receptive_field(self) -> Reach:
        total, hop = Reach(), 1
        for layer in self.layers:
            if isinstance(layer, PaddedConv1d | ResidualUnit):
                total = total + layer.reach(hop)
                if isinstance(layer, PaddedConv1d):
                    hop *= layer.stride
        return total

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths``: valid samples per item; activations past them are zeroed at every rate."""
        x, hop = wav, 1
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, PaddedConv1d):
                hop *= layer.stride
            if lengths is not None and isinstance(layer, PaddedConv1d | ResidualUnit):
                x = _mask(x, lengths, hop)
        return x  # [B, dim, T / hop]


class Decoder(nn.Module):
    """``[B, dim, T'] -> [B, 1, T' * hop]``, mirroring :class:`Encoder`."""

    def __init__(
        self,
        channels: int,
        strides: tuple[int, ...],
        dim: int,
        causal: bool,
        dilations: tuple[int, ...] = (1, 3, 9),
        act: str = "snake",
    ) -> None:
        super().__init__()
        width = channels * 2 ** len(strides)
        layers: list[nn.Module] = [PaddedConv1d(dim, width, 7, causal=causal)]
        for s in reversed(strides):
            layers += [activation(act, width), PaddedConvTranspose1d(width, width // 2, s, causal=causal)]
            width //= 2
            layers += _units(width, causal, dilations, act)
        layers += [activation(act, width), PaddedConv1d(width, 1, 7, causal=causal), nn.Tanh()]
        self.layers = nn.Sequential(*layers)
        self.strides = strides

    def receptive_field_frames(self) -> int:
        """Code frames an output sample may depend on beyond its own frame, on either side (an upper bound)."""
        hop = math.prod(self.strides)
        total, rate = Reach(), hop  # samples per step at the current layer
        for layer in self.layers:
            if isinstance(layer, PaddedConvTranspose1d):
                total = total + layer.reach(rate)
                rate //= layer.stride
            elif isinstance(layer, PaddedConv1d | ResidualUnit):
                total = total + layer.reach(rate)
        return -(-max(total.left, total.right) // hop)

    def forward(self, z: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths``: valid output samples per item; activations past them are zeroed at every rate."""
        rate = math.prod(self.strides)  # samples per step at the current layer
        x = z if lengths is None else _mask(z, lengths, rate)
        for layer in self.layers:
            x = layer(x)
            if isinstance(layer, PaddedConvTranspose1d):
                rate //= layer.stride
            if lengths is not None and isinstance(layer, PaddedConv1d | PaddedConvTranspose1d | ResidualUnit):
                x = _mask(x, lengths, rate)
        return x  # [B, 1, T' * hop]


def _mask(x: torch.Tensor, lengths: torch.Tensor, hop: int) -> torch.Tensor:
    """Zero ``x [B, C, T']`` past ``ceil(lengths / hop)`` steps per item."""
    steps = torch.div(lengths.to(x.device) + hop - 1, hop, rounding_mode="floor")
    return x * (torch.arange(x.shape[-1], device=x.device)[None, None, :] < steps[:, None, None])
