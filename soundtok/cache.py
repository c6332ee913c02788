"""The one place for soundtok's cache folder and file and weight hashes.

``cache_root()`` is ``$SOUNDTOK_CACHE``, else ``$XDG_CACHE_HOME/soundtok``, else ``~/.cache/soundtok``. Converted
models (Whisper, LLMs), the in-context-learning code caches and ``soundtok bench`` results live under it, each in
its own sub-folder.

>>> import hashlib
>>> sha256_bytes(b"abc") == hashlib.sha256(b"abc").hexdigest()
True
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def cache_root() -> Path:
    """``$SOUNDTOK_CACHE``, else ``$XDG_CACHE_HOME/soundtok``, else ``~/.cache/soundtok``."""
    if os.environ.get("SOUNDTOK_CACHE"):
        return Path(os.environ["SOUNDTOK_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "soundtok"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_tensors(state: Mapping[str, torch.Tensor], prefix: bytes = b"") -> str:
    """Hex SHA-256 of ``prefix``, then each tensor's name and raw bytes in name order: the hash of a set of
    weights (e.g. a ``state_dict()``), which any changed value changes and the dict's order does not.

    >>> import torch
    >>> a, b = torch.zeros(1), torch.ones(2)
    >>> sha256_tensors({"b": b, "a": a}) == sha256_tensors({"a": a, "b": b}) != sha256_tensors({"a": a, "b": -b})
    True
    """
    import torch

    digest = hashlib.sha256(prefix)
    for name, tensor in sorted(state.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
