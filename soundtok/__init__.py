"""soundtok: audio <-> discrete tokens that a language model can read and write.

>>> import torch, soundtok
>>> tok = soundtok.load("mulaw-8bit-16k")
>>> tokens = tok.encode(torch.zeros(1, 1, 1600), sample_rate=16000)
>>> tok.decode(tokens).shape
torch.Size([1, 1, 1600])
"""

__version__ = "0.1.0"

from soundtok.checkpoint import save_checkpoint  # noqa: E402
from soundtok.errors import (  # noqa: E402
    AudioLoadingError,
    CheckpointError,
    InvalidAudioError,
    SoundtokError,
    TokenFileError,
    TokenizerMismatchError,
)
from soundtok.registry import build, list_presets, load, load_checkpoint  # noqa: E402
from soundtok.tokenizers.base import AudioTokenizer  # noqa: E402
from soundtok.types import LevelSpec, TokenizerId, Tokens  # noqa: E402

__all__ = [
    "AudioLoadingError",
    "AudioTokenizer",
    "CheckpointError",
    "InvalidAudioError",
    "LevelSpec",
    "SoundtokError",
    "TokenFileError",
    "TokenizerId",
    "TokenizerMismatchError",
    "Tokens",
    "__version__",
    "build",
    "list_presets",
    "load",
    "load_checkpoint",
    "save_checkpoint",
]
