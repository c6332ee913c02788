"""``soundtok bench``: tokenizers x resynthesis per domain + costs, cached, with a listening report."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from soundtok.errors import SoundtokError


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)


def bench(
    systems: Annotated[
        list[str] | None,
        typer.Argument(help="presets, PRESET@K (first K codebooks), checkpoint folders, opus-6k ... (default: all)"),
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="the bundled clips only (no corpus needed)")] = False,
    corpus: Annotated[Path | None, typer.Option(help="shared corpus folder (default: ../shared/corpus)")] = None,
    per_dataset: Annotated[int, typer.Option(help="clips per corpus dataset")] = 12,
    max_seconds: Annotated[float, typer.Option(help="clip length cap, seconds")] = 5.0,
    full_metrics: Annotated[
        bool, typer.Option("--full-metrics", help="add ViSQOL and DNSMOS (slower; default for corpus runs)")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="report folder (default: <cache>/bench/report-<data>)")
    ] = None,
    listen: Annotated[int | None, typer.Option(help="clips per domain in the listening section (default: all)")] = None,
    results: Annotated[
        Path | None, typer.Option(help="folder of recorded probe/ICL/LLM results (default: the checkout's)")
    ] = None,
    cache: Annotated[Path | None, typer.Option(help="result cache folder (default: <cache>/bench)")] = None,
    threads: Annotated[int, typer.Option(help="torch threads")] = 2,
) -> None:
    """Score tokenizers (and Opus) on resynthesis per domain with costs; write bench.json/.csv and report.html.

    Results are cached per (system fingerprint, clip set, metrics): a rerun recomputes nothing and a new
    tokenizer computes only its own rows."""
    import torch

    from soundtok.bench.data import corpus_clips, quick_clips
    from soundtok.bench.recorded import default_results_folder, recorded_results
    from soundtok.bench.report import write_report
    from soundtok.bench.run import run_bench
    from soundtok.bench.systems import default_systems
    from soundtok.cache import cache_root

    torch.set_num_threads(threads)
    started = time.perf_counter()
    if quick:
        clipset = quick_clips()
    else:
        from soundtok.corpus.loaders import default_corpus_root

        clipset = corpus_clips(corpus or default_corpus_root(), per_dataset, max_seconds)
        full_metrics = True if not quick else full_metrics
    names, notes = (list(systems), []) if systems else default_systems()
    for note in notes:
        typer.echo(note, err=True)
    typer.echo(f"{len(names)} systems x {len(clipset.clips)} clips ({clipset.seconds:.1f} s, {clipset.description})")
    bar = tqdm(total=len(names), desc="bench", unit="system", file=sys.stderr, leave=False, disable=None)  # no TTY: off
    seen: set[str] = set()

    def progress(message: str) -> None:
        head = message.split(":")[0]
        if head in names and head not in seen and ":" not in message:
            seen.add(head)
            bar.update(1 if len(seen) > 1 else 0)
        bar.set_postfix_str(message[:60])

    run = run_bench(names, clipset, full_metrics=full_metrics, cache_dir=cache, progress=progress)
    bar.close()
    out = output or cache_root() / "bench" / f"report-{clipset.name}"
    command = "soundtok " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "soundtok bench"
    folder = results if results is not None else default_results_folder()
    summary = write_report(run, out, listen=listen, command=command, recorded=recorded_results(folder))
    _print_table(summary)
    for name, why in run.failed.items():
        typer.echo(f"{name}: could not run ({why})", err=True)
    typer.echo(
        f"computed {summary['computed']}, loaded {summary['cached']} from the cache, "
        f"in {time.perf_counter() - started:.0f} s"
    )
    typer.echo(f"report: {out / 'report.html'} (open it in a browser; bench.json and bench.csv beside it)")
    if run.failed and not run.entries:
        raise SoundtokError("no system could run; see the reasons above")


def _print_table(summary: dict) -> None:
    domains = list(summary["metrics"])
    head = ["system", "kbit/s"] + [f"{d}:{summary['primary'][d]}" for d in domains] + ["enc+dec RTF"]
    rows = [head]
    for s in summary["systems"]:
        cells = [s["name"], f"{s['bitrate'] / 1000:.2f}"]
        for d in domains:
            c = (s["domains"].get(d) or {}).get(summary["primary"][d])
            cells.append("n/a" if not c or c["mean"] is None else f"{c['mean']:.3f}")
        cells.append(f"{s['encode_rtf'] + s['decode_rtf']:.3f}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        typer.echo("  ".join(cells))
