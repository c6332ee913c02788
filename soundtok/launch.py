"""Start a soundtok module in several processes with ``accelerate launch``, on CPUs or GPUs.

On a machine without CUDA the processes run on the CPU: ``ACCELERATE_USE_CPU=true`` with ``--multi_gpu`` (as
``--cpu --num_processes 2`` silently runs a single process).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Sequence

import torch

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accelerate_command(module: str, argv: Sequence[str], num_processes: int, *, port: int | None = None) -> list[str]:
    """``python -m accelerate.commands.launch ... -m <module> <argv>``; a free port so parallel runs never clash."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        *(["--multi_gpu"] if num_processes > 1 else []),
        "--num_processes", str(num_processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(port or _free_port()),
        "-m", module, *argv,
    ]  # fmt: skip


def launch_env(cpu: bool | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for :func:`accelerate_command`: ``ACCELERATE_USE_CPU=true`` when ``cpu`` (default: no CUDA)."""
    env = dict(os.environ if base is None else base)
    if cpu if cpu is not None else not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def run_accelerate(module: str, argv: Sequence[str], num_processes: int, *, cpu: bool | None = None) -> int:
    """Run ``module`` in ``num_processes`` processes and wait; returns the exit code."""
    command = accelerate_command(module, argv, num_processes)
    log.info("running %s", " ".join(command))
    return subprocess.run(command, env=launch_env(cpu), check=False).returncode
