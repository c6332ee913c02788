"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from soundtok.corpus import AudioItem, Manifest
from soundtok.testing import fixture_path

#: overrides that shrink configs/codec-16k.yaml to a toy codec with toy discriminators (GAN recipe tests)
TINY_CODEC = [
    "model={channels: 4, strides: [2, 4], latent_dim: 8, num_quantizers: 3, codebook_size: 16}",
    "discriminator={width: 0.05, periods: [2, 3], stft_resolutions: [[256, 64]]}",
    "data.batch_size=2",
    "data.segment_seconds=0.1",
    "data.eval_items=2",
    "data.eval_seconds=0.3",
    "log_every=1",
]


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
