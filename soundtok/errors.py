"""Domain exceptions. Every error soundtok raises on bad input derives from :class:`SoundtokError`,
so a caller (or the CLI) can catch one type and show the message, which always says what went wrong
and what to do about it."""

from __future__ import annotations


class SoundtokError(Exception):
    """Base class of every error soundtok raises on purpose."""


class AudioLoadingError(SoundtokError):
    """An audio file could not be read, or its content is unusable (empty, too short, NaN/Inf)."""


class InvalidAudioError(SoundtokError, ValueError):
    """An in-memory waveform has the wrong shape, dtype, sample rate or non-finite values."""


class CheckpointError(SoundtokError):
    """A checkpoint folder is missing, corrupt, or does not match the model it should build."""


class TokenFileError(SoundtokError):
    """A token file (or token store shard) is unreadable, truncated or corrupt."""


class TokenizerMismatchError(SoundtokError):
    """Tokens made by one tokenizer were handed to another."""


class UnknownTokenizerError(SoundtokError, KeyError):
    """No registered tokenizer or checkpoint folder has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class TokenizerUnavailableError(SoundtokError):
    """A registered tokenizer needs a system library or package that is not installed."""


class OutputExistsError(SoundtokError, FileExistsError):
    """Refusing to overwrite an existing output file (pass force=True / --force)."""


class MetricUnavailableError(SoundtokError):
    """A metric's optional dependency or model is not installed."""


class CorpusError(SoundtokError):
    """A manifest, corpus layout or dataset description is missing, malformed or inconsistent."""


class OutputLockedError(SoundtokError):
    """Another live run is writing to this output folder (see :class:`soundtok.fileio.RunLock`)."""
