"""``soundtok manifest`` and ``soundtok tokenize-corpus``: wrappers over :mod:`soundtok.corpus`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from soundtok.errors import SoundtokError

LAYOUTS = ("shared", "librispeech", "esc50", "fsdd", "ravdess")


def register(app: typer.Typer) -> None:
    app.command("manifest")(manifest)
    app.command("tokenize-corpus")(tokenize_corpus)


def _load_manifest(layout: str, root: Path | None, datasets: str | None, split: str | None):  # noqa: ANN202
    from soundtok.corpus import loaders

    if layout not in LAYOUTS:
        raise SoundtokError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "shared":
        names = [d.strip() for d in datasets.split(",")] if datasets else None
        m = loaders.load_shared_corpus(root, names)
    elif root is None:
        raise SoundtokError(f"--root is needed for the {layout} layout (the folder you downloaded)")
    else:
        m = getattr(loaders, f"load_{layout}")(root)
    return m.filter(split=split) if split else m


def manifest(
    output: Annotated[Path, typer.Option("-o", "--output", help="manifest JSONL to write")],
    layout: Annotated[str, typer.Option(help=f"one of {', '.join(LAYOUTS)}")] = "shared",
    root: Annotated[Path | None, typer.Option(help="corpus folder (default for shared: ../shared/corpus)")] = None,
    datasets: Annotated[str | None, typer.Option(help="shared layout: comma-separated datasets")] = None,
    split: Annotated[str | None, typer.Option(help="keep one split (train, test, ...)")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing manifest")] = False,
) -> None:
    """Write a manifest (id, path, duration, labels, split) of a corpus on disk."""
    m = _load_manifest(layout, root, datasets, split)
    m.to_jsonl(output, force=force)
    typer.echo(f"{len(m)} items, {m.total_duration / 3600:.2f} h -> {output}")


def tokenize_corpus(
    tokenizer: Annotated[str, typer.Option("-t", "--tokenizer", help="preset name or checkpoint folder")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output folder (token store or .stok files)")],
    manifest_file: Annotated[Path | None, typer.Option("--manifest", help="manifest JSONL (soundtok manifest)")] = None,
    layout: Annotated[str, typer.Option(help="without --manifest: corpus layout")] = "shared",
    root: Annotated[Path | None, typer.Option(help="without --manifest: corpus folder")] = None,
    datasets: Annotated[str | None, typer.Option(help="without --manifest: comma-separated datasets")] = None,
    split: Annotated[str | None, typer.Option(help="without --manifest: one split only")] = None,
    output: Annotated[str, typer.Option(help="store (Parquet shards) or files (.stok per item)")] = "store",
    num_processes: Annotated[int, typer.Option(help="data-parallel processes (accelerate)")] = 1,
    shard_items: Annotated[int, typer.Option(help="items per Parquet shard, per process")] = 1000,
    batch_seconds: Annotated[float, typer.Option(help="audio seconds per encode batch")] = 60.0,
    force: Annotated[bool, typer.Option("--force", help="start over, replacing earlier output")] = False,
) -> None:
    """Tokenize a whole corpus; kill it any time and rerun the same command to resume."""
    from soundtok.corpus import tokenize as job

    if output not in ("store", "files"):
        raise SoundtokError(f"--output must be 'store' or 'files', got {output!r}")
    if manifest_file is None:
        manifest_file = out / "manifest.jsonl"
        m = _load_manifest(layout, root, datasets, split)
        m.to_jsonl(manifest_file, force=True)  # derived from the corpus, so rewriting it loses nothing
        typer.echo(f"{len(m)} items, {m.total_duration / 3600:.2f} h listed in {manifest_file}")
    argv = [
        "--manifest", str(manifest_file), "--tokenizer", tokenizer, "--out", str(out), "--output", output,
        "--shard-items", str(shard_items), "--batch-seconds", str(batch_seconds), "--log-level", "WARNING",
        *(["--force"] if force else []),
    ]  # fmt: skip
    code = job.launch(argv, num_processes) if num_processes > 1 else job.main(argv)
    if code != 0:
        raise SoundtokError(f"corpus tokenization failed (exit code {code}); see the messages above")
