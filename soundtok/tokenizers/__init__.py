"""Built-in tokenizer families. Importing this package imports every module in it, and each family module
registers its family and presets (a new family registers itself by being here)."""

import importlib
import pkgutil

from soundtok.tokenizers.base import AudioTokenizer

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["AudioTokenizer"]
