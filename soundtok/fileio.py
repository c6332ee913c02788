"""Crash-safe file writing, used by every writer in soundtok (audio, token files, shards, manifests, checkpoints).

A file is written under a hidden temporary name in its target folder, flushed to disk, then renamed over the
target: readers see either the old file or the complete new one, never half of it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from soundtok.errors import OutputExistsError


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's) content to disk; folders that cannot be opened are skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object], *, force: bool = False) -> Path:
    """Create ``path`` by calling ``write(tmp_path)``, syncing, then renaming; refuses to replace an existing
    file unless ``force``. On any error the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists; pass --force (force=True) to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_jsonl(path: str | os.PathLike[str], error: type[Exception], what: str) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed value)`` for each non-empty line of a UTF-8 JSON-lines file; an unreadable file, a
    file that is not UTF-8 or a line that is not JSON raises ``error`` naming the file (and the line) and ``what``
    it should hold."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: {what} are UTF-8 JSON lines; this file is not UTF-8") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}:{n}: not a JSON object ({exc.msg}); is the file truncated?") from None
