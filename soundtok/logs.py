"""Third-party log noise, kept off the terminal.

:func:`quiet_third_party` (the CLI calls it before any command imports its libraries) silences the warnings and
info lines of TensorFlow (Lite), absl, transformers, huggingface_hub and their kin; ``soundtok --verbose`` lets them
through. :func:`native_stderr_silenced` wraps a call into native code that prints to the process's stderr itself,
past Python's logging and every switch (TensorFlow Lite's "Created TensorFlow Lite XNNPACK delegate for CPU").
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

#: read by those libraries when they are imported; a value the user set already is kept
QUIET_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's C++ logging: errors only
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "2",
}

#: Python loggers (and the modules whose Python warnings) that speak up in normal use without telling a user of
#: soundtok anything to act on
NOISY = (
    "absl",
    "tensorflow",
    "transformers",
    "huggingface_hub",
    "datasets",
    "accelerate",
    "peft",
    "tensorboard",
    "faster_whisper",
    "ctranslate2",
    "lhotse",
    "numba",
    "matplotlib",
    "h5py",
    "filelock",
    "urllib3",
    "httpx",
)


def quiet_third_party(verbose: bool = False) -> None:
    """Errors only from the :data:`NOISY` libraries (their loggers, their Python warnings, and :data:`QUIET_ENV`
    for the ones imported later); ``verbose`` restores their defaults and logs soundtok's INFO lines too."""
    if verbose:
        for name in NOISY:
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.getLogger("soundtok").setLevel(logging.INFO)
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.ERROR)  # libraries imported already ignore the environment
    warnings.filterwarnings("ignore", module=rf"({'|'.join(NOISY)})(\.|$)")


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send what is written to file descriptor 2 to the null device for the duration.

    Only for a short call into a native library that prints on its own: Python's own stderr (logging, warnings,
    progress bars) shares the descriptor, so whatever it writes meanwhile is lost too.

    >>> with native_stderr_silenced():
    ...     _ = os.write(2, b"a line nobody sees")
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to protect
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
