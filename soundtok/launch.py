"""Start a soundtok module in several processes with ``accelerate launch``, on CPUs or GPUs.

On a machine without CUDA the processes run on the CPU: ``ACCELERATE_USE_CPU=true`` with ``--multi_gpu`` (as
``--cpu --num_processes 2`` silently runs a single process).

Processes die with their launcher: ``accelerate launch`` is started with a parent-death signal, and a module run
under it calls :func:`die_with_parent` (torch's launcher puts workers in their own sessions, so killing the
launcher alone would otherwise leave them running, still writing).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from soundtok.errors import SoundtokError

log = logging.getLogger(__name__)


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Have the kernel SIGKILL this process when its parent dies; False where that cannot be asked (not Linux).

    For code running under a launcher: a worker whose launcher was killed stops at once instead of writing on. Safe
    as a ``preexec_fn`` (no logging, no subprocess: libc comes from the running program itself)."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def accelerate_command(
    module: str,
    argv: Sequence[str],
    num_processes: int | None,
    *,
    port: int | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> list[str]:
    """``python -m accelerate.commands.launch ... -m <module> <argv>``; a free port so parallel runs never clash.

    Without ``config_file``: ``num_processes`` data-parallel processes (``--multi_gpu`` when more than one), no mixed
    precision. With an accelerate config file (``accelerate config``, or ``configs/accelerate/*.yaml``) the file
    decides the distribution (DDP, FSDP, DeepSpeed), precision and process count; ``num_processes``, when given,
    overrides its count.
    """
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file is not None:
        if not Path(config_file).is_file():
            raise SoundtokError(f"accelerate config file {config_file} does not exist")
        count = [] if num_processes is None else ["--num_processes", str(num_processes)]
        options = ["--config_file", str(config_file), *count]
    else:
        n = num_processes or 1
        options = [
            *(["--multi_gpu"] if n > 1 else []), "--num_processes", str(n), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no",
        ]  # fmt: skip
    return [*launcher, *options, "--main_process_port", str(port or _free_port()), "-m", module, *argv]


def launch_env(cpu: bool | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for :func:`accelerate_command`: ``ACCELERATE_USE_CPU=true`` when ``cpu`` (default: no CUDA)."""
    env = dict(os.environ if base is None else base)
    if cpu if cpu is not None else not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def run_accelerate(
    module: str,
    argv: Sequence[str],
    num_processes: int | None,
    *,
    cpu: bool | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> int:
    """Run ``module`` in ``num_processes`` processes (or as ``config_file`` says) and wait; returns the exit code."""
    command = accelerate_command(module, argv, num_processes, config_file=config_file)
    log.info("running %s", " ".join(command))
    return subprocess.run(command, env=launch_env(cpu), check=False, preexec_fn=die_with_parent).returncode
