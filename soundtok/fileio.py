"""Crash-safe file writing, used by every writer in soundtok (audio, token files, shards, manifests, checkpoints).

A file is written under a hidden temporary name in its target folder, flushed to disk, then renamed over the
target: readers see either the old file or the complete new one, never half of it.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from soundtok.errors import OutputExistsError, OutputLockedError


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


class RunLock:
    """Keeps two runs from writing to one output folder at once.

    Two ``fcntl.flock`` locks in the folder, which the kernel releases when a process dies, so a killed run never
    leaves a stale lock: the run's main process holds ``.soundtok-run.lock`` exclusively (and writes its pid
    there), and every process of the run, the main one included, holds ``.soundtok-writers.lock`` shared while it
    writes. :meth:`acquire` (main process) refuses while either is held by another run, so a rerun started while an
    orphaned worker of a killed run still writes is refused too; then every process calls :meth:`join`.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with RunLock(folder) as lock:
    ...     lock.acquire(); lock.join()
    ...     RunLock(folder).acquire()
    Traceback (most recent call last):
    soundtok.errors.OutputLockedError: ...
    """

    RUN_FILE = ".soundtok-run.lock"
    WRITERS_FILE = ".soundtok-writers.lock"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self._files: list[Any] = []

    def acquire(self) -> None:
        """Main process, before anything is read or written: hold the folder, or raise :class:`OutputLockedError`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        run = self._open(self.RUN_FILE, "a+")
        if not _try_lock(run, exclusive=True):
            holder = (self.folder / self.RUN_FILE).read_text().strip() or "a process"
            raise OutputLockedError(
                f"{self.folder} is being written by another run ({holder}); wait for it to finish or stop it, "
                "then run again"
            )
        writers = open(self.folder / self.WRITERS_FILE, "a")  # noqa: SIM115 (closed at once)
        try:
            if not _try_lock(writers, exclusive=True):
                previous = (self.folder / self.RUN_FILE).read_text().strip() or "an earlier run"
                raise OutputLockedError(
                    f"processes of an earlier run on {self.folder} are still writing (last run: {previous}); "
                    f"stop them (fuser -v {self.folder / self.WRITERS_FILE}) or wait, then run again"
                )
        finally:
            writers.close()  # releases it: no other run can take it while we hold the run lock
        run.seek(0)
        run.truncate()
        run.write(f"pid {os.getpid()} (launched by pid {os.getppid()}) on {socket.gethostname()}\n")
        run.flush()

    def join(self) -> None:
        """Every process of the run (after the main one's :meth:`acquire`): hold the writers' lock, shared."""
        import fcntl

        writers = self._open(self.WRITERS_FILE, "a")
        fcntl.flock(writers, fcntl.LOCK_SH)

    def release(self) -> None:
        for f in reversed(self._files):
            f.close()  # closing drops the flock
        self._files = []

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _open(self, name: str, mode: str) -> Any:
        f = open(self.folder / name, mode)  # noqa: SIM115 (held until release)
        self._files.append(f)
        return f


def _try_lock(f: Any, *, exclusive: bool) -> bool:
    import fcntl

    try:
        fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
