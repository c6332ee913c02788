"""Feature encoders: continuous hidden states of pretrained speech models, for semantic tokens and probes.

- :class:`WhisperFeatures`: the offline Whisper models (``whisper-tiny.en``, ``whisper-base``), converted once
  from CTranslate2 to PyTorch and cached (:mod:`soundtok.encoders.whisper`);
- :class:`SSLFeatures`: a user's own HuBERT / wav2vec2 / WavLM folder through transformers
  (:mod:`soundtok.encoders.hf`);
- :class:`FeatureEncoder`, :class:`FeatureOutput` and :func:`load_encoder`: the common interface
  (:mod:`soundtok.encoders.base`, which defines layers, frames and batching).

transformers is imported only when an encoder is built.
"""

from soundtok.encoders.base import (
    EncoderUnavailableError,
    FeatureEncoder,
    FeatureOutput,
    UnknownEncoderError,
    list_encoders,
    load_encoder,
    register_encoder,
)
from soundtok.encoders.hf import SSLFeatures
from soundtok.encoders.whisper import WhisperFeatures, load_whisper_model, whisper_folder

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
