"""soundtok.launch with an accelerate config file, and the shipped files accelerate reads (the multi-GPU file also
runs, on 2 CPU processes, in tests/test_llm_recipe.py; FSDP needs a GPU)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from soundtok.errors import SoundtokError
from soundtok.launch import accelerate_command

CONFIGS = Path(__file__).parents[1] / "configs" / "accelerate"


def test_a_config_file_decides_the_distribution() -> None:
    cmd = accelerate_command("m", ["a"], None, port=1, config_file=CONFIGS / "fsdp.yaml")
    assert cmd[cmd.index("--config_file") + 1] == str(CONFIGS / "fsdp.yaml")
    assert "--multi_gpu" not in cmd and "--num_processes" not in cmd and "--mixed_precision" not in cmd
    assert cmd[-3:] == ["-m", "m", "a"]
    cmd = accelerate_command("m", [], 4, port=1, config_file=CONFIGS / "multi-gpu.yaml")
    assert cmd[cmd.index("--num_processes") + 1] == "4"  # an explicit count overrides the file's
    with pytest.raises(SoundtokError, match="does not exist"):
        accelerate_command("m", [], None, config_file=CONFIGS / "missing.yaml")


@pytest.mark.parametrize(("name", "kind"), [("multi-gpu.yaml", "MULTI_GPU"), ("fsdp.yaml", "FSDP")])
def test_accelerate_reads_the_shipped_configs(name: str, kind: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    assert config.distributed_type.name == kind and config.num_machines == 1
    if kind == "FSDP":  # LoRA needs the original parameters (frozen and trainable share a wrapped layer)
        assert config.fsdp_config["fsdp_use_orig_params"] is True
        assert "fsdp_transformer_layer_cls_to_wrap" not in config.fsdp_config  # read from the model: any LLM


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's")
def test_a_process_that_asked_dies_with_its_parent() -> None:
    child = "import time; from soundtok.launch import die_with_parent; die_with_parent(); print(1, flush=True); "
    child += "time.sleep(60)"
    parent = "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', sys.argv[1]], "
    parent += "stdout=subprocess.PIPE); p.stdout.readline(); print(p.pid, flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", parent, child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())  # the child is running and has asked
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while _running(pid):
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
