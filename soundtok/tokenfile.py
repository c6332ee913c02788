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
whose fingerprint differs from its own.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from soundtok.errors import TokenFileError
from soundtok.fileio import atomic_write
from soundtok.types import LevelSpec, TokenizerId, Tokens, frames_for

MAGIC = b"STOK"
VERSION = 1
SUFFIX = ".stok"
MAX_HEADER = 1 << 20
_PREFIX = struct.Struct("<4sHI")
_DTYPES: dict[str, np.dtype] = {"u1": np.dtype("<u1"), "u2": np.dtype("<u2"), "u4": np.dtype("<u4")}


def code_dtype(codebook_size: int) -> str:
    """The smallest stored type for codes in ``[0, codebook_size)``."""
    if codebook_size <= 1 << 8:
        return "u1"
    if codebook_size <= 1 << 16:
        return "u2"
    return "u4"


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
        header = json.loads(data[_PREFIX.size : _PREFIX.size + header_len].decode())
        tokenizer = TokenizerId.from_dict(header["tokenizer"])
        sample_rate, length = int(header["sample_rate"]), int(header["length"])
        level_info = [
            (int(lv["hop_length"]), int(lv["codebook_size"]), int(lv["frames"]), str(lv["dtype"]))
            for lv in header["levels"]
        ]
        metadata = header.get("metadata", {})
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise bad(f"malformed header ({type(exc).__name__}: {exc})") from None
    if sample_rate <= 0 or length <= 0 or not level_info or not isinstance(metadata, dict):
        raise bad("header has a non-positive sample rate or length, no levels, or non-object metadata")
    offset = _PREFIX.size + header_len
    levels, codes = [], []
    for i, (hop, size, frames, dtype) in enumerate(level_info):
        if dtype not in _DTYPES or hop <= 0 or size <= 1 or frames != int(frames_for(length, hop)):
            raise bad(
                f"level {i}: inconsistent description (hop {hop}, codebook {size}, frames {frames}, dtype {dtype!r})"
            )
        nbytes = frames * _DTYPES[dtype].itemsize
        if offset + nbytes > len(data) - 4:
            raise bad(f"level {i}: the file ends before its {frames} codes")
        arr = np.frombuffer(data, dtype=_DTYPES[dtype], count=frames, offset=offset).astype(np.int64)
        if arr.size and int(arr.max()) >= size:
            raise bad(f"level {i}: code {int(arr.max())} is outside its codebook of {size}")
        offset += nbytes
        levels.append(LevelSpec(hop_length=hop, codebook_size=size))
        codes.append(torch.from_numpy(arr)[None])
    if offset != len(data) - 4:
        raise bad(f"{len(data) - 4 - offset} unexpected bytes after the codes")
    tokens = Tokens(tuple(codes), torch.tensor([length]), sample_rate, tuple(levels), tokenizer)
    return TokenFile(tokens, metadata)


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
