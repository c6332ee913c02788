"""The three short real clips bundled with soundtok, for library code (e.g. the Opus delay calibration), tests
and examples alike.

The files stay in ``soundtok/testing/data/`` with their ``ATTRIBUTION.md`` (sources and licences), so the package
data of the wheel is unchanged; this module is the one place that knows where they are and what they hold.
:mod:`soundtok.testing` re-exports these names for users' tests.

>>> from soundtok.fixtures import load_fixture
>>> wav, sr = load_fixture("digit")
>>> wav.shape[0], sr
(1, 16000)
"""

from __future__ import annotations

from pathlib import Path

import torch

DATA = Path(__file__).parent / "testing" / "data"

#: name -> (file, labels); licences and sources in testing/data/ATTRIBUTION.md
FIXTURES: dict[str, tuple[str, dict[str, str]]] = {
    "speech": (
        "speech.flac",
        {"transcript": "THE PARLIAMENT AND THE SCOTS LAID THEIR PROPOSALS BEFORE THE KING", "speaker": "8224"},
    ),
    "digit": ("digit.flac", {"digit": "7", "speaker": "jackson"}),
    "sneeze": ("sneeze.flac", {"category": "sneezing"}),
}


def fixture_path(name: str) -> Path:
    """The file of a bundled clip (``"speech"``, ``"digit"`` or ``"sneeze"``)."""
    if name not in FIXTURES:
        raise KeyError(f"unknown fixture {name!r}; choose from {sorted(FIXTURES)}")
    return DATA / FIXTURES[name][0]


def load_fixture(name: str, sample_rate: int = 16000) -> tuple[torch.Tensor, int]:
    """A bundled clip as float32 ``[1, T]`` at ``sample_rate``."""
    from soundtok.audio.io import load_audio

    return load_audio(fixture_path(name), sample_rate=sample_rate, channels=1)
