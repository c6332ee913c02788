"""``soundtok eval REF DEG``: every metric of :mod:`soundtok.eval` on a reference and a degraded file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_pair)


def eval_pair(
    reference: Annotated[Path, typer.Argument(help="clean reference audio")],
    degraded: Annotated[Path, typer.Argument(help="degraded / decoded audio")],
    text: Annotated[str | None, typer.Option(help="reference transcript, for WER/CER")] = None,
    metrics: Annotated[str | None, typer.Option(help="comma-separated subset, e.g. si_sdr,stoi")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Compare two audio files with every available metric (unavailable ones say why)."""
    from soundtok.audio.io import load_audio
    from soundtok.eval import evaluate

    ref, sr = load_audio(reference, channels=1)
    deg, _ = load_audio(degraded, sample_rate=sr, channels=1)
    names = [m.strip() for m in metrics.split(",")] if metrics else None
    report = evaluate(ref[0], deg[0], sr, metrics=names, reference_text=text)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())
