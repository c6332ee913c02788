"""Resumable training states shared by every recipe: ``RUN_DIR/state/step-XXXXXXX/`` written atomically."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accelerate import Accelerator

STATE_DIR = "state"


def latest_state(run_dir: Path) -> tuple[int, Path] | None:
    """The newest complete resumable state of a run, with its step."""
    states = sorted((run_dir / STATE_DIR).glob("step-*[0-9]"))
    return (int(states[-1].name.split("-")[1]), states[-1]) if states else None


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
        for old in sorted((run_dir / STATE_DIR).glob("step-*[0-9]"))[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
