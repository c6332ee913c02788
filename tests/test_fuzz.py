"""Property-based fuzzing of what soundtok reads (a small budget here; ``benchmarks/fuzz.py`` runs the campaign).

Properties: a mutated token file or checkpoint folder is either refused with soundtok's own error or accepted with
exactly the original content (never an inconsistent one, never another exception); audio arrays of any shape,
values and sample rate are either refused with :class:`InvalidAudioError` or tokenized within range and back.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import soundtok
from soundtok.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from soundtok.errors import InvalidAudioError
from soundtok.testing import noise_batch
from soundtok.testing.fuzz import (
    ACCEPTED_INCONSISTENT,
    load_checkpoint_outcome,
    mutate_checkpoint_config,
    mutate_token_file,
    mutate_weights,
    read_and_decode,
)
from soundtok.tokenfile import to_bytes

BUDGET = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PRESETS = ("mulaw-8bit-8k", "toy-tiny")  # one level at 8 kHz; two levels at two rates


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, soundtok.AudioTokenizer]:
    import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny)

    return {name: soundtok.load(name) for name in PRESETS}


@pytest.fixture(scope="module")
def originals(tokenizers: dict[str, soundtok.AudioTokenizer]) -> dict[str, tuple[soundtok.Tokens, bytes]]:
    out = {}
    for name, tok in tokenizers.items():
        tokens = tok.encode(noise_batch([777])[0], tok.sample_rate)
        out[name] = (tokens, to_bytes(tokens, {"source": "noise.wav", "labels": {"a": [1, 2]}}))
    return out


@BUDGET
@given(preset=st.sampled_from(PRESETS), rng=st.randoms(use_true_random=False))
def test_mutated_token_files_are_refused_or_unchanged(
    tokenizers: dict[str, soundtok.AudioTokenizer],
    originals: dict[str, tuple[soundtok.Tokens, bytes]],
    preset: str,
    rng: random.Random,
) -> None:
    tokens, data = originals[preset]
    what, mutated = mutate_token_file(data, rng)
    assert read_and_decode(mutated, tokenizers, tokens) != ACCEPTED_INCONSISTENT, what


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import soundtok.testing.dummies  # noqa: F401

    return soundtok.save_checkpoint(soundtok.load("toy-tiny"), tmp_path_factory.mktemp("toy") / "ckpt")


@BUDGET
@given(rng=st.randoms(use_true_random=False), damage_weights=st.booleans(), old_style=st.booleans())
def test_mutated_checkpoints_are_refused_or_unchanged(
    toy_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
    rng: random.Random,
    damage_weights: bool,
    old_style: bool,
) -> None:
    folder = tmp_path_factory.mktemp("mutated")
    shutil.copytree(toy_checkpoint, folder, dirs_exist_ok=True)
    if old_style:  # saved before the weights recorded their config: types and shapes must catch it all
        from safetensors.torch import load_file, save_file

        save_file(load_file(folder / WEIGHTS_FILE), folder / WEIGHTS_FILE, metadata={"format": "pt"})
    meta = json.loads((folder / CONFIG_FILE).read_text())
    if damage_weights:
        (folder / WEIGHTS_FILE).write_bytes(mutate_weights((folder / WEIGHTS_FILE).read_bytes(), rng))
    else:
        (folder / CONFIG_FILE).write_bytes(mutate_checkpoint_config(meta, rng))
    original = soundtok.load("toy-tiny").config
    outcome = load_checkpoint_outcome(folder, original)
    # an old-style folder cannot tell a config edit that keeps every shape (e.g. a seed) from the original
    assert outcome != ACCEPTED_INCONSISTENT or old_style, (folder / CONFIG_FILE).read_text()[:500]


finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=32)


@BUDGET
@given(
    wav=arrays(
        np.float32, st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 300)), elements=finite_or_not
    ),
    sample_rate=st.one_of(st.integers(-10, 10**7), st.floats(allow_nan=True), st.sampled_from([8000, 16000, 44100])),
    lengths=st.one_of(st.none(), st.lists(st.one_of(st.integers(-5, 400), st.floats(0, 400)), min_size=1, max_size=3)),
)
def test_any_audio_array_is_refused_or_round_trips(
    tokenizers: dict[str, soundtok.AudioTokenizer], wav: np.ndarray, sample_rate: object, lengths: object
) -> None:
    tok = tokenizers["toy-tiny"]
    try:
        tokens = tok.encode(torch.from_numpy(wav), sample_rate, lengths)  # type: ignore[arg-type]
    except InvalidAudioError:
        return
    assert np.isfinite(wav).all() and np.abs(wav).max() <= 100 and isinstance(sample_rate, int)
    for level, size in enumerate(tok.codebook_sizes):
        assert 0 <= int(tokens.codes[level].min()) and int(tokens.codes[level].max()) < size
    out = tok.decode(tokens)
    assert out.shape == (wav.shape[0], tok.channels, int(tokens.lengths.max()))
