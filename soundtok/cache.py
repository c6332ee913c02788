"""The one place for soundtok's cache folder and file hashes.

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
from pathlib import Path


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
