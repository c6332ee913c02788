"""A checkpoint is a folder: ``config.json`` + ``model.safetensors``. No pickle is ever read.

``config.json``::

    {"format": 1, "soundtok_version": "0.1.0", "family": "pcm", "name": "mulaw-8bit-16k",
     "config": {...the family's config dataclass...}, "extra": {...free-form, e.g. training facts...}}

Loading is strict: a missing tensor or a shape mismatch is a :class:`CheckpointError`; an unexpected tensor
is logged as a warning and ignored.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from soundtok.errors import CheckpointError, OutputExistsError
from soundtok.fileio import atomic_write

if TYPE_CHECKING:
    from soundtok.config import Config
    from soundtok.tokenizers.base import AudioTokenizer

log = logging.getLogger(__name__)

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
    # weights first, config last: a folder with a config.json is always complete
    atomic_write(
        folder / WEIGHTS_FILE,
        lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt", "family": tokenizer.family}),
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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt JSON ({exc}); restore the file or re-export the checkpoint") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    missing = [k for k in ("format", "family", "config") if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: missing key(s) {missing}; was it written by soundtok's save_checkpoint?")
    if meta["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {meta['format']!r}, this soundtok reads format {CHECKPOINT_FORMAT}; "
            "upgrade soundtok or re-export the checkpoint"
        )
    return meta


def load_checkpoint(folder: str | os.PathLike[str], device: str = "cpu") -> AudioTokenizer:
    """Rebuild a tokenizer from its folder, loading weights strictly."""
    from soundtok.registry import build, get_family

    folder = Path(folder)
    meta = read_checkpoint_config(folder)
    if meta["family"] == "vocoder":
        raise CheckpointError(
            f"{folder} holds a mel vocoder, not a tokenizer; load it with soundtok.vocoder.load_vocoder"
        )
    family = get_family(str(meta["family"]))
    try:
        config = family.config_class.from_dict(meta["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: invalid {family.name} config: {exc}") from None
    tokenizer = build(family.name, config, name=str(meta.get("name") or folder.name))
    load_weights(tokenizer, folder, family.name)
    return tokenizer.to(device).eval()


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
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(
            f"{weights}: missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''} for family {family!r}"
        )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        log.warning("%s: ignoring unexpected tensors %s", weights, unexpected[:5])
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{weights}: tensor {key!r} has shape {tuple(state[key].shape)}, "
                f"the config builds {tuple(value.shape)}; "
                "config.json and model.safetensors do not belong together"
            )
    module.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected}, strict=True)
