"""Families (a tokenizer class + its config dataclass), presets (a named, ready-to-use configuration) and training
recipes (what ``recipe:`` in a training config selects).

A family registers itself with ``@register_family``; a preset is a name users pass to :func:`soundtok.load`.
Presets either build an untrained tokenizer from a config (PCM, codec2) or point at a shipped checkpoint folder.
A recipe registers itself with :func:`register_recipe` (how to read its config, train it, and rebuild its
untrained model for ``export-state``); ``soundtok train`` and ``python -m soundtok.train`` look it up here.
Registration is done by the modules that define the classes, which this module imports on first lookup: the only
import cycle in the package, by design.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from soundtok.config import Config
from soundtok.errors import SoundtokError, TokenizerUnavailableError, UnknownTokenizerError

if TYPE_CHECKING:
    from soundtok.tokenizers.base import AudioTokenizer
    from soundtok.train.loop import Recipe
    from soundtok.types import TokenizerId

log = logging.getLogger(__name__)
T = TypeVar("T", bound="type[AudioTokenizer]")


@dataclass(frozen=True)
class Family:
    name: str
    cls: type[AudioTokenizer]
    config_class: type[Config]
    #: returns None when usable, else why not (e.g. a missing system library)
    unavailable: Callable[[], str | None]


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    description: str
    config: Config | None = None  # build untrained from this config ...
    checkpoint: Path | None = None  # ... or load this checkpoint folder


#: shipped checkpoint folders (trained tokenizers and vocoders), one per preset name
CHECKPOINTS = Path(__file__).parent / "checkpoints"

FAMILIES: dict[str, Family] = {}
PRESETS: dict[str, Preset] = {}


def register_family(
    name: str, config_class: type[Config], unavailable: Callable[[], str | None] = lambda: None
) -> Callable[[T], T]:
    """Class decorator: make a tokenizer class loadable by family name from checkpoints."""

    def wrap(cls: T) -> T:
        if name in FAMILIES:
            raise ValueError(f"tokenizer family {name!r} is registered twice")
        cls.family = name
        cls.config_class = config_class
        FAMILIES[name] = Family(name, cls, config_class, unavailable)
        return cls

    return wrap


def register_preset(preset: Preset) -> Preset:
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} is registered twice")
    if (preset.config is None) == (preset.checkpoint is None):
        raise ValueError(f"preset {preset.name!r} needs exactly one of config or checkpoint")
    PRESETS[preset.name] = preset
    return preset


def get_family(name: str) -> Family:
    _import_families()
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownTokenizerError(f"unknown tokenizer family {name!r}; known families: {sorted(FAMILIES)}") from None


def available(preset: Preset) -> str | None:
    """None if the preset can be loaded here, else the reason it cannot."""
    reason = get_family(preset.family).unavailable()
    if reason is None and preset.checkpoint is not None and not (preset.checkpoint / "config.json").is_file():
        reason = f"its checkpoint {preset.checkpoint} is not installed"
    return reason


def list_presets() -> list[Preset]:
    _import_families()
    return [PRESETS[k] for k in sorted(PRESETS)]


def build(family: str, config: Config, name: str | None = None) -> AudioTokenizer:
    """An untrained tokenizer of ``family`` from ``config``."""
    fam = get_family(family)
    reason = fam.unavailable()
    if reason:
        raise TokenizerUnavailableError(f"tokenizer family {family!r} is unavailable: {reason}")
    if not isinstance(config, fam.config_class):
        raise TypeError(f"family {family!r} takes a {fam.config_class.__name__}, got {type(config).__name__}")
    return fam.cls(config, name=name).eval()


def load(name_or_path: str | os.PathLike[str], device: str = "cpu") -> AudioTokenizer:
    """A ready tokenizer from a preset name (``soundtok list``) or a checkpoint folder.

    >>> import soundtok
    >>> soundtok.load("mulaw-8bit-16k").bitrate
    128000.0
    """
    from soundtok.checkpoint import load_checkpoint

    _import_families()
    key = str(name_or_path)
    if key in PRESETS:
        preset = PRESETS[key]
        reason = available(preset)
        if reason:
            raise TokenizerUnavailableError(f"tokenizer {key!r} is unavailable: {reason}")
        if preset.checkpoint is not None:
            return load_checkpoint(preset.checkpoint, device=device)
        assert preset.config is not None
        return build(preset.family, preset.config, name=preset.name).to(device)
    path = Path(name_or_path)
    if path.exists():
        return load_checkpoint(path, device=device)
    raise UnknownTokenizerError(
        f"{key!r} is neither a registered tokenizer nor a checkpoint folder; "
        f"registered: {', '.join(sorted(PRESETS))} (see `soundtok list`)"
    )


def load_for(identity: TokenizerId, device: str = "cpu") -> AudioTokenizer:
    """The registered preset that made tokens of ``identity`` (a token file's header), checked by fingerprint.

    Only preset names are looked up, never paths: a file names its tokenizer, but opening a folder is the
    user's decision (pass it to :func:`load`)."""
    _import_families()
    if identity.name not in PRESETS:
        raise UnknownTokenizerError(
            f"these tokens name the tokenizer {identity.name!r:.100}, which is not a registered preset; "
            "pass the checkpoint folder that made them (--tokenizer PATH)"
        )
    tokenizer = load(identity.name, device=device)
    identity.check_same(tokenizer.identity)
    return tokenizer


@dataclass(frozen=True)
class RecipeEntry:
    """A training recipe: ``load_config(path, overrides)`` reads and validates its config; ``train(cfg, run_dir)``
    trains or resumes it (returns the export folder once done, else None); ``recipe`` is its
    :class:`~soundtok.train.loop.Recipe` class when it runs one loop over one model (its ``build()`` rebuilds the
    model a resumable state holds, for ``soundtok export-state``)."""

    name: str
    load_config: Callable[[str | os.PathLike[str], list[str] | None], Any]
    train: Callable[[Any, Path], Path | None]
    recipe: type[Recipe] | None = None


RECIPES: dict[str, RecipeEntry] = {}


def register_recipe(entry: RecipeEntry) -> RecipeEntry:
    if entry.name in RECIPES:
        raise ValueError(f"training recipe {entry.name!r} is registered twice")
    RECIPES[entry.name] = entry
    return entry


def get_recipe(name: str) -> RecipeEntry:
    _import_recipes()
    try:
        return RECIPES[name]
    except KeyError:
        raise SoundtokError(f"unknown training recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None


def _import_recipes() -> None:
    # importing these modules registers the built-in recipes
    import soundtok.llm.recipe  # noqa: F401
    import soundtok.train.flow  # noqa: F401
    import soundtok.train.gan  # noqa: F401


def _import_families() -> None:
    # importing the package registers every built-in family and preset
    import soundtok.tokenizers  # noqa: F401
