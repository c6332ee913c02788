"""The registry: every shippable model kind (tokenizers, mel vocoders, latent autoencoders), its families (a class
+ its config dataclass), its presets (a named, ready-to-use configuration) and the training recipes (what
``recipe:`` in a training config selects). Nothing else in soundtok keeps a table of models.

A :class:`Kind` is a sort of model with its own loader: tokenizers (:func:`load`, ``soundtok list``), mel vocoders
(:func:`soundtok.vocoder.load_vocoder`) and latent autoencoders (:func:`soundtok.latent.load_latent_autoencoder`).
A family registers itself with ``@register_family(name, ConfigClass, kind=...)``; its name is what a checkpoint
folder's ``config.json`` records as ``"family"``, so a folder is rebuilt by looking that name up here (never by
importing anything a file names) and a folder of another kind is refused with the loader to use instead. A preset
either builds an untrained model from a config (PCM, codec2, Griffin-Lim) or points at a shipped checkpoint folder.
A recipe registers itself with :func:`register_recipe` (how to read its config, train it, and rebuild its
untrained model for ``export-state``); ``soundtok train`` and ``python -m soundtok.train`` look it up here.

Registration is done by the modules that define the classes, which this module imports on first lookup (the
``_import_*`` functions): the only import cycle in the package, by design (``tests/test_imports.py``).
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from soundtok.checkpoint import (
    CONFIG_FILE,
    build_matching_weights,
    load_weights,
    parse_config,
    read_checkpoint_config,
)
from soundtok.config import Config
from soundtok.errors import CheckpointError, SoundtokError, TokenizerUnavailableError, UnknownTokenizerError

if TYPE_CHECKING:
    from torch import nn

    from soundtok.tokenizers.base import AudioTokenizer
    from soundtok.train.loop import Recipe
    from soundtok.types import TokenizerId

log = logging.getLogger(__name__)
T = TypeVar("T", bound=type)


def _always_available() -> str | None:
    return None


@dataclass(frozen=True)
class Family:
    """A model class of one kind, with its config dataclass (``None``: a latent autoencoder, rebuilt from its
    constructor's keyword arguments, see :mod:`soundtok.latent`)."""

    name: str
    cls: type[Any]
    config_class: type[Config] | None
    #: returns None when usable, else why not (e.g. a missing system library)
    unavailable: Callable[[], str | None] = _always_available
    #: builds one from ``(config, name)``; default ``cls(config, name=name)``
    factory: Callable[[Any, str | None], Any] | None = None

    def build(self, config: Config, name: str | None = None) -> Any:
        return self.factory(config, name) if self.factory is not None else self.cls(config, name=name)


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    description: str
    config: Config | None = None  # build untrained from this config ...
    checkpoint: Path | None = None  # ... or load this checkpoint folder


@dataclass(frozen=True, eq=False)
class Kind:
    """A sort of shippable model: its families and presets, and how users load one."""

    name: str  # "tokenizer", "vocoder", "latent autoencoder"
    what: str  # how messages call one ("mel vocoder")
    load_with: str  # the call that loads one
    listed_by: str = ""  # the command that lists its presets, if any
    families: dict[str, Family] = field(default_factory=dict, repr=False)
    presets: dict[str, Preset] = field(default_factory=dict, repr=False)


TOKENIZERS = Kind("tokenizer", "tokenizer", "soundtok.load", listed_by="soundtok list")
VOCODERS = Kind("vocoder", "mel vocoder", "soundtok.vocoder.load_vocoder")
LATENT_AUTOENCODERS = Kind("latent autoencoder", "latent autoencoder", "soundtok.latent.load_latent_autoencoder")
KINDS: dict[str, Kind] = {kind.name: kind for kind in (TOKENIZERS, VOCODERS, LATENT_AUTOENCODERS)}

#: shipped checkpoint folders (trained tokenizers and vocoders), one per preset name
CHECKPOINTS = Path(__file__).parent / "checkpoints"

#: the tokenizer families and presets (what :func:`build`, :func:`load` and ``soundtok list`` see)
FAMILIES: dict[str, Family] = TOKENIZERS.families
PRESETS: dict[str, Preset] = TOKENIZERS.presets


def add_family(family: Family, kind: Kind = TOKENIZERS) -> Family:
    """Register ``family`` as a model of ``kind``. Names are unique over all kinds: a checkpoint's ``"family"``
    names one model, whatever loader it is given to."""
    if any(family.name in k.families for k in KINDS.values()):
        raise ValueError(f"{kind.what} family {family.name!r} is registered twice")
    kind.families[family.name] = family
    return family


def register_family(
    name: str,
    config_class: type[Config],
    unavailable: Callable[[], str | None] = _always_available,
    *,
    kind: Kind = TOKENIZERS,
    factory: Callable[[Any, str | None], Any] | None = None,
) -> Callable[[T], T]:
    """Class decorator: make a model class loadable by family name from checkpoints (a tokenizer unless ``kind``
    says otherwise); sets its ``family`` and ``config_class``."""

    def wrap(cls: T) -> T:
        add_family(Family(name, cls, config_class, unavailable, factory), kind)
        cls.family = name  # type: ignore[attr-defined]
        cls.config_class = config_class  # type: ignore[attr-defined]
        return cls

    return wrap


def register_preset(preset: Preset) -> Preset:
    """Register ``preset`` with its family's kind (register the family first)."""
    if any(preset.name in k.presets for k in KINDS.values()):
        raise ValueError(f"preset {preset.name!r} is registered twice")
    if (preset.config is None) == (preset.checkpoint is None):
        raise ValueError(f"preset {preset.name!r} needs exactly one of config or checkpoint")
    kind = _kind_of(preset.family)
    if kind is None:
        raise ValueError(f"preset {preset.name!r}: register its family {preset.family!r} first")
    kind.presets[preset.name] = preset
    return preset


def get_family(name: str, kind: Kind = TOKENIZERS) -> Family:
    _import_models()
    try:
        return kind.families[name]
    except KeyError:
        raise UnknownTokenizerError(
            f"unknown {kind.what} family {name!r}; known families: {sorted(kind.families)}"
        ) from None


def available(preset: Preset) -> str | None:
    """None if the preset can be loaded here, else the reason it cannot."""
    _import_models()
    kind = _kind_of(preset.family)
    reason = None if kind is None else kind.families[preset.family].unavailable()
    if reason is None and preset.checkpoint is not None and not (preset.checkpoint / "config.json").is_file():
        reason = f"its checkpoint {preset.checkpoint} is not installed"
    return reason


def list_presets(kind: Kind = TOKENIZERS) -> list[Preset]:
    _import_models()
    return [kind.presets[k] for k in sorted(kind.presets)]


def build(family: str, config: Config, name: str | None = None) -> AudioTokenizer:
    """An untrained tokenizer of ``family`` from ``config``."""
    return cast("AudioTokenizer", build_model(TOKENIZERS, family, config, name))


def load(name_or_path: str | os.PathLike[str], device: str = "cpu") -> AudioTokenizer:
    """A ready tokenizer from a preset name (``soundtok list``) or a checkpoint folder.

    >>> import soundtok
    >>> soundtok.load("mulaw-8bit-16k").bitrate
    128000.0
    """
    return cast("AudioTokenizer", load_model(TOKENIZERS, name_or_path, device))


def load_checkpoint(folder: str | os.PathLike[str], device: str = "cpu") -> AudioTokenizer:
    """Rebuild a tokenizer from its checkpoint folder, loading weights strictly."""
    return cast("AudioTokenizer", load_folder(TOKENIZERS, folder, device))


def build_model(kind: Kind, family: str, config: Config, name: str | None = None) -> Any:
    """An untrained model of ``kind`` and ``family`` from ``config``, in eval mode."""
    fam = get_family(family, kind)
    reason = fam.unavailable()
    if reason:
        raise TokenizerUnavailableError(f"{kind.what} family {family!r} is unavailable: {reason}")
    if fam.config_class is None or not isinstance(config, fam.config_class):
        wanted = "constructor arguments" if fam.config_class is None else f"a {fam.config_class.__name__}"
        raise TypeError(f"family {family!r} takes {wanted}, got {type(config).__name__}")
    return fam.build(config, name=name).eval()


def load_model(kind: Kind, name_or_path: str | os.PathLike[str], device: str = "cpu") -> Any:
    """A ready model of ``kind`` from one of its preset names or a checkpoint folder."""
    _import_models()
    key = str(name_or_path)
    if key in kind.presets:
        preset = kind.presets[key]
        reason = available(preset)
        if reason:
            raise TokenizerUnavailableError(f"{kind.name} {key!r} is unavailable: {reason}")
        if preset.checkpoint is not None:
            return load_folder(kind, preset.checkpoint, device)
        assert preset.config is not None
        return build_model(kind, preset.family, preset.config, name=preset.name).to(device)
    path = Path(name_or_path)
    if path.exists():
        return load_folder(kind, path, device)
    see = f" (see `{kind.listed_by}`)" if kind.listed_by else ""
    raise UnknownTokenizerError(
        f"{key!r} is neither a registered {kind.name} nor a checkpoint folder; "
        f"registered: {', '.join(sorted(kind.presets))}{see}"
    )


def load_folder(kind: Kind, folder: str | os.PathLike[str], device: str = "cpu") -> Any:
    """Rebuild a model of ``kind`` from its checkpoint folder, loading weights strictly, in eval mode.

    The folder's ``"family"`` is looked up in the registered families of ``kind``: the family's config class
    parses ``"config"`` and its class is built, nothing else. A folder of another kind is refused with the loader
    that reads it."""
    folder = Path(folder)
    meta = read_checkpoint_config(folder)
    _import_models()
    holds = _kind_of(meta["family"])
    if holds is not None and holds is not kind:
        raise CheckpointError(f"{folder} holds a {holds.what}, not a {kind.name}; load it with {holds.load_with}")
    try:
        family = get_family(meta["family"], kind)
    except UnknownTokenizerError as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {exc}") from None
    if family.config_class is None:  # a latent autoencoder kind: its folders have their own format
        raise CheckpointError(f"{folder}: {kind.what} folders are read by {kind.load_with}")
    config = parse_config(family.config_class, meta["config"], folder, family.name)
    name = meta.get("name") or folder.name
    model: nn.Module = build_matching_weights(lambda: build_model(kind, family.name, config, name), folder, family.name)
    load_weights(model, folder, family.name)
    return model.to(device).eval()


def load_for(identity: TokenizerId, device: str = "cpu") -> AudioTokenizer:
    """The registered preset that made tokens of ``identity`` (a token file's header), checked by fingerprint.

    Only preset names are looked up, never paths: a file names its tokenizer, but opening a folder is the
    user's decision (pass it to :func:`load`)."""
    _import_models()
    if identity.name not in PRESETS:
        raise UnknownTokenizerError(
            f"these tokens name the tokenizer {identity.name!r:.100}, which is not a registered preset; "
            "pass the checkpoint folder that made them (--tokenizer PATH)"
        )
    tokenizer = load(identity.name, device=device)
    identity.check_same(tokenizer.identity)
    return tokenizer


def _kind_of(family: str) -> Kind | None:
    """The kind that has registered ``family`` so far (callers import the built-ins first when they need them)."""
    return next((kind for kind in KINDS.values() if family in kind.families), None)


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
    # every module of soundtok.train may define recipes and registers them when imported (a new recipe module
    # registers itself by being there); the audio-LLM recipe lives with the LLM bridge
    import soundtok.llm.recipe  # noqa: F401
    import soundtok.train

    for module in pkgutil.iter_modules(soundtok.train.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"soundtok.train.{module.name}")


def _import_models() -> None:
    # importing these registers every built-in tokenizer and vocoder family and preset
    import soundtok.tokenizers  # noqa: F401
    import soundtok.vocoder  # noqa: F401
