"""Built-in tokenizer families. Importing this package registers them and their presets."""

from soundtok.tokenizers import codec, codec2, llm_codec, msn, pcm, semantic  # noqa: F401
from soundtok.tokenizers.base import AudioTokenizer

__all__ = ["AudioTokenizer"]
