"""What the tokenizers decoded by a :class:`~soundtok.nn.flow.FlowDecoder` into a frozen autoencoder's latents
share (``msn``, ``semantic``): the autoencoder, the latent normalisation, the decoder's objective and sampling
settings, and windowed decoding.

Shapes: B batch items, T samples, D latent channels, F latent frames, T' tokens, E decoder width.

**Long inputs, batching.** These families window long inputs themselves (``window_seconds``, default 60 s)
instead of the base class's chunking (``default_chunk_seconds = None``; the ``chunk_seconds`` argument of
encode/decode has no effect here). Decoding keeps ``passes x decoder reach`` frames on each side of a window,
because every ODE step widens the reach of one network pass (16 Euler steps x 6 layers x 8 frames = 768 frames,
12.3 s). Windows are whole blocks (:attr:`LatentFlowTokenizer.block_samples`), so a window's frames map to its
tokens exactly as in one pass. Windowed == whole and batched == one by one up to float rounding in attention.

The sampling settings (:class:`~soundtok.nn.flow.SamplingConfig`; :meth:`LatentFlowTokenizer.set_sampling`) are
part of the tokenizer's identity, since they change the decoded audio: tokens made before a change must be
re-encoded (or decoded with the old settings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soundtok.config import Config
from soundtok.errors import InvalidAudioError
from soundtok.latent import LatentAutoencoder, autoencoder_fingerprint, check_latents, resolve_autoencoder
from soundtok.nn.flow import FlowDecoder, FlowDecoderConfig, SamplingConfig, frame_mask
from soundtok.tokenizers.base import AudioTokenizer


@runtime_checkable
class LatentFlowConfig(Protocol):
    """What the config of a latent-flow family provides (:class:`~soundtok.tokenizers.msn.MSNConfig`,
    :class:`~soundtok.tokenizers.semantic.SemanticConfig`): the frozen latent space, and its decoder's config."""

    @property
    def autoencoder(self) -> str: ...  # "mel" or an autoencoder folder (soundtok.latent.resolve_autoencoder)

    @property
    def vocoder(self) -> str: ...  # for "mel": the vocoder (soundtok.vocoder.load_vocoder)

    @property
    def sample_rate(self) -> int: ...

    @property
    def latent_hop(self) -> int: ...

    @property
    def latent_dim(self) -> int: ...

    def flow_decoder(self) -> FlowDecoderConfig: ...


@dataclass
class LatentReconstruction:
    """Audio through the tokenizer in latent space (:meth:`LatentFlowTokenizer.reconstruct_latents`)."""

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
    squared = (rebuilt - target) ** 2 * frame_mask(target, frame_lengths)
    return squared.sum(dim=(1, 2)) / (frame_lengths.to(target.device) * target.shape[1])


class LatentFlowTokenizer(AudioTokenizer):
    """The common half of the latent-flow families; see the module docstring.

    A subclass (:class:`~soundtok.tokenizers.msn.MSNTokenizer`, the semantic family) builds
    ``self.decoder = FlowDecoder(self.flow)`` after its own encoder modules (so that a seeded init is the same as
    ever), and provides the encoder side and three hooks: :meth:`_token_vectors` (codes -> vectors ``[B, E, T']``),
    :meth:`_frame_vectors` (vectors -> one vector and one phase per latent frame) and :meth:`_encode`.
    ``block_samples`` is the smallest span holding a whole number of tokens and of latent frames (MSN: one token =
    3 frames; 50 Hz units: 4 units = 5 frames).
    """

    default_chunk_seconds = None  # windows long inputs itself (see the module docstring)
    latent_mean: Tensor  # [D] per-channel statistics of the training latents (buffers)
    latent_std: Tensor  # [D]
    autoencoder: LatentAutoencoder  # frozen; set in __init__ outside the module tree
    decoder: FlowDecoder

    def __init__(self, config: Config, name: str | None = None, *, autoencoder: LatentAutoencoder | None) -> None:
        if not isinstance(config, LatentFlowConfig):
            raise TypeError(f"{type(config).__name__} does not describe a latent space and a flow decoder")
        super().__init__(config, name)
        ae = autoencoder if autoencoder is not None else resolve_autoencoder(config.autoencoder, config.vocoder)
        facts = (ae.sample_rate, ae.hop_length, ae.latent_dim)
        if facts != (config.sample_rate, config.latent_hop, config.latent_dim):
            raise ValueError(
                f"the autoencoder gives (sample_rate, hop_length, latent_dim) = {facts}, the config says "
                f"{(config.sample_rate, config.latent_hop, config.latent_dim)}; set them in the config to match"
            )
        object.__setattr__(self, "autoencoder", ae)  # frozen and external: not a submodule, not in the checkpoint
        self.flow = config.flow_decoder()  # the decoder's settings
        self.latent_hop = config.latent_hop  # samples per latent frame
        self._sample_rate = config.sample_rate
        self.register_buffer("latent_mean", torch.zeros(self.flow.latent_dim))
        self.register_buffer("latent_std", torch.ones(self.flow.latent_dim))
        self._sampling = self.flow.sampling
        self.window_seconds = 60.0  # audio per window on long inputs; the result does not depend on it

    # ----------------------------------------------------------------------------------------------------
    # what a subclass provides
    @property
    def block_samples(self) -> int:
        """Samples in the smallest span holding whole numbers of tokens and of latent frames."""
        return math.lcm(self.levels[0].hop_length, self.latent_hop)

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
        return self._sample_rate

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
        if self.flow.objective == "mse":
            return ae  # deterministic: sampling settings do not change the audio
        return f"{ae},sampling={self._sampling.to_json()}"

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, decoder={self.flow.objective!r}, sampling={self._sampling}"

    # ----------------------------------------------------------------------------------------------------
    # latent-space API (training, benchmarks)
    def latents(self, wav: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Audio ``[B, T]`` -> (normalised latents ``[B, D, T // latent_hop]``, valid frames ``[B]``)."""
        z = self._autoencoder_on(wav.device).encode(wav, lengths)  # [B, D, F]
        if lengths is None:
            lengths = torch.full((wav.shape[0],), wav.shape[-1])
        return self.normalise(z), ceil_div(lengths.to(z.device), self.latent_hop)

    def normalise(self, z: Tensor) -> Tensor:
        return (z - self.latent_mean[:, None]) / self.latent_std[:, None]

    def denormalise(self, z: Tensor) -> Tensor:
        return z * self.latent_std[:, None] + self.latent_mean[:, None]

    @torch.no_grad()
    def set_latent_statistics(self, latents: Tensor, frame_lengths: Tensor | None = None) -> None:
        """Per-channel mean and std of raw latents ``[B, D, F]`` over their valid frames, kept as buffers."""
        check_latents(latents, self.flow.latent_dim)
        valid = frame_mask(latents, frame_lengths)  # [B, 1, F]
        count = valid.sum() * 1.0
        mean = (latents * valid).sum(dim=(0, 2)) / count
        var = ((latents - mean[:, None]) ** 2 * valid).sum(dim=(0, 2)) / count
        self.latent_mean.copy_(mean)
        self.latent_std.copy_(var.sqrt().clamp(min=1e-3))
        self.refresh_identity()

    def decoder_loss(
        self, x1: Tensor, vectors: Tensor, frame_lengths: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """The decoder's objective (:meth:`FlowDecoder.loss`) on normalised latents ``x1 [B, D, F]`` (zero after
        ``frame_lengths``) given token vectors ``[B, E, T']``: (loss over valid frames, prediction ``[B, D, F]``).
        ``t``, ``x0`` and the condition dropout come from ``generator`` (CPU)."""
        frame_vectors, phase = self._frame_vectors(vectors, x1.shape[-1])
        return self.decoder.loss(x1, frame_vectors, phase, frame_lengths, generator)

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
        frames_per_block = block // self.latent_hop
        blocks = max(ceil_div(c.shape[1], n) for c, n in zip(levels, per_block, strict=True))
        levels = [F.pad(c, (0, blocks * n - c.shape[1])) for c, n in zip(levels, per_block, strict=True)]
        batch, frames = levels[0].shape[0], blocks * frames_per_block
        if frame_lengths is None:
            frame_lengths = torch.full((batch,), frames)
        frame_lengths = frame_lengths.to(levels[0].device)
        x0 = self.decoder.initial_noise(frame_lengths, frames, self._sampling).to(levels[0].device)  # [B, D, F]
        window = max(1, int(self.window_seconds * self.sample_rate) // block)
        context = ceil_div(self._decode_reach(), frames_per_block)  # blocks on each side
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
        return z * frame_mask(z, frame_lengths)

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
            token_lengths = ceil_div(lengths, hop)
            valid = torch.arange(codes[0].shape[1], device=codes[0].device)[None] < token_lengths[:, None]
            rebuilt = self.decode_latents(codes, frame_lengths)
            return LatentReconstruction(target, rebuilt, frame_lengths, codes[0] * valid, token_lengths)
        finally:
            self.train(was_training)

    # ----------------------------------------------------------------------------------------------------
    # decoding (the contract's second half)
    def _decode(self, codes: list[Tensor], lengths: Tensor) -> Tensor:
        frame_lengths = ceil_div(lengths.to(codes[0].device), self.latent_hop)
        z = self.denormalise(self.decode_latents(codes, frame_lengths))  # [B, D, F], whole blocks
        wav = self._autoencoder_on(z.device).decode(z, frame_lengths)  # [B, 1, F * latent_hop]
        return wav[..., : codes[0].shape[1] * self.levels[0].hop_length]

    def _decode_reach(self) -> int:
        """Latent frames on each side that one decoded frame depends on, through every network pass."""
        return self.decoder.passes(self._sampling) * self.decoder.reach

    def _sample(self, codes: list[Tensor], frame_lengths: Tensor, x0: Tensor) -> Tensor:
        """One window of whole blocks: codes -> normalised latents ``[B, D, F]`` from the initial state ``x0``."""
        frame_vectors, phase = self._frame_vectors(self._token_vectors(codes), x0.shape[-1])
        return self.decoder.sample(frame_vectors, phase, frame_lengths, x0, self._sampling)

    def _autoencoder_on(self, device: torch.device) -> LatentAutoencoder:
        """The autoencoder, moved to ``device`` if it is a module (``.to()`` of the tokenizer does not reach it)."""
        if isinstance(self.autoencoder, nn.Module):
            self.autoencoder.to(device)
        return self.autoencoder


def ceil_div(a: Any, b: int) -> Any:
    return -(-a // b)
