"""The ``.stok`` token file: the codes of one audio item, with who made them.

Layout (all integers little-endian)::

    offset   size  field
    0        4     magic  b"STOK"
    4        2     format version, u16 (this code writes and reads version 1)
    6        4     header length H in bytes, u32 (at most 1 MiB)
    10       H     header: a UTF-8 JSON object (below)
    10+H     ...   codes, level after level; level l is ``frames`` codes stored as ``dtype``
    end-4    4     CRC-32 of every byte before it, u32

Header::

    {"tokenizer": {"family": "pcm", "name": "mulaw-8bit-16k", "fingerprint": "5b5c65427a0dd39d"},
     "sample_rate": 16000, "length": 48000,            # audio samples the codes stand for
     "levels": [{"hop_length": 320, "frame_rate": 50.0, "codebook_size": 1024, "frames": 150, "dtype": "u2"}],
     "metadata": {...}}                                 # free-form: source file, labels, ...

``dtype`` is the smallest unsigned type that holds the codebook: ``u1`` (<= 256 codes), ``u2`` (<= 65536) or
``u4``. The fingerprint hashes the tokenizer's config and weights; :meth:`AudioTokenizer.decode` refuses tokens
whose fingerprint, sample rate or levels differ from its own.

Reading validates the header as a :class:`~soundtok.config.Config` (:class:`Header`): every field typed, numbers
finite and in range, ``frame_rate == sample_rate / hop_length``, ``frames == ceil(length / hop_length)``, metadata
at most :data:`MAX_METADATA_DEPTH` deep; anything else is a :class:`TokenFileError` naming the field.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from soundtok.config import Config
from soundtok.errors import TokenFileError
from soundtok.fileio import atomic_write
from soundtok.types import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, LevelSpec, TokenizerId, Tokens

MAGIC = b"STOK"
VERSION = 1
SUFFIX = ".stok"
MAX_HEADER = 1 << 20
MAX_LEVELS = 256
MAX_HOP = 1 << 24
MAX_CODEBOOK = 1 << 32  # what u4 holds
MAX_NAME = 512  # characters of a tokenizer's family, name or fingerprint
MAX_METADATA_DEPTH = 32
_PREFIX = struct.Struct("<4sHI")
_DTYPES: dict[str, np.dtype] = {"u1": np.dtype("<u1"), "u2": np.dtype("<u2"), "u4": np.dtype("<u4")}


def code_dtype(codebook_size: int) -> str:
    """The smallest stored type for codes in ``[0, codebook_size)``."""
    if codebook_size <= 1 << 8:
        return "u1"
    if codebook_size <= 1 << 16:
        return "u2"
    return "u4"


@dataclass(frozen=True)
class TokenizerHeader(Config):
    family: str
    name: str
    fingerprint: str

    def __post_init__(self) -> None:
        for key in ("family", "name", "fingerprint"):
            if not 0 < len(getattr(self, key)) <= MAX_NAME:
                raise ValueError(f"tokenizer.{key} must hold 1 to {MAX_NAME} characters")


@dataclass(frozen=True)
class LevelHeader(Config):
    hop_length: int
    frame_rate: float
    codebook_size: int
    frames: int
    dtype: str

    def __post_init__(self) -> None:
        if not 1 <= self.hop_length <= MAX_HOP:
            raise ValueError(f"hop_length {self.hop_length} is outside [1, {MAX_HOP}]")
        if not 2 <= self.codebook_size <= MAX_CODEBOOK:
            raise ValueError(f"codebook_size {self.codebook_size} is outside [2, {MAX_CODEBOOK}]")
        expected = code_dtype(self.codebook_size)
        if self.dtype != expected:
            raise ValueError(f"dtype {self.dtype!r} for a codebook of {self.codebook_size} (expected {expected!r})")


@dataclass(frozen=True)
class Header(Config):
    """A token file's header, validated field by field (module docstring)."""

    tokenizer: TokenizerHeader
    sample_rate: int
    length: int
    levels: tuple[LevelHeader, ...]
    metadata: dict[str, Any] = field(default_factory=dict)  # optional, as it always was

    def __post_init__(self) -> None:
        if not MIN_SAMPLE_RATE <= self.sample_rate <= MAX_SAMPLE_RATE:
            raise ValueError(f"sample_rate {self.sample_rate} is outside [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}]")
        if self.length < 1:
            raise ValueError(f"length {self.length} is not a positive number of samples")
        if not 1 <= len(self.levels) <= MAX_LEVELS:
            raise ValueError(f"{len(self.levels)} levels (a token file holds 1 to {MAX_LEVELS})")
        for i, level in enumerate(self.levels):
            if level.frames != -(-self.length // level.hop_length):
                raise ValueError(
                    f"level {i}: {level.frames} frames cannot stand for {self.length} samples at hop {level.hop_length}"
                )
            if not math.isclose(level.frame_rate, self.sample_rate / level.hop_length, rel_tol=1e-9):
                raise ValueError(f"level {i}: frame_rate {level.frame_rate} is not sample_rate / hop_length")
        if _depth(self.metadata) > MAX_METADATA_DEPTH:
            raise ValueError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")


def _depth(value: Any) -> int:
    """How deeply a JSON value nests (iteratively: a hostile file must not exhaust the stack here either)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_METADATA_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


@dataclass
class TokenFile:
    tokens: Tokens  # one item
    metadata: dict[str, Any] = field(default_factory=dict)


def to_bytes(tokens: Tokens, metadata: dict[str, Any] | None = None) -> bytes:
    """Serialise a one-item :class:`Tokens`."""
    if tokens.batch_size != 1:
        raise ValueError(f"a token file holds one item; got a batch of {tokens.batch_size} (use tokens.item(i))")
    levels, payload = [], []
    for level, spec in enumerate(tokens.levels):
        frames = int(tokens.frame_lengths(level)[0])
        dtype = code_dtype(spec.codebook_size)
        codes = tokens.codes[level][0, :frames].cpu().numpy().astype(_DTYPES[dtype])
        levels.append(
            {
                "hop_length": spec.hop_length,
                "frame_rate": tokens.sample_rate / spec.hop_length,
                "codebook_size": spec.codebook_size,
                "frames": frames,
                "dtype": dtype,
            }
        )
        payload.append(codes.tobytes())
    header = json.dumps(
        {
            "tokenizer": tokens.tokenizer.to_dict(),
            "sample_rate": tokens.sample_rate,
            "length": int(tokens.lengths[0]),
            "levels": levels,
            "metadata": metadata or {},
        },
        sort_keys=True,
    ).encode()
    body = _PREFIX.pack(MAGIC, VERSION, len(header)) + header + b"".join(payload)
    return body + struct.pack("<I", zlib.crc32(body))


def from_bytes(data: bytes, source: str = "<bytes>") -> TokenFile:
    """Parse a token file; anything malformed raises :class:`TokenFileError` naming the problem."""

    def bad(why: str) -> TokenFileError:
        return TokenFileError(f"{source}: {why}")

    if len(data) < _PREFIX.size + 4:
        raise bad(f"{len(data)} bytes is too short for a soundtok token file (truncated?)")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise bad(f"not a soundtok token file (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise bad(f"token file format version {version}; this soundtok reads version {VERSION} (upgrade soundtok)")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise bad("checksum mismatch: the file is truncated or corrupt")
    if header_len > MAX_HEADER or _PREFIX.size + header_len > len(data) - 4:
        raise bad(f"header length {header_len} does not fit in the file")
    try:
        header = Header.from_dict(json.loads(data[_PREFIX.size : _PREFIX.size + header_len].decode()))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, TypeError, ValueError) as exc:
        raise bad(
            f"invalid header ({type(exc).__name__}: {exc}); the file is corrupt or edited: tokenize the audio again"
        ) from None
    offset = _PREFIX.size + header_len
    levels, codes = [], []
    for i, level in enumerate(header.levels):
        nbytes = level.frames * _DTYPES[level.dtype].itemsize
        if offset + nbytes > len(data) - 4:
            raise bad(f"level {i}: the file ends before its {level.frames} codes")
        arr = np.frombuffer(data, dtype=_DTYPES[level.dtype], count=level.frames, offset=offset).astype(np.int64)
        if arr.size and int(arr.max()) >= level.codebook_size:
            raise bad(f"level {i}: code {int(arr.max())} is outside its codebook of {level.codebook_size}")
        offset += nbytes
        levels.append(LevelSpec(hop_length=level.hop_length, codebook_size=level.codebook_size))
        codes.append(torch.from_numpy(arr)[None])
    if offset != len(data) - 4:
        raise bad(f"{len(data) - 4 - offset} unexpected bytes after the codes")
    tokenizer = TokenizerId(**header.tokenizer.to_dict())
    tokens = Tokens(tuple(codes), torch.tensor([header.length]), header.sample_rate, tuple(levels), tokenizer)
    return TokenFile(tokens, header.metadata)


def write_token_file(
    path: str | os.PathLike[str], tokens: Tokens, metadata: dict[str, Any] | None = None, *, force: bool = False
) -> Path:
    """Write one item atomically; refuses to overwrite unless ``force``."""
    data = to_bytes(tokens, metadata)
    path = Path(path)
    atomic_write(path, lambda tmp: tmp.write_bytes(data), force=force)
    return path


def read_token_file(path: str | os.PathLike[str]) -> TokenFile:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return from_bytes(data, source=str(path))
