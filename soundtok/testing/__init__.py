"""Dummies shared by soundtok's tests and by users' own tests: short real clips and tiny tokenizers.

>>> from soundtok.testing import load_fixture
>>> wav, sr = load_fixture("digit")
>>> wav.shape[0], sr
(1, 16000)
"""

from __future__ import annotations

import torch

# the bundled clips live in soundtok.fixtures (library code uses them too); re-exported here for users' tests
from soundtok.fixtures import DATA, FIXTURES, fixture_path, load_fixture

__all__ = ["DATA", "FIXTURES", "fixture_path", "load_fixture", "noise_batch"]


def noise_batch(lengths: list[int], channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random audio ``[B, C, max(lengths)]`` in [-0.5, 0.5], zero after each item's length, and its lengths."""
    gen = torch.Generator().manual_seed(seed)
    wav = torch.zeros(len(lengths), channels, max(lengths))
    for b, n in enumerate(lengths):
        wav[b, :, :n] = torch.rand(channels, n, generator=gen) - 0.5
    return wav, torch.tensor(lengths)
