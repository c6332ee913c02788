"""The one contract every tokenizer family implements.

A family subclasses :class:`AudioTokenizer` and writes two hooks over frame-aligned audio:

* ``_encode(wav [B, C, T], lengths [B]) -> list of [B, T'_l]`` where ``T`` is a multiple of :attr:`stride`;
* ``_decode(codes: list of [B, T'_l], lengths [B]) -> wav [B, C, T'_l * hop_l]``.

Everything callers rely on lives here, once: input validation, resampling, channel conversion, padding,
per-item lengths, chunking of long inputs, trimming, and the tokenizer's identity.

Chunking rule (encode and decode alike). Long inputs are cut into chunks of ``chunk_seconds`` rounded down
to a multiple of :attr:`stride`. Each chunk is run with :attr:`context_samples` of real neighbouring signal
(or :attr:`decode_context_frames` of neighbouring codes) on each side, clipped at the item's edges, and only
the chunk's own frames/samples are kept. For a family whose receptive field fits inside that context the
chunked result equals the whole-input result exactly (up to float rounding); families with a larger receptive
field (e.g. full self-attention) state their tolerance. Memory is then bounded by the chunk size, whatever the
input length.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from soundtok.audio.io import check_waveform, convert_channels, resample
from soundtok.config import Config
from soundtok.errors import InvalidAudioError, TokenizerMismatchError
from soundtok.types import LevelSpec, TokenizerId, Tokens, frames_for, nominal_bitrate


class AudioTokenizer(nn.Module, ABC):
    """Audio -> discrete tokens -> audio.

    >>> import torch, soundtok
    >>> tok = soundtok.load("mulaw-8bit-8k")
    >>> wav = torch.rand(2, 1, 16000) * 2 - 1
    >>> tokens = tok.encode(wav, sample_rate=16000)
    >>> [tuple(c.shape) for c in tokens.codes], tokens.lengths.tolist()
    ([(2, 8000)], [8000, 8000])
    >>> tok.decode(tokens).shape
    torch.Size([2, 1, 8000])
    """

    family: ClassVar[str]
    config_class: ClassVar[type[Config]]
    #: samples of real signal each chunk needs on each side for chunked == whole (0: frames are independent)
    context_samples: int = 0  # families whose field depends on their config set it per instance
    #: frames of codes each decoded chunk needs on each side
    decode_context_frames: int = 0
    #: True if padding after an item changes its codes/audio (e.g. global normalisation); then items of
    #: different lengths are run one length-group at a time so batch results equal one-by-one results.
    pad_sensitive: ClassVar[bool] = False
    #: chunk length for long inputs; None for families that stream in bounded memory themselves
    default_chunk_seconds: ClassVar[float | None] = 30.0

    def __init__(self, config: Config, name: str | None = None) -> None:
        super().__init__()
        self.config = config
        self.name = name or self.family
        self._identity: TokenizerId | None = None

    # ----------------------------------------------------------------------------------------------------
    # what a family declares
    @property
    @abstractmethod
    def sample_rate(self) -> int: ...

    @property
    @abstractmethod
    def levels(self) -> tuple[LevelSpec, ...]: ...

    @property
    def channels(self) -> int:
        return 1

    @property
    def licence(self) -> str:
        """Licence of the weights/algorithm (shown by ``soundtok list``)."""
        return "Apache-2.0"

    @abstractmethod
    def _encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]: ...

    @abstractmethod
    def _decode(self, codes: list[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor: ...

    def code_vectors(self, level: int) -> torch.Tensor | None:
        """``[N_l, D]``: the vector each code of ``level`` stands for (a codebook entry as the decoder receives it,
        a k-means centroid), or None for a family without such a table. Codes close in this space sound alike;
        :func:`soundtok.llm.extend_vocab` uses it to initialise an LLM's audio-token embeddings."""
        if not 0 <= level < self.num_levels:
            raise IndexError(f"{self.name} has levels 0..{self.num_levels - 1}, not {level}")
        vectors = self._code_vectors(level)
        return None if vectors is None else vectors.detach().float().cpu()

    def _code_vectors(self, level: int) -> torch.Tensor | None:
        """A family's table for :meth:`code_vectors` (``level`` already checked); None: the family has none."""
        return None

    # ----------------------------------------------------------------------------------------------------
    # derived facts
    @property
    def frame_rates(self) -> tuple[float, ...]:
        return tuple(self.sample_rate / s.hop_length for s in self.levels)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return tuple(s.codebook_size for s in self.levels)

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    @property
    def stride(self) -> int:
        """Samples in the smallest unit that holds a whole number of frames at every level."""
        return math.lcm(*(s.hop_length for s in self.levels))

    @property
    def bitrate(self) -> float:
        """Nominal bits per second: sum over levels of frame rate x log2(codebook size)."""
        return nominal_bitrate(self.frame_rates, self.codebook_sizes)

    @property
    def token_rate(self) -> float:
        """Tokens per second of audio, all levels together (the context cost for an LLM)."""
        return sum(self.frame_rates)

    @property
    def identity(self) -> TokenizerId:
        if self._identity is None:
            h = hashlib.sha256((self.family + self.config.to_json() + self._identity_extra()).encode())
            for key, value in sorted(self.state_dict().items()):
                h.update(key.encode())
                h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
            self._identity = TokenizerId(self.family, self.name, h.hexdigest()[:16])
        return self._identity

    def _identity_extra(self) -> str:
        """Run-time settings that change the codes without changing config or weights (e.g. codebooks used)."""
        return ""

    def refresh_identity(self) -> None:
        """Forget the cached fingerprint (call after changing weights in place, e.g. in training)."""
        self._identity = None

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self._identity = None
        return super().load_state_dict(*args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, sample_rate={self.sample_rate}, levels={self.num_levels}, "
            f"bitrate={self.bitrate:.0f} bit/s"
        )

    # ----------------------------------------------------------------------------------------------------
    # the contract
    @torch.no_grad()
    def encode(
        self,
        wav: torch.Tensor,
        sample_rate: int,
        lengths: torch.Tensor | list[int] | None = None,
        *,
        chunk_seconds: float | None = None,
        progress: bool = False,
    ) -> Tokens:
        """Tokenize a batch ``[B, C, T]`` of audio at ``sample_rate``.

        ``lengths`` (samples, at ``sample_rate``) marks each item's valid prefix; by default every item
        is ``T`` long. Audio is resampled to :attr:`sample_rate` and mixed to :attr:`channels` first.
        ``progress`` shows a bar over chunks (useful on hour-long input).
        """
        check_waveform(wav, sample_rate)
        lengths = self._check_lengths(lengths, wav.shape[0], wav.shape[-1])
        wav = convert_channels(wav.float(), self.channels)
        if sample_rate != self.sample_rate:
            # per item, so an item's resampled signal never depends on its neighbours' padding
            items = [resample(wav[b, :, : int(n)], sample_rate, self.sample_rate) for b, n in enumerate(lengths)]
            lengths = torch.tensor([x.shape[-1] for x in items])
            wav = torch.zeros(len(items), self.channels, int(lengths.max()))
            for b, x in enumerate(items):
                wav[b, :, : x.shape[-1]] = x
        if int(lengths.min()) < 1:
            raise InvalidAudioError("an item has no samples left after resampling; it is too short to tokenize")
        with _inference_mode(self):
            codes = self._run_grouped(
                lambda idx: self._encode_chunked(wav[idx], lengths[idx], chunk_seconds, progress), lengths
            )
        return Tokens(tuple(codes), lengths.clone(), self.sample_rate, self.levels, self.identity)

    @torch.no_grad()
    def decode(self, tokens: Tokens, *, chunk_seconds: float | None = None, progress: bool = False) -> torch.Tensor:
        """Audio ``[B, C, T]`` at :attr:`sample_rate` from tokens made by this tokenizer.

        ``T`` is the longest item's length; item ``b`` is ``tokens.lengths[b]`` samples, zero after that.
        """
        self.identity.check_same(tokens.tokenizer)
        if tokens.sample_rate != self.sample_rate or tokens.levels != self.levels:
            raise TokenizerMismatchError(
                f"these tokens claim {tokens.sample_rate} Hz and levels {_describe(tokens.levels)}, but {self.name} "
                f"works at {self.sample_rate} Hz with {_describe(self.levels)}: their header is inconsistent with the "
                "tokenizer it names (edited or corrupt); tokenize the audio again"
            )
        for level, (c, n) in enumerate(zip(tokens.codes, self.codebook_sizes, strict=True)):
            if c.numel() and (int(c.min()) < 0 or int(c.max()) >= n):
                raise InvalidAudioError(f"level {level} holds codes outside [0, {n}); the tokens are corrupt")
        lengths = tokens.lengths.cpu()
        device = self._device()

        def run(idx: Any) -> list[torch.Tensor]:
            codes = [c[idx].to(device) for c in tokens.codes]
            return [self._decode_chunked(codes, lengths[idx], chunk_seconds, progress)]

        with _inference_mode(self):
            (wav,) = self._run_grouped(run, lengths)
        return wav

    # ----------------------------------------------------------------------------------------------------
    # machinery
    def _device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @staticmethod
    def _check_lengths(lengths: torch.Tensor | list[int] | None, batch: int, total: int) -> torch.Tensor:
        if lengths is None:
            return torch.full((batch,), total, dtype=torch.long)
        try:
            lengths = torch.as_tensor(lengths).cpu()
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise InvalidAudioError(f"lengths must be whole numbers of samples, one per item ({exc})") from None
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise InvalidAudioError(f"lengths must be whole numbers of samples, got {lengths.tolist()}")
        lengths = lengths.long()
        if lengths.shape != (batch,):
            raise InvalidAudioError(
                f"lengths must hold one length per item ({batch}), got shape {tuple(lengths.shape)}"
            )
        if int(lengths.min()) < 1 or int(lengths.max()) > total:
            raise InvalidAudioError(f"lengths must lie in [1, {total}] samples, got {lengths.tolist()}")
        return lengths

    def _run_grouped(self, fn: Callable[[Any], list[torch.Tensor]], lengths: torch.Tensor) -> list[torch.Tensor]:
        """Run ``fn(index) -> list of [b, ...]`` on the whole batch, or per length group if pad-sensitive,
        and reassemble outputs in the original order (padding with zeros)."""
        if not self.pad_sensitive or bool((lengths == lengths[0]).all()):
            return fn(slice(None))  # a view: no copy of the batch
        groups: dict[int, list[int]] = {}
        for b, n in enumerate(lengths.tolist()):
            groups.setdefault(n, []).append(b)
        parts = [(idx, fn(torch.tensor(idx))) for idx in groups.values()]
        outs = []
        for i in range(len(parts[0][1])):
            width = max(p[1][i].shape[-1] for p in parts)
            ref = parts[0][1][i]
            out = ref.new_zeros((lengths.shape[0], *ref.shape[1:-1], width))
            for idx, res in parts:
                out[torch.tensor(idx), ..., : res[i].shape[-1]] = res[i]
            outs.append(out)
        return outs

    def _chunk_samples(self, chunk_seconds: float | None, total: int) -> int:
        """Samples per chunk: a whole number of strides, or ``total`` for families that stream themselves."""
        if self.default_chunk_seconds is None:
            return max(total, self.stride)
        seconds = self.default_chunk_seconds if chunk_seconds is None else chunk_seconds
        if seconds <= 0:
            raise InvalidAudioError(f"chunk_seconds must be positive, got {seconds}")
        return max(1, int(seconds * self.sample_rate) // self.stride) * self.stride

    def _encode_chunked(
        self, wav: torch.Tensor, lengths: torch.Tensor, chunk_seconds: float | None, progress: bool
    ) -> list[torch.Tensor]:
        stride = self.stride
        padded = int(frames_for(int(lengths.max()), stride)) * stride  # a whole number of strides
        chunk = self._chunk_samples(chunk_seconds, padded)
        context = int(frames_for(self.context_samples, stride)) * stride
        device = self._device()  # windows move there one at a time; the whole input stays where it is
        pieces: list[list[torch.Tensor]] = []
        for start in _chunk_starts(padded, chunk, progress, "encode"):
            stop = min(start + chunk, padded)
            lo, hi = max(0, start - context), min(padded, stop + context)
            window_lengths = (lengths - lo).clamp(min=0, max=hi - lo)
            window = _masked_window(wav, lo, hi, window_lengths).to(device)  # [B, C, hi - lo], zero after each item
            codes = self._encode(window, window_lengths)
            pieces.append(
                [
                    c[:, (start - lo) // s.hop_length : (stop - lo) // s.hop_length].cpu()
                    for c, s in zip(codes, self.levels, strict=True)
                ]
            )
        codes = [torch.cat([p[level] for p in pieces], dim=1).long() for level in range(self.num_levels)]
        for level, spec in enumerate(self.levels):
            frames = frames_for(lengths, spec.hop_length)
            level_codes = codes[level][:, : int(frames.max())]  # [B, T'_l] of the longest item
            valid = torch.arange(level_codes.shape[1])[None] < frames[:, None]
            codes[level] = level_codes * valid  # padding frames hold 0, whatever the model emitted there
        return codes

    def _decode_chunked(
        self, codes: list[torch.Tensor], lengths: torch.Tensor, chunk_seconds: float | None, progress: bool
    ) -> torch.Tensor:
        stride = self.stride
        units = int(frames_for(int(lengths.max()), stride))  # strides in the longest item
        codes = [_pad_frames(c, units * stride // s.hop_length) for c, s in zip(codes, self.levels, strict=True)]
        chunk_units = self._chunk_samples(chunk_seconds, units * stride) // stride
        context_units = -(-self.decode_context_frames * max(s.hop_length for s in self.levels) // stride)
        pieces = []
        for start in _chunk_starts(units, chunk_units, progress, "decode"):
            stop = min(start + chunk_units, units)
            lo, hi = max(0, start - context_units), min(units, stop + context_units)
            window = [
                c[:, lo * stride // s.hop_length : hi * stride // s.hop_length]
                for c, s in zip(codes, self.levels, strict=True)
            ]
            window_lengths = (lengths - lo * stride).clamp(min=0, max=(hi - lo) * stride)
            wav = self._decode(window, window_lengths)  # [B, C, (hi - lo) * stride]
            pieces.append(wav[..., (start - lo) * stride : (stop - lo) * stride].float().cpu())
        wav = torch.cat(pieces, dim=-1)[..., : int(lengths.max())]
        mask = torch.arange(wav.shape[-1])[None, None, :] < lengths[:, None, None]
        return wav * mask


def _describe(levels: tuple[LevelSpec, ...]) -> str:
    return ", ".join(f"hop {s.hop_length} x {s.codebook_size} codes" for s in levels) or "none"


def _pad_frames(codes: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, T'] -> [B, width]``: cut or zero-pad along frames."""
    return torch.nn.functional.pad(codes[:, :width], (0, max(0, width - codes.shape[1])))


@contextlib.contextmanager
def _inference_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the duration (no dropout, no codebook updates), then the caller's mode again: tokenizing
    inside a training loop never changes the model or depends on training-time randomness."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _masked_window(wav: torch.Tensor, lo: int, hi: int, lengths: torch.Tensor) -> torch.Tensor:
    """``wav[..., lo:hi]`` zero-padded to ``hi - lo`` samples, with item ``b`` zeroed from ``lengths[b]`` on."""
    window = torch.nn.functional.pad(wav[..., lo:hi], (0, hi - lo - max(0, min(hi, wav.shape[-1]) - lo)))
    keep = torch.arange(hi - lo, device=wav.device)[None, None, :] < lengths.to(wav.device)[:, None, None]
    return window * keep


def _chunk_starts(total: int, chunk: int, progress: bool, what: str) -> Iterable[int]:
    starts = range(0, total, chunk)
    if not progress or len(starts) < 2:
        return starts
    from tqdm.auto import tqdm

    return tqdm(starts, desc=what, unit="chunk", leave=False)
