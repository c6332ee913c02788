"""Export a resumable training state as a soundtok checkpoint, while its run goes on (or after a stop short of
``steps``): ``soundtok export-state RUN_DIR [--step N] [--out DIR]``. Evaluate an intermediate model with the
benchmark scripts without stopping or finishing the run."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from soundtok.errors import SoundtokError
from soundtok.registry import get_recipe
from soundtok.train.config import TrainConfig, load_config
from soundtok.train.state import STATE_DIR, kept_states, latest_state, write_export


def build_untrained(cfg: TrainConfig) -> nn.Module:
    """A fresh model of the run's recipe, without its ``init_weights``: a state holds them."""
    entry = get_recipe(cfg.recipe)
    if entry.recipe is None:
        raise SoundtokError(f"export-state handles recipes that train one model (codec, vocoder, msn, semantic), "
                            f"not {cfg.recipe!r}")  # fmt: skip
    return entry.recipe(cfg).build()


def export_state(
    run_dir: str | Path, *, step: int | None = None, out: str | Path | None = None, force: bool = False
) -> Path:
    """Write the state of ``run_dir`` at ``step`` (default: the newest) to ``out`` (default
    ``run_dir/export-step-XXXXXXX``, replaced if there) as a checkpoint; returns ``out``. A checkpoint already in a
    given ``out`` is kept (an error) unless ``force``. The run's files are only read."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise SoundtokError(f"{run_dir}: not a training run folder (no config.yaml): give a RUN_DIR of soundtok train")
    cfg = load_config(run_dir / "config.yaml")
    if step is None:
        newest = latest_state(run_dir)
        if newest is None:
            raise SoundtokError(f"{run_dir}: no resumable state yet (they are written every checkpoint_every steps)")
        step, state = newest
    else:
        state = run_dir / STATE_DIR / f"step-{step:07d}"
        if not state.is_dir():
            kept = ", ".join(p.name for p in kept_states(run_dir)) or "none"
            raise SoundtokError(f"{run_dir}: no state at step {step} (kept: {kept})")
    model = build_untrained(cfg)
    try:
        weights = load_file(str(state / "model.safetensors"))  # accelerate's name for the first prepared model
        model.load_state_dict(weights)
    except Exception as exc:  # unreadable file, or keys of another model
        raise SoundtokError(f"{state}: cannot load the model's weights from this state ({exc})") from None
    replace = force or out is None
    out = Path(out) if out is not None else run_dir / f"export-step-{step:07d}"
    write_export(model, out, cfg, step, force=replace, from_state=str(state))
    return out
