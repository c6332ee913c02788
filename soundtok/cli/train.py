"""``soundtok train CONFIG RUN_DIR [key=value ...]``: run (or resume) a training recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from soundtok.errors import SoundtokError


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("export-state")(export_state)


def train(
    config: Annotated[Path, typer.Argument(help="recipe YAML, e.g. configs/codec-16k.yaml")],
    run_dir: Annotated[Path, typer.Argument(help="run folder: logs, resumable states, the exported checkpoint")],
    overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides, e.g. steps=2000")] = None,
    num_processes: Annotated[
        int | None, typer.Option(help="data-parallel processes (accelerate; CPUs or GPUs); default 1, or the file's")
    ] = None,
    accelerate_config: Annotated[
        Path | None,
        typer.Option(help="an accelerate config file (multi-GPU, FSDP, precision), e.g. configs/accelerate/fsdp.yaml"),
    ] = None,
) -> None:
    """Train a recipe; kill it any time and rerun the same command to resume from the newest state."""
    from soundtok.launch import run_accelerate
    from soundtok.registry import get_recipe
    from soundtok.train.config import read_raw_config
    from soundtok.train.state import train_main

    entry = get_recipe(read_raw_config(config, overrides).get("recipe", "codec"))
    entry.load_config(config, overrides)  # validate before starting any process
    argv = [str(config), str(run_dir), *(overrides or [])]
    if accelerate_config is not None or (num_processes or 1) > 1:
        code = run_accelerate("soundtok.train", argv, num_processes, config_file=accelerate_config)
    else:
        code = train_main(argv)
    if code != 0:
        raise SoundtokError(f"training stopped with exit code {code}; see the log above")


def export_state(
    run_dir: Annotated[Path, typer.Argument(help="run folder of soundtok train")],
    step: Annotated[int | None, typer.Option(help="the state to export (default: the newest)")] = None,
    out: Annotated[Path | None, typer.Option(help="checkpoint folder (default: RUN_DIR/export-step-XXXXXXX)")] = None,
    force: Annotated[bool, typer.Option(help="replace a checkpoint already in --out")] = False,
) -> None:
    """Export a resumable state of a run that trains one model (codec, vocoder, llm_codec, msn, semantic) as a
    checkpoint, while the run goes on."""
    from soundtok.train.export import export_state as export

    typer.echo(export(run_dir, step=step, out=out, force=force))
