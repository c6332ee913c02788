"""Codec 2 (David Rowe's open-source low-bitrate speech codec) as a tokenizer, through the system ``libcodec2``.

A classical, training-free reference for ultra-low-bitrate speech tokens. Codec 2 works on 8 kHz mono speech and
packs each frame's parameters into ``bits_per_frame`` bits, most significant bit first. soundtok exposes each byte
of a packed frame as one level (codebook 256; the last byte holds only the remaining bits, so its codebook is
smaller), which makes the nominal bitrate exactly the codec's:

=========  ==========  ===========  ===========================  ======================
preset     mode        frame        levels                       bitrate
=========  ==========  ===========  ===========================  ======================
codec2-3200  3200      20 ms (160)  8 x 256                      3200 bit/s
codec2-1200  1200      40 ms (320)  6 x 256                      1200 bit/s
codec2-700c  700C      40 ms (320)  3 x 256 + 1 x 16             700 bit/s
=========  ==========  ===========  ===========================  ======================

Codec 2 is stateful and causal: each item is streamed through a fresh encoder/decoder, one frame at a time, so
memory stays bounded on any length and no chunking is needed (chunked == whole trivially; batch == one-by-one
because items never share state). Decoding is deterministic (see :func:`_private_copy`). The decoder's output
lags its input by an algorithmic delay, which ``decode`` removes so that output and input line up (the last
``delay`` samples of an item come out as zeros).

Install: ``apt-get install libcodec2-1.0`` (Debian/Ubuntu; or ``codec2``). The family is registered either way
and reports itself unavailable when the library is missing.
"""

from __future__ import annotations

import _ctypes
import atexit
import ctypes
import ctypes.util
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from soundtok.config import Config
from soundtok.registry import Preset, register_family, register_preset
from soundtok.tokenizers.base import AudioTokenizer
from soundtok.types import LevelSpec, frames_for

#: mode name -> (libcodec2 mode constant, decoder delay in samples at 8 kHz). The delays were measured here by
#: cross-correlating log-energy envelopes (5 ms hop) of input and output on 10 LibriSpeech utterances (median).
MODES: dict[str, tuple[int, int]] = {"3200": (0, 152), "1200": (5, 144), "700C": (8, 224)}


@functools.cache
def _system_library() -> str | None:
    """Path of the installed libcodec2, or None."""
    for name in (ctypes.util.find_library("codec2"), "libcodec2.so.1.0", "libcodec2.so.1.1", "libcodec2.so"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        path = _loaded_path(lib) or name
        _ctypes.dlclose(lib._handle)
        return path
    return None


def _loaded_path(lib: ctypes.CDLL) -> str | None:
    # dladdr-free lookup: the first mapping of the process whose file name matches
    maps = Path("/proc/self/maps")
    if maps.is_file():
        for line in maps.read_text().splitlines():
            if "libcodec2" in line and "/" in line:
                return line[line.index("/") :]
    return None


@functools.cache
def _private_copy() -> Path:
    """A copy of libcodec2 that only soundtok loads.

    Codec 2's decoder draws random phases for unvoiced speech from a static PRNG inside the library. Loading a
    private copy afresh for every item (and unloading it after) restarts that PRNG, so decoding the same tokens
    always gives the same waveform, whatever was decoded before.
    """
    source = _system_library()
    assert source is not None
    folder = Path(tempfile.mkdtemp(prefix="soundtok-codec2-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    target = folder / "libcodec2_soundtok.so"
    shutil.copyfile(source, target)
    return target


def _unavailable() -> str | None:
    if _system_library() is None:
        return "libcodec2 is not installed (apt-get install libcodec2-1.0)"
    return None


class _Codec2State:
    """A freshly loaded libcodec2 with one encoder or decoder state; both are freed when the block ends."""

    def __init__(self, mode: int) -> None:
        lib = ctypes.CDLL(str(_private_copy()), mode=ctypes.RTLD_LOCAL)
        lib.codec2_create.restype = ctypes.c_void_p
        lib.codec2_create.argtypes = [ctypes.c_int]
        for fn in ("codec2_destroy", "codec2_samples_per_frame", "codec2_bits_per_frame", "codec2_bytes_per_frame"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        lib.codec2_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        lib.codec2_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p]
        self.lib = lib
        self.ptr = lib.codec2_create(mode)
        if not self.ptr:
            _ctypes.dlclose(lib._handle)
            raise RuntimeError(f"libcodec2 could not create mode {mode}")
        self.samples = lib.codec2_samples_per_frame(self.ptr)
        self.bits = lib.codec2_bits_per_frame(self.ptr)
        self.nbytes = lib.codec2_bytes_per_frame(self.ptr)

    def __enter__(self) -> _Codec2State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.lib.codec2_destroy(self.ptr)
        _ctypes.dlclose(self.lib._handle)  # unload, so the next load starts with fresh static state


@dataclass(frozen=True)
class Codec2Config(Config):
    mode: str = "3200"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"codec2 mode must be one of {sorted(MODES)}, got {self.mode!r}")


@register_family("codec2", Codec2Config, unavailable=_unavailable)
class Codec2Tokenizer(AudioTokenizer):
    config: Codec2Config
    default_chunk_seconds = None  # streams frame by frame in bounded memory; never chunked

    def __init__(self, config: Codec2Config, name: str | None = None) -> None:
        super().__init__(config, name)
        self._mode, self.delay = MODES[config.mode]
        with _Codec2State(self._mode) as state:
            self._hop, bits = state.samples, state.bits
        self._level_bits = [min(8, bits - 8 * i) for i in range(-(-bits // 8))]

    @property
    def sample_rate(self) -> int:
        return 8000

    @property
    def levels(self) -> tuple[LevelSpec, ...]:
        return tuple(LevelSpec(hop_length=self._hop, codebook_size=2**b) for b in self._level_bits)

    @property
    def licence(self) -> str:
        return "LGPL-2.1 (libcodec2, linked at run time)"

    def _encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        frames = int(frames_for(wav.shape[-1], self._hop))
        codes = torch.zeros(len(self._level_bits), wav.shape[0], frames, dtype=torch.long)  # [L, B, T']
        pcm = (wav[:, 0].clamp(-1, 1) * 32767).round().to(torch.int16).numpy()  # [B, T]
        for b, n in enumerate(lengths.tolist()):
            item_frames = int(frames_for(n, self._hop))
            item = np.zeros(item_frames * self._hop, dtype=np.int16)
            item[:n] = pcm[b, :n]
            codes[:, b, :item_frames] = torch.from_numpy(self._encode_item(item))
        return list(codes)

    def _encode_item(self, pcm: np.ndarray) -> np.ndarray:
        """``[frames * hop]`` int16 -> ``[L, frames]`` codes."""
        with _Codec2State(self._mode) as state:
            packed = ctypes.create_string_buffer(state.nbytes)
            out = np.zeros((state.nbytes, len(pcm) // self._hop), dtype=np.uint8)
            for f in range(out.shape[1]):
                frame = np.ascontiguousarray(pcm[f * self._hop : (f + 1) * self._hop])
                state.lib.codec2_encode(state.ptr, packed, frame.ctypes.data)
                out[:, f] = np.frombuffer(packed.raw, dtype=np.uint8)
        shifts = np.array([8 - b for b in self._level_bits])[:, None]
        return (out >> shifts).astype(np.int64)  # the last byte's unused low bits are dropped

    def _decode(self, codes: list[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(codes).numpy()  # [L, B, T']
        wav = torch.zeros(stacked.shape[1], 1, stacked.shape[2] * self._hop)
        for b, n in enumerate(lengths.tolist()):
            item_frames = int(frames_for(n, self._hop))
            pcm = self._decode_item(stacked[:, b, :item_frames])
            aligned = pcm[self.delay :]  # remove the codec's algorithmic delay
            wav[b, 0, : len(aligned)] = torch.from_numpy(aligned.astype(np.float32) / 32768.0)
        return wav

    def _decode_item(self, codes: np.ndarray) -> np.ndarray:
        """``[L, frames]`` codes -> ``[frames * hop]`` int16."""
        shifts = np.array([8 - b for b in self._level_bits])[:, None]
        packed = (codes.astype(np.uint8) << shifts.astype(np.uint8)).astype(np.uint8)  # [L, frames]
        out = np.zeros(codes.shape[1] * self._hop, dtype=np.int16)
        with _Codec2State(self._mode) as state:
            for f in range(codes.shape[1]):
                frame = np.zeros(self._hop, dtype=np.int16)
                state.lib.codec2_decode(state.ptr, frame.ctypes.data, packed[:, f].tobytes())
                out[f * self._hop : (f + 1) * self._hop] = frame
        return out


for _mode in MODES:
    register_preset(
        Preset(
            name=f"codec2-{_mode.lower()}",
            family="codec2",
            description=f"Codec 2 {_mode} bit/s speech codec (8 kHz, classical, no training)",
            config=Codec2Config(mode=_mode),
        )
    )
