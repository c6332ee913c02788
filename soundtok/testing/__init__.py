"""Dummies shared by soundtok's tests and by users' own tests: short real clips and tiny tokenizers.

>>> from soundtok.testing import load_fixture
>>> wav, sr = load_fixture("digit")
>>> wav.shape[0], sr
(1, 16000)
"""

from __future__ import annotations

from pathlib import Path

import torch

DATA = Path(__file__).parent / "data"

#: name -> (file, labels); licences and sources in data/ATTRIBUTION.md
FIXTURES: dict[str, tuple[str, dict[str, str]]] = {
    "speech": (
        "speech.flac",
        {"transcript": "THE PARLIAMENT AND THE SCOTS LAID THEIR PROPOSALS BEFORE THE KING", "speaker": "8224"},
    ),
    "digit": ("digit.flac", {"digit": "7", "speaker": "jackson"}),
    "sneeze": ("sneeze.flac", {"category": "sneezing"}),
}


def fixture_path(name: str) -> Path:
    if name not in FIXTURES:
        raise KeyError(f"unknown fixture {name!r}; choose from {sorted(FIXTURES)}")
    return DATA / FIXTURES[name][0]


def load_fixture(name: str, sample_rate: int = 16000) -> tuple[torch.Tensor, int]:
    """A bundled clip as float32 ``[1, T]`` at ``sample_rate``."""
    from soundtok.audio.io import load_audio

    return load_audio(fixture_path(name), sample_rate=sample_rate, channels=1)


def noise_batch(lengths: list[int], channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random audio ``[B, C, max(lengths)]`` in [-0.5, 0.5], zero after each item's length, and its lengths."""
    gen = torch.Generator().manual_seed(seed)
    wav = torch.zeros(len(lengths), channels, max(lengths))
    for b, n in enumerate(lengths):
        wav[b, :, :n] = torch.rand(channels, n, generator=gen) - 0.5
    return wav, torch.tensor(lengths)
