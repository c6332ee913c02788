"""What the file-by-file commands (tokenize, detokenize, vocode) share: files or folders as inputs, one output per
input, reruns (``--force``, ``--skip-existing``), carrying on past a bad input, progress and notices."""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from soundtok.errors import OutputExistsError, SoundtokError

Force = Annotated[bool, typer.Option("--force", help="overwrite existing outputs")]
SkipExisting = Annotated[
    bool,
    typer.Option("--skip-existing", help="leave inputs whose output exists alone (finishes an interrupted run)"),
]


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path


def note(message: str) -> None:
    """One line on stderr that leaves progress bars intact."""
    tqdm.write(f"note: {message}", file=sys.stderr)


class Notices:
    """Notes said once per run for each ``key``: a folder of 44.1 kHz files gets one resampling note, not one each."""

    def __init__(self) -> None:
        self._said: set[str] = set()

    def once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            note(message)


def plan(inputs: list[Path], output: Path, *, find: Collection[str], suffix: str, what: str) -> list[Job]:
    """One job per input file. A folder stands for the files under it whose extension is in ``find``
    (recursively, sorted), written below ``output`` at the same relative paths with ``suffix``; a file is written
    to ``output / (its stem + suffix)``, or to ``output`` itself when it is the only input and ``output`` has an
    extension. ``what`` names the files in messages (e.g. "audio files")."""
    found: list[tuple[Path, Path]] = []  # (source, output relative to the output folder)
    for path in inputs:
        if not path.is_dir():
            found.append((path, Path(path.stem + suffix)))
            continue
        files = sorted(
            p
            for p in path.rglob("*")
            if p.suffix.lower() in find
            and not any(part.startswith(".") for part in p.relative_to(path).parts)  # .git, macOS "._x.wav"
            and p.is_file()
        )
        if not files:
            raise SoundtokError(
                f"{path}: a folder with no {what} inside (searched recursively); pass {what} or folders of them"
            )
        note(f"{path}: {len(files)} {what} found")
        found += [(f, f.relative_to(path).with_name(f.stem + suffix)) for f in files]
    if len(found) == 1 and output.suffix and not inputs[0].is_dir():
        return [Job(found[0][0], output)]
    jobs = [Job(source, output / relative) for source, relative in found]
    writer: dict[Path, Path] = {}
    for job in jobs:
        if job.output in writer:
            raise SoundtokError(
                f"{writer[job.output]} and {job.source} would both be written to {job.output}; "
                "pass them in separate runs (or rename one)"
            )
        writer[job.output] = job.source
    return jobs


def run_jobs(
    jobs: list[Job], process: Callable[[Job], str], *, desc: str, force: bool = False, skip_existing: bool = False
) -> None:
    """``process(job)`` for each job (it writes ``job.output`` atomically and returns the line to print), with a
    progress bar. Outputs that exist are refused before anything is written (unless ``force``) or, with
    ``skip_existing``, left alone. A job that raises a :class:`SoundtokError` does not stop the others: each
    failure is listed at the end, and a :class:`SoundtokError` saying how many failed is raised then."""
    if force and skip_existing:
        raise typer.BadParameter(
            "--force overwrites existing outputs and this keeps them; pass one", param_hint="'--skip-existing'"
        )
    todo = jobs
    if skip_existing:
        todo = [job for job in jobs if not job.output.exists()]
        if len(todo) < len(jobs):
            note(f"skipped {len(jobs) - len(todo)} of {len(jobs)} inputs whose output exists (--skip-existing)")
    elif not force:
        existing = [str(job.output) for job in jobs if job.output.exists()]
        if existing:
            raise OutputExistsError(
                f"{len(existing)} output(s) exist, e.g. {existing[0]}; pass --skip-existing to do only the others, "
                "or --force to overwrite them"
            )
    failures: list[str] = []
    with tqdm(total=len(todo), desc=desc, unit="file", leave=False, file=sys.stderr) as bar:
        for job in todo:
            bar.set_postfix_str(job.source.name)
            try:
                tqdm.write(process(job), file=sys.stdout)
            except SoundtokError as exc:
                if len(todo) == 1:
                    raise
                reason = str(exc)
                failures.append(reason if reason.startswith(str(job.source)) else f"{job.source}: {reason}")
            bar.update()
    if failures:
        for reason in failures:
            typer.echo(f"failed: {reason}", err=True)
        raise SoundtokError(
            f"{len(failures)} of {len(todo)} inputs failed (listed above) and have no output; the others are written: "
            "fix or remove the failed ones, then rerun with --skip-existing"
        )
