"""``python -m soundtok.train CONFIG.yaml RUN_DIR [key=value ...]``: train (or resume) the registered recipe the
config's ``recipe:`` names (what ``soundtok train`` runs, and what it launches under ``accelerate``)."""

from __future__ import annotations

import sys

from soundtok.train.state import train_main

if __name__ == "__main__":
    sys.exit(train_main())
