"""The one training loop every recipe plugs into.

A :class:`Recipe` knows its model: how to build it and its optimisers (:meth:`Recipe.setup`), what one step is
(:meth:`Recipe.step`), how to score held-out data (:meth:`Recipe.evaluate`) and what to export at the end
(:meth:`Recipe.export`). :func:`run` owns everything around that, the same for the GAN, flow and LoRA recipes:

- resuming from the newest state in ``RUN_DIR/state/`` (after :meth:`Recipe.setup` prepared what the state holds);
- the steps up to ``steps`` (or ``max_steps_this_run`` more, or until ``max_minutes`` have passed);
- logging: every ``log_every`` steps the mean of each scalar over the steps since the last log line, the
  recipe's instantaneous values (:meth:`Recipe.scalars`) and the throughput, to TensorBoard (``RUN_DIR/logs``, if
  installed) and one console line;
- evaluation every ``eval_every`` steps and at the last step (main process only);
- resumable states every ``checkpoint_every`` steps, at the end of the call and when out of time (written
  atomically, the newest ``keep_checkpoints`` kept: :func:`soundtok.train.state.save_state`);
- the export once ``steps`` are done;
- a clean stop on SIGTERM or SIGINT (a scheduler's preemption, Ctrl-C): the step in progress finishes, a state is
  saved and :func:`run` returns, so rerunning the same command loses nothing (a second signal stops at once).

Batches are the recipe's business, and every recipe draws them as a function of (seed, step, rank), so ``n``
steps, a kill, and ``m`` more give the weights of ``n + m`` straight steps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import nn

from soundtok.errors import SoundtokError
from soundtok.train.state import resume, save_state

if TYPE_CHECKING:
    from accelerate import Accelerator

    from soundtok.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopSettings:
    """How long and how often: see the module docstring."""

    steps: int
    log_every: int = 10
    eval_every: int | None = None  # None: the recipe has no held-out evaluation
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    max_steps_this_run: int | None = None
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "log_every", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.max_steps_this_run is not None and self.max_steps_this_run < 1:
            raise ValueError(f"max_steps_this_run must be >= 1 or None, got {self.max_steps_this_run}")


@dataclass
class StepOutput:
    """One step's scalars by TensorBoard tag (``loss/mel``, ``train/grad_norm``; averaged over the log window) and
    the work it did in the recipe's :attr:`Recipe.work_unit` (audio seconds, token ids), for the throughput."""

    scalars: dict[str, float]
    work: float


@dataclass
class LoopResult:
    steps: int  # the run's step count after this call (resumed steps included)
    exported: Path | None  # None while steps remain
    seconds: float  # this call
    losses: list[float] = field(default_factory=list)  # the recipe's ``loss_tag`` at each step of this call


class Recipe:
    """A model kind's part of a training run (module docstring). Subclasses set :attr:`name` and implement
    :meth:`setup`, :meth:`step` and :meth:`export`; the rest has defaults."""

    #: the ``recipe:`` value of a config that selects this recipe (registered in :mod:`soundtok.registry`)
    name: str = ""
    #: the scalar whose per-step values :attr:`LoopResult.losses` collects, and the console line's first entry
    loss_tag: str = "loss/total"
    #: tags shown on the console line (all are written to TensorBoard)
    console_tags: tuple[str, ...] = ()
    #: what :attr:`StepOutput.work` counts; logged as ``train/<work_unit>_per_second``
    work_unit: str = "audio_seconds"

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def make_accelerator(self) -> Accelerator:
        from accelerate import Accelerator

        return Accelerator(cpu=not torch.cuda.is_available())

    def build(self) -> nn.Module:
        """The untrained model, as a resumable state holds it (``soundtok export-state`` loads states into it)."""
        raise NotImplementedError(f"the {self.name} recipe cannot rebuild its model alone")

    def setup(self, accelerator: Accelerator, run_dir: Path) -> None:
        """Build the model, data and optimisers and ``accelerator.prepare`` them (and register any other state),
        so that :func:`run` can load a saved state into them."""
        raise NotImplementedError

    def resumed(self, step: int) -> None:
        """Called once the newest state (if any) is loaded; ``step`` is where the run continues."""

    def config_text(self) -> str | None:
        """Written to ``RUN_DIR/config.yaml`` by the main process (None: nothing)."""
        return None

    def step(self, step: int) -> StepOutput:
        raise NotImplementedError

    def scalars(self) -> dict[str, float]:
        """Values logged as they are at log time (learning rate, codebook perplexity, counters)."""
        return {}

    def evaluate(self) -> dict[str, float]:
        """Held-out scores by name (logged as ``eval/<name>``); {} when there is nothing to score."""
        return {}

    def export(self, accelerator: Accelerator, run_dir: Path, step: int) -> Path:
        """Write the trained model (every process calls this; the main one writes) and return where."""
        raise NotImplementedError


class ConfigRecipe(Recipe):
    """A recipe configured by a :class:`~soundtok.train.config.TrainConfig` (the GAN and flow recipes): its
    accelerator (``precision``), ``config.yaml``, ``init_weights``/``init_modules`` and AdamW with exponential decay
    (the ``optim`` section) are the same for all of them."""

    cfg: TrainConfig

    def make_accelerator(self) -> Accelerator:
        from soundtok.train.state import make_accelerator

        return make_accelerator(self.cfg)

    def config_text(self) -> str:
        return yaml.safe_dump(json.loads(self.cfg.model_dump_json()), sort_keys=False)

    def build_trainable(self) -> nn.Module:
        """:meth:`build`, then ``init_weights`` (only ``init_modules``' tensors, when set)."""
        from soundtok.train.state import load_init_weights

        model = self.build()
        if self.cfg.init_weights is not None:
            load_init_weights(model, self.cfg.init_weights, self.cfg.recipe, self.cfg.init_modules)
        return model

    def adamw(
        self, params: Iterable[nn.Parameter]
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ExponentialLR]:
        """AdamW with the config's ``optim`` settings and its per-step exponential learning-rate decay."""
        o = self.cfg.optim
        opt = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        return opt, torch.optim.lr_scheduler.ExponentialLR(opt, o.lr_decay)


def _writer(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: console lines only
        log.info("tensorboard is not installed (pip install 'soundtok[train]'); logging to the console only")
        return None
    return SummaryWriter(str(run_dir / "logs"))


@contextlib.contextmanager
def _stop_requests() -> Iterator[threading.Event]:
    """An event set by the first SIGTERM or SIGINT while the block runs (the old handlers come back after, and on
    the second signal); outside the main thread, where handlers cannot be installed, an event never set."""
    event = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: Any) -> None:
        log.warning("%s received: finishing this step and saving a state (send it again to stop at once)",
                    signal.Signals(signum).name)  # fmt: skip
        event.set()
        for sig, previous in old.items():
            signal.signal(sig, previous)

    for sig in old:
        signal.signal(sig, handler)
    try:
        yield event
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def _any_process(accelerator: Accelerator, flag: bool) -> bool:
    """``flag`` of any process (one collective per call with several processes), so all stop at the same step even
    when a signal reached only one of them."""
    if accelerator.num_processes == 1:
        return flag
    value = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(value, reduction="sum").item() > 0)


def run(recipe: Recipe, run_dir: str | Path, settings: LoopSettings) -> LoopResult:
    """Train (or resume) ``recipe`` in ``run_dir`` (module docstring)."""
    with _stop_requests() as stop:
        return _run(recipe, Path(run_dir), settings, stop)


def _run(recipe: Recipe, run_dir: Path, settings: LoopSettings, stop: threading.Event) -> LoopResult:
    accelerator = recipe.make_accelerator()
    recipe.setup(accelerator, run_dir)
    log.info("process %d of %d on %s", accelerator.process_index, accelerator.num_processes, accelerator.device)
    step = resume(accelerator, run_dir)
    recipe.resumed(step)
    main = accelerator.is_main_process
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        text = recipe.config_text()
        if text is not None:
            (run_dir / "config.yaml").write_text(text)
    writer = _writer(run_dir) if main else None
    s = settings
    stop_at = s.steps if s.max_steps_this_run is None else min(s.steps, step + s.max_steps_this_run)
    stop_time = time.monotonic() + s.max_minutes * 60 if s.max_minutes is not None else math.inf

    start = t0 = time.perf_counter()
    losses: list[float] = []
    window: dict[str, float] = {}
    window_steps, window_work = 0, 0.0
    while step < stop_at:
        out = recipe.step(step)
        step += 1
        losses.append(out.scalars.get(recipe.loss_tag, math.nan))
        for tag, value in out.scalars.items():
            window[tag] = window.get(tag, 0.0) + value
        window_steps += 1
        window_work += out.work

        if step % s.log_every == 0 or step == stop_at:
            elapsed = max(time.perf_counter() - t0, 1e-9)
            means = {tag: total / window_steps for tag, total in window.items()}
            rate = window_work * accelerator.num_processes / elapsed
            if writer is not None:
                for tag, value in {**means, **recipe.scalars()}.items():
                    writer.add_scalar(tag, value, step)
                writer.add_scalar(f"train/{recipe.work_unit}_per_second", rate, step)
                writer.add_scalar("train/seconds_per_step", elapsed / window_steps, step)
            if main:
                shown = [recipe.loss_tag, *(t for t in recipe.console_tags if t != recipe.loss_tag)]
                parts = "  ".join(f"{t.split('/')[-1]} {means[t]:.4g}" for t in shown if t in means)
                log.info("step %d/%d  %s  (%.2f s/step, %.3g %s/s)", step, s.steps, parts,
                         elapsed / window_steps, rate, recipe.work_unit.replace("_", " "))  # fmt: skip
            t0, window, window_steps, window_work = time.perf_counter(), {}, 0, 0.0
        if main and s.eval_every is not None and (step % s.eval_every == 0 or step == s.steps):
            scores = recipe.evaluate()
            for name, value in scores.items():
                if writer is not None:
                    writer.add_scalar(f"eval/{name}", value, step)
            if scores:
                log.info("step %d eval %s", step, {k: round(v, 4) for k, v in scores.items()})
        out_of_time = step < stop_at and time.monotonic() >= stop_time
        stopped = step < stop_at and _any_process(accelerator, stop.is_set())
        if step % s.checkpoint_every == 0 or step == stop_at or out_of_time or stopped:
            save_state(accelerator, run_dir, step, s.keep_checkpoints)
        if out_of_time:
            log.info("step %d: max_minutes=%g reached; rerun the same command to continue", step, s.max_minutes)
            break
        if stopped:
            log.info("step %d: stopped by a signal, state saved; rerun the same command to continue", step)
            break

    if writer is not None:
        writer.close()
    exported = recipe.export(accelerator, run_dir, step) if step >= s.steps else None
    return LoopResult(step, exported, time.perf_counter() - start, losses)


def loop_settings(cfg: TrainConfig, max_steps_this_run: int | None = None) -> LoopSettings:
    """The loop settings of a :class:`~soundtok.train.config.TrainConfig` recipe (GAN and flow recipes)."""
    return LoopSettings(
        steps=cfg.steps,
        log_every=cfg.log_every,
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        keep_checkpoints=cfg.keep_checkpoints,
        max_steps_this_run=max_steps_this_run,
        max_minutes=cfg.max_minutes,
    )


def train(cfg: TrainConfig, run_dir: str | Path, *, max_steps_this_run: int | None = None) -> Path | None:
    """Train (or resume) the registered recipe ``cfg.recipe`` in ``run_dir``; the export folder once ``cfg.steps``
    are done, else None. ``max_steps_this_run`` stops early (after a state is saved), e.g. to split a run across
    sessions."""
    from soundtok.registry import get_recipe

    entry = get_recipe(cfg.recipe)
    if entry.recipe is None:
        raise SoundtokError(f"the {cfg.recipe} recipe is not trained from a TrainConfig; use soundtok train")
    return run(entry.recipe(cfg), run_dir, loop_settings(cfg, max_steps_this_run)).exported
