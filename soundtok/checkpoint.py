"""A checkpoint is a folder: ``config.json`` + ``model.safetensors``. No pickle is ever read.

``config.json``::

    {"format": 1, "soundtok_version": "0.1.0", "family": "pcm", "name": "mulaw-8bit-16k",
     "config": {...the family's config dataclass...}, "extra": {...free-form, e.g. training facts...}}

Loading is strict: a missing tensor or a shape mismatch is a :class:`CheckpointError`; an unexpected tensor
is logged as a warning and ignored. Before a model is built for real it is built on the ``meta`` device (no memory)
and its tensor shapes are compared with the weights file's header (:func:`build_matching_weights`), so a config
whose sizes disagree with its weights is refused before it can allocate anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from soundtok.config import Config
from soundtok.errors import CheckpointError, OutputExistsError, SoundtokError
from soundtok.fileio import atomic_write

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
M = TypeVar("M", bound=torch.nn.Module)
C = TypeVar("C", bound=Config)

CHECKPOINT_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class Checkpointable(Protocol):
    """What a checkpoint stores: a tokenizer, or any other soundtok model with a family name (e.g. a vocoder)."""

    family: str
    name: str
    config: Config

    def state_dict(self) -> dict[str, Any]: ...


def save_checkpoint(
    tokenizer: Checkpointable,
    folder: str | os.PathLike[str],
    *,
    extra: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    force: bool = False,
) -> Path:
    """Write ``tokenizer`` (or a vocoder) to ``folder``; ``dtype=torch.float16`` halves the size of shipped weights."""
    from soundtok import __version__

    folder = Path(folder)
    if (folder / CONFIG_FILE).exists() and not force:
        raise OutputExistsError(f"{folder} already holds a checkpoint; pass force=True (--force) to overwrite it")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, value in tokenizer.state_dict().items():
        value = value.detach().cpu().contiguous()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.clone()  # safetensors refuses shared storage
    meta = {
        "format": CHECKPOINT_FORMAT,
        "soundtok_version": __version__,
        "family": tokenizer.family,
        "name": tokenizer.name,
        "config": tokenizer.config.to_dict(),
        "extra": extra or {},
    }
    # the config travels with the weights too, so an edited config.json is noticed (parse_config)
    weights_metadata = {"format": "pt", "family": tokenizer.family, "config": tokenizer.config.to_json()}
    # weights first, config last: a folder with a config.json is always complete
    atomic_write(
        folder / WEIGHTS_FILE,
        lambda tmp: save_file(tensors, str(tmp), metadata=weights_metadata),
        force=True,
    )
    atomic_write(
        folder / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n"), force=True
    )
    return folder


def read_checkpoint_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder, validated for the keys soundtok needs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(
            f"{folder}: not a checkpoint folder (expected a folder with {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder}: {CONFIG_FILE} is missing; this is not a soundtok checkpoint folder")
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(
            f"{path}: corrupt JSON ({type(exc).__name__}: {exc}); restore the file or re-export the checkpoint"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    missing = [k for k in ("format", "family", "config") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: missing key(s) {missing}; was it written by soundtok's save_checkpoint?")
    wrong = [
        f"{key!r} must be {kind.__name__}"
        for key, kind in (("family", str), ("name", str), ("config", dict), ("extra", dict))
        if key in meta and not isinstance(meta[key], kind)
    ]
    if wrong:
        raise CheckpointError(f"{path}: {'; '.join(wrong)}; restore the file or re-export the checkpoint")
    if meta["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {meta['format']!r}, this soundtok reads format {CHECKPOINT_FORMAT}; "
            "upgrade soundtok or re-export the checkpoint"
        )
    return meta


def parse_config(config_class: type[C], data: Any, folder: Path, what: str) -> C:
    """``config_class.from_dict(data)``, with every way a config can be wrong raised as :class:`CheckpointError`."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{folder / CONFIG_FILE}: 'config' must be an object, got {type(data).__name__}")
    try:
        config = config_class.from_dict(data)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: invalid {what} config: {exc}") from None
    saved = _read_weights_header(folder)[1].get("config")  # absent from checkpoints saved before it was recorded
    if saved is not None and saved != config.to_json():
        ours, theirs = config.to_dict(), _json_object(saved)
        changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        changes = "; ".join(f"{k}: {theirs.get(k)!r} saved, {ours.get(k)!r} here" for k in changed)
        raise CheckpointError(
            f"{folder / CONFIG_FILE} differs from the config its weights were saved with ({changes:.300}); "
            "restore config.json or re-export the checkpoint"
        )
    return config


def _json_object(text: str) -> dict[str, Any]:
    """``text`` parsed, or {} when it is not a JSON object (a damaged header then differs in every field)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def weight_shapes(folder: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Tensor shapes from the header of ``folder``'s ``model.safetensors``, without reading the tensors."""
    return _read_weights_header(folder)[0]


def _read_weights_header(folder: str | os.PathLike[str]) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """``(shapes, metadata)`` from the safetensors header of ``folder``'s weights."""
    weights = Path(folder) / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS_FILE} is missing; copy it next to {CONFIG_FILE}")
    try:
        with safe_open(str(weights), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118 (not a dict)
            return shapes, f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{weights}: corrupt or truncated safetensors file ({exc}); re-download or re-export it"
        ) from None


def build_matching_weights(build_model: Callable[[], M], folder: str | os.PathLike[str], what: str) -> M:
    """``build_model()``, once its tensor shapes are known to match ``folder``'s weights.

    The model is first built on the ``meta`` device, which allocates no tensor memory, while the tensors it
    registers are counted (:func:`_tensor_budget`): a config asking for huge tensors or a million layers fails
    here, against the weights file's header, instead of after gigabytes or hours. Errors the config causes in the
    constructor (a ValueError from a ``__post_init__``, a TypeError, a size torch cannot compute) become
    :class:`CheckpointError`.
    """
    folder = Path(folder)
    shapes = weight_shapes(folder)
    try:
        with torch.device("meta"), _tensor_budget(len(shapes), folder / WEIGHTS_FILE):
            planned = build_model()
        _check_shapes(planned.state_dict(), shapes, folder / WEIGHTS_FILE, what)
        del planned
    except (TypeError, ValueError, OverflowError, RuntimeError) as exc:
        if isinstance(exc, SoundtokError):
            raise
        raise CheckpointError(f"{folder / CONFIG_FILE}: cannot build the {what} its config describes ({exc})") from None
    return build_model()


@contextlib.contextmanager
def _tensor_budget(saved: int, weights: Path) -> Iterator[None]:
    """Raise :class:`CheckpointError` as soon as this thread registers far more parameters and buffers than the
    ``saved`` tensors of the weights file (a model it can fill has about as many; a few buffers are not saved)."""
    thread, count, limit = threading.get_ident(), 0, 2 * saved + 64

    def spend(*_: object) -> None:
        nonlocal count
        if threading.get_ident() == thread:
            count += 1
            if count > limit:
                raise CheckpointError(
                    f"{weights} holds {saved} tensors, but the config builds more than {limit}; "
                    "config.json and model.safetensors do not belong together"
                )

    handles = [
        torch.nn.modules.module.register_module_parameter_registration_hook(spend),
        torch.nn.modules.module.register_module_buffer_registration_hook(spend),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _check_shapes(expected: dict[str, Any], shapes: dict[str, tuple[int, ...]], weights: Path, what: str) -> None:
    """A missing tensor or a shape mismatch fails; an unexpected tensor is logged."""
    missing = sorted(set(expected) - set(shapes))
    if missing:
        raise CheckpointError(
            f"{weights}: missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''} for {what!r}; "
            "config.json and model.safetensors do not belong together"
        )
    unexpected = sorted(set(shapes) - set(expected))
    if unexpected:
        log.warning("%s: ignoring unexpected tensors %s", weights, unexpected[:5])
    for key, value in expected.items():
        if shapes[key] != tuple(value.shape):
            raise CheckpointError(
                f"{weights}: tensor {key!r} has shape {shapes[key]}, the config builds {tuple(value.shape)}; "
                "config.json and model.safetensors do not belong together"
            )


def load_weights(module: torch.nn.Module, folder: str | os.PathLike[str], family: str) -> None:
    """Load ``folder``'s ``model.safetensors`` into ``module`` strictly (cast to the module's dtypes)."""
    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{folder}: {WEIGHTS_FILE} is missing; copy it next to {CONFIG_FILE}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{weights}: corrupt or truncated safetensors file ({exc}); re-download or re-export it"
        ) from None
    expected = module.state_dict()
    _check_shapes(expected, {k: tuple(v.shape) for k, v in state.items()}, weights, family)
    module.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected}, strict=True)
