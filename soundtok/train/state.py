"""Run plumbing shared by every training recipe: resumable states (``RUN_DIR/state/step-XXXXXXX/``, written
atomically), keeping replicas' quantizers identical, and the ``python -m soundtok.train`` entry point."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from soundtok.errors import SoundtokError

if TYPE_CHECKING:
    from accelerate import Accelerator

    from soundtok.train.config import TrainConfig

log = logging.getLogger(__name__)

STATE_DIR = "state"


def kept_states(run_dir: Path) -> list[Path]:
    """A run's complete resumable states, oldest first (half-written ones have a temporary name)."""
    return sorted((run_dir / STATE_DIR).glob("step-*[0-9]"))


def latest_state(run_dir: Path) -> tuple[int, Path] | None:
    """The newest complete resumable state of a run, with its step."""
    states = kept_states(run_dir)
    return (int(states[-1].name.split("-")[1]), states[-1]) if states else None


def resume(accelerator: Accelerator, run_dir: Path) -> int:
    """Load the newest state of ``run_dir`` into the prepared objects, if there is one; the step to continue
    from (0 for a new run)."""
    resumed = latest_state(run_dir)
    if resumed is None:
        return 0
    step, path = resumed
    accelerator.load_state(str(path))
    log.info("resumed %s at step %d", run_dir, step)
    return step


def save_state(accelerator: Accelerator, run_dir: Path, step: int, keep: int) -> None:
    """Write the resumable state under a temporary name, then rename: a kill never leaves a half state."""
    final = run_dir / STATE_DIR / f"step-{step:07d}"
    tmp = run_dir / STATE_DIR / f".tmp-step-{step:07d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in kept_states(run_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """The run's ``Accelerator``: CPU when there is no CUDA, ``cfg.precision`` autocast, TF32 matmuls on GPUs."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    if cuda:  # TF32 keeps fp32's range with bf16-like matmul speed: free for these models
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Accelerator(cpu=not cuda, mixed_precision="no" if cfg.precision == "fp32" else cfg.precision)


def load_init_weights(
    model: nn.Module, source: Path, recipe: str, modules: list[str] | None = None
) -> dict[str, torch.Tensor]:
    """Load ``source`` (a safetensors file, or a soundtok checkpoint folder holding ``model.safetensors``) into a
    freshly built ``model`` before step 0: fine-tuning from exported weights (e.g. the adversarial phase of a
    shipped codec) or a fitted part (the semantic recipe's centroids). ``modules``: only the tensors whose names
    start with one of these prefixes (e.g. another family's ``encoder.``). Keys the file lacks stay as built; keys
    the model lacks, or a shape that differs, are errors. Returns the loaded tensors."""
    from safetensors.torch import load_file

    path = source / "model.safetensors" if source.is_dir() else source
    try:
        weights = load_file(str(path))
    except Exception as exc:  # safetensors raises its own types for unreadable files
        raise SoundtokError(f"init_weights {source}: cannot read it as safetensors ({exc})") from None
    if modules is not None:
        weights = {k: v for k, v in weights.items() if k.startswith(tuple(modules))}
        if not weights:
            raise SoundtokError(f"init_weights {source}: no tensor starts with any of init_modules {modules}")
    own = model.state_dict()
    unknown = sorted(set(weights) - set(own))
    if unknown:
        raise SoundtokError(f"init_weights {source}: keys {unknown[:5]} are not in the {recipe} model")
    reshaped = [
        f"{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})" for k, v in weights.items() if v.shape != own[k].shape
    ]
    if reshaped:
        raise SoundtokError(
            f"init_weights {source}: shapes differ from the configured {recipe} model: {reshaped[:3]}; "
            "use the model section of the config those weights were trained with"
        )
    model.load_state_dict(weights, strict=False)  # copies into the model's own dtype (fp16 exports -> fp32)
    log.info("initialised %d of %d tensors from %s", len(weights), len(own), path)
    return weights


def sync_quantizer(quantizer: nn.Module) -> None:
    """k-means init and dead-code restarts draw random vectors on each process: copy rank 0's codebooks and their
    statistics to every process so the replicas never drift apart (a few hundred KB per step)."""
    with torch.no_grad():
        for tensor in [*quantizer.parameters(), *quantizer.buffers()]:
            torch.distributed.broadcast(tensor.data, src=0)


def train_main(argv: list[str] | None = None) -> int:
    """The command line of every recipe: ``CONFIG.yaml RUN_DIR [key=value ...]`` (works under accelerate). The
    config's ``recipe:`` (default codec) is looked up in :mod:`soundtok.registry`, which reads and trains it."""
    from soundtok.registry import get_recipe
    from soundtok.train.config import read_raw_config

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m soundtok.train CONFIG.yaml RUN_DIR [key=value ...]")
        return 2
    # force: replace the quieter handler the ``soundtok`` CLI installed, so ``soundtok train`` shows progress too
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # it logs every file of every saved state
    try:
        entry = get_recipe(read_raw_config(args[0], args[2:]).get("recipe", "codec"))
        entry.train(entry.load_config(args[0], args[2:]), Path(args[1]))
    except SoundtokError as exc:
        log.error("%s", exc)
        return 1
    return 0


def export_run(accelerator: Accelerator, model: nn.Module, run_dir: Path, cfg: TrainConfig, step: int) -> Path:
    """Write the trained model to ``run_dir/export`` as a soundtok checkpoint (in ``cfg.export_dtype``), with the
    training config and step count in its ``extra``; every process waits for it."""
    export = run_dir / "export"
    if accelerator.is_main_process:
        write_export(model, export, cfg, step)
    accelerator.wait_for_everyone()
    return export


def write_export(
    model: nn.Module, out: Path, cfg: TrainConfig, step: int, *, force: bool = True, **extra: object
) -> None:
    """``model`` as a soundtok checkpoint folder ``out`` in ``cfg.export_dtype``; ``extra`` records the recipe, its
    config and the step count (plus any ``extra`` given). ``force=False`` refuses to replace a checkpoint there."""
    from soundtok.checkpoint import Checkpointable, save_checkpoint

    facts = {"recipe": cfg.recipe, "steps": step, "train_config": json.loads(cfg.model_dump_json()), **extra}
    trained = cast("Checkpointable", model.cpu().eval())  # a tokenizer or a vocoder: family, name, config
    save_checkpoint(trained, out, extra=facts, dtype=getattr(torch, cfg.export_dtype), force=force)
