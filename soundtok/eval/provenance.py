"""Where a benchmark figure came from: the command, the date, the code and the machine, recorded the same way by
every benchmark.

- :func:`command_line`: the command that is running, as a shell line (``python benchmarks/x.py --flag 'a b'``).
- :func:`machine_info`: processor, CPU count, torch version and threads, Python, OS and load, as a dict.
- :func:`machine`: the same in one line, for a report's header.
- :func:`run_record`: ``command``, ``date``, ``soundtok`` version, ``git_commit`` and ``machine`` of this run, the
  keys a results file starts with.

>>> record = run_record(["benchmarks/x.py", "--out", "a b"])
>>> record["command"]
"python benchmarks/x.py --out 'a b'"
>>> sorted(record)
['command', 'date', 'git_commit', 'machine', 'soundtok']
"""

from __future__ import annotations

import functools
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

#: the checkout soundtok runs from, when it is one (an installed wheel has none)
_SOURCE = Path(__file__).resolve().parents[2]


def command_line(argv: Sequence[str] | None = None) -> str:
    """``python`` and ``argv`` (default ``sys.argv``) quoted for a shell: the command that reproduces the run."""
    return " ".join(shlex.quote(a) for a in ["python", *(sys.argv if argv is None else argv)])


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what :mod:`platform` knows (e.g. ``x86_64``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average (other work on the machine slows a timing), or None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 1)
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    """What a timing or a score may depend on, now: processor, CPU count, torch version and threads, Python, OS."""
    return {
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": load_average(),
    }


def machine(threads: int | str | None = None) -> str:
    """One line: ``"<processor>, 16 CPUs, torch 2.x, 2 threads, load average 0.4"``.

    threads: the threads the measured work ran on (default: torch's now), or a phrase where that is not one number
    (``"1 thread per probe"``).
    """
    info = machine_info()
    if threads is None:
        threads = info["torch_threads"]
    shown = f"{threads} thread{'s' if threads != 1 else ''}" if isinstance(threads, int) else threads
    line = f"{info['processor']}, {info['cpu_count']} CPUs, torch {info['torch']}, {shown}"
    return line if info["load_average"] is None else f"{line}, load average {info['load_average']:.1f}"


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the soundtok checkout this code runs from (``"<sha> + uncommitted changes"`` when the tree
    differs from it), or None for an installed package or without git."""
    if not (_SOURCE / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(_SOURCE), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(_SOURCE), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head} + uncommitted changes" if status.strip() else head


def run_record(argv: Sequence[str] | None = None, *, threads: int | str | None = None) -> dict[str, Any]:
    """The provenance of this run: ``command`` (:func:`command_line`), ``date`` (local time), ``soundtok``
    (version), ``git_commit`` (:func:`git_commit`) and ``machine`` (:func:`machine` with ``threads``)."""
    from soundtok import __version__

    return {
        "command": command_line(argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "soundtok": __version__,
        "git_commit": git_commit(),
        "machine": machine(threads),
    }
