"""``soundtok eval REF DEG``: every metric of :mod:`soundtok.eval` on a reference and a degraded file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from soundtok.cli.batch import note


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
    from soundtok.audio.io import conversion_notice, convert_channels, load_audio, resample
    from soundtok.eval import Evaluator

    ref, sr = load_audio(reference)  # [C, T]
    deg, deg_sr = load_audio(degraded)
    for path, wav, rate in ((reference, ref, sr), (degraded, deg, deg_sr)):
        change = conversion_notice(rate, wav.shape[0], sr, 1)
        if change:
            note(f"{path.name}: {change} for scoring")
    ref, deg = convert_channels(ref, 1), resample(convert_channels(deg, 1), deg_sr, sr)  # [1, T] each
    names = [m.strip() for m in metrics.split(",")] if metrics else None
    evaluator = Evaluator(ref[0], sr, metrics=names, reference_text=text)
    with tqdm(total=len(evaluator.names), desc="eval", unit="metric", leave=False, file=sys.stderr) as bar:

        def on_metric(name: str) -> None:  # called as each metric starts: show which one takes the time
            bar.n = evaluator.names.index(name)
            bar.set_postfix_str(name)

        report = evaluator.score(deg[0], on_metric=on_metric)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_text())
