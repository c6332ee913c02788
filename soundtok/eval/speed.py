"""Timing and peak memory for the speed benchmarks, each configuration measured in a fresh process.

A process's peak resident memory (``ru_maxrss``) only grows, so a benchmark that compares the memory of several
models runs each one in its own process: the benchmark script calls itself with a child flag through
:func:`in_fresh_process`, and the child prints one JSON object (its figures, :func:`peak_rss_mb` included) as its
last line of output.

- :func:`median_seconds`: the median wall time of ``fn()`` over repeated runs after a warm-up, in inference mode.
- :func:`peak_rss_mb`: this process's peak resident set so far, in MiB.
- :func:`in_fresh_process`: run ``python ARGV...`` and return the JSON object its last line of stdout holds.

>>> median_seconds(lambda: sum(range(1000)), repeats=3) < 1.0
True
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs, after one warm-up run, in inference mode."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    with torch.inference_mode():
        fn()  # warm-up: first-call allocations and kernel selection
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB: Linux's ``VmHWM`` (``/proc/self/status``), else
    ``ru_maxrss`` (KiB on Linux, bytes on macOS). ``ru_maxrss`` survives ``exec``: a child started from a large
    parent reports at least the parent's size at the fork, which would hide the child's own peak; ``VmHWM`` belongs
    to the new program's memory map alone."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource  # POSIX only

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def in_fresh_process(
    argv: Sequence[str], env: Mapping[str, str] | None = None, *, stderr_tail: int = 3000
) -> dict[str, Any]:
    """Run ``python ARGV...`` (this interpreter) in a new process and return the JSON object on the last line of
    its stdout. ``env`` replaces the environment (default: this one).

    Raises ChildProcessError with the command and the end of its stderr when the process fails or prints no JSON.
    """
    command = [sys.executable, *argv]
    done = subprocess.run(
        command, env=dict(os.environ if env is None else env), capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ChildProcessError(
            f"{' '.join(command)} failed (exit status {done.returncode}):\n{done.stderr[-stderr_tail:]}"
        )
    try:
        result = json.loads(lines[-1])
    except json.JSONDecodeError:
        raise ChildProcessError(f"{' '.join(command)} printed no JSON result; its last line: {lines[-1]!r}") from None
    if not isinstance(result, dict):
        raise ChildProcessError(f"{' '.join(command)} printed {type(result).__name__}, not a JSON object")
    return result
