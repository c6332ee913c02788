"""Crash-safe writes (soundtok.fileio.atomic_write)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from soundtok.errors import OutputExistsError
from soundtok.fileio import atomic_write


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("x"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600: shared caches and outputs stay readable


def test_refuses_to_overwrite_and_cleans_up_after_a_failed_write(tmp_path: Path) -> None:
    path = atomic_write(tmp_path / "a.txt", lambda tmp: tmp.write_text("old"))
    with pytest.raises(OutputExistsError, match="--force"):
        atomic_write(path, lambda tmp: tmp.write_text("new"))

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail, force=True)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
