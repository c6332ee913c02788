"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from soundtok.corpus import AudioItem, Manifest
from soundtok.testing import fixture_path


@pytest.fixture(scope="session")
def fixture_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A training manifest of the three bundled clips, each in a train and a test split (for recipe tests)."""
    items = [
        AudioItem(id=f"{name}-{split}", path=fixture_path(name), duration=1.0, split=split, dataset=name)
        for name in ("speech", "digit", "sneeze")
        for split in ("train", "test")
    ]
    path = tmp_path_factory.mktemp("data") / "m.jsonl"
    Manifest(items).to_jsonl(path)
    return path
