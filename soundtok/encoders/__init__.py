"""Feature encoders: continuous hidden states of pretrained speech models, for semantic tokens and probes.

- :class:`WhisperFeatures`: the offline Whisper models (``whisper-tiny.en``, ``whisper-base``), converted once
  from CTranslate2 to PyTorch and cached (:mod:`soundtok.encoders.whisper`);
- :class:`SSLFeatures`: a user's own HuBERT / wav2vec2 / WavLM folder through transformers
  (:mod:`soundtok.encoders.hf`);
- :class:`FeatureEncoder` and :class:`FeatureOutput`: the common interface (:mod:`soundtok.encoders.base`, which
  defines layers, frames and batching, and holds the registry of names that :func:`load_encoder` reads).

transformers is imported only when an encoder is built.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from soundtok.encoders.base import (
    ENCODERS,
    EncoderUnavailableError,
    FeatureEncoder,
    FeatureOutput,
    UnknownEncoderError,
    list_encoders,
    register_encoder,
)
from soundtok.encoders.hf import SSLFeatures
from soundtok.encoders.whisper import WhisperFeatures, load_whisper_model, whisper_folder
from soundtok.errors import CheckpointError

__all__ = [
    "EncoderUnavailableError",
    "FeatureEncoder",
    "FeatureOutput",
    "SSLFeatures",
    "UnknownEncoderError",
    "WhisperFeatures",
    "list_encoders",
    "load_encoder",
    "load_whisper_model",
    "register_encoder",
    "whisper_folder",
]


def load_encoder(
    name_or_path: str | os.PathLike[str], layers: int | Sequence[int] | None = None, **options: Any
) -> FeatureEncoder:
    """A registered encoder (``whisper-tiny.en``, ``whisper-base``) or a local transformers folder holding a
    HuBERT / wav2vec2 / WavLM model. ``layers`` sets the default layers ``forward`` returns (all when None)."""
    key = os.fspath(name_or_path)
    if key in ENCODERS:
        return ENCODERS[key](layers=layers, **options)
    path = Path(key).expanduser()
    if path.is_dir():
        return SSLFeatures(path, layers=layers, **options)  # builds the model through transformers
    if path.exists() or os.sep in key or key.startswith((".", "~")):
        raise CheckpointError(f"{key}: no such model folder (a folder with config.json and model weights)")
    raise UnknownEncoderError(
        f"unknown feature encoder {key!r}; choose one of {sorted(ENCODERS)} or pass a local folder holding a "
        "HuBERT / wav2vec2 / WavLM model saved with save_pretrained"
    )
