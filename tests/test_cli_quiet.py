"""Third-party log noise stays off the terminal unless ``soundtok --verbose`` asks for it."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator

import pytest

from soundtok.cli.main import main
from soundtok.logs import NOISY, QUIET_ENV, native_stderr_silenced


@pytest.fixture
def clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No quieting variables set before the test, and the loggers' levels restored after it."""
    for key in QUIET_ENV:
        monkeypatch.delenv(key, raising=False)  # and restored afterwards
    names = [*NOISY, "soundtok"]
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("clean_logging")
def test_the_cli_silences_third_party_logs_and_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings(record=True) as caught:
        assert main(["info", "mulaw-8bit-8k"]) == 0
        warnings.warn_explicit("noise", FutureWarning, "generation.py", 1, module="transformers.generation")
        warnings.warn_explicit("ours", UserWarning, "io.py", 1, module="soundtok.audio.io")
    assert [str(w.message) for w in caught] == ["ours"]
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3" and os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    for name in ("transformers", "huggingface_hub", "absl"):
        assert logging.getLogger(name).getEffectiveLevel() == logging.ERROR
    capsys.readouterr()


@pytest.mark.usefixtures("clean_logging")
def test_verbose_lets_them_through(capsys: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)  # as an earlier quiet command in this process left it
    with warnings.catch_warnings(record=True) as caught:
        assert main(["--verbose", "info", "mulaw-8bit-8k"]) == 0
        warnings.warn_explicit("noise", FutureWarning, "generation.py", 1, module="transformers.generation")
    assert len(caught) == 1 and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    assert logging.getLogger("transformers").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("soundtok").getEffectiveLevel() == logging.INFO
    capsys.readouterr()


@pytest.mark.usefixtures("clean_logging")
def test_a_user_setting_wins(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    assert main(["info", "mulaw-8bit-8k"]) == 0
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    capsys.readouterr()


def test_native_stderr_is_silenced_only_inside(capfd: pytest.CaptureFixture[str]) -> None:
    os.write(2, b"before\n")
    with native_stderr_silenced():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"
