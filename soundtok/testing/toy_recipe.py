"""``python -m soundtok.testing.toy_recipe CONFIG RUN [key=value ...]``: ``python -m soundtok.train`` with the toy
family registered, for tests that launch real ``accelerate`` processes (a child process does not see what a test
registered in its own)."""

from __future__ import annotations

import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny)
from soundtok.train.state import train_main

if __name__ == "__main__":
    raise SystemExit(train_main())
