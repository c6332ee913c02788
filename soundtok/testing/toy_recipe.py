"""``python -m soundtok.testing.toy_recipe CONFIG RUN [key=value ...]``: the lora recipe with the toy family
registered, for tests that launch real ``accelerate`` processes (a child process does not see what a test
registered in its own)."""

from __future__ import annotations

import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny)
from soundtok.llm.recipe import main

if __name__ == "__main__":
    raise SystemExit(main())
