"""The environment soundtok is tested in must be the clean CPU one (../shared/ASSETS.md pitfalls): the torch CPU
build that constraints-cpu.txt pins, and no torchaudio/torchvision, which would break transformers and peft here.
The package itself declares a torch range, so that installing it into a user's CUDA environment keeps their torch."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import torch
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def constrained_torch() -> str:
    """The torch version constraints-cpu.txt pins, e.g. ``2.13.0+cpu``."""
    text = (ROOT / "constraints-cpu.txt").read_text()
    match = re.search(r"^torch==(\S+)", text, flags=re.MULTILINE)
    assert match, "constraints-cpu.txt must pin torch==VERSION"
    return match.group(1)


def test_torch_is_the_pinned_cpu_build() -> None:
    pinned = constrained_torch()
    assert torch.__version__ == pinned, (
        f"torch {torch.__version__} is installed; install with: pip install -c constraints-cpu.txt -e '.[all]' "
        f"(it pins {pinned})"
    )
    assert torch.version.cuda is None, f"a CUDA torch build ({torch.version.cuda}) was installed; see above"


def test_the_package_accepts_a_users_torch() -> None:
    """A GPU user's CUDA torch 2.11 satisfies the package's requirement, so pip keeps it; only the constraints file
    pins a build."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    (torch_req,) = [r for r in requirements if r.name == "torch"]
    for version in ("2.11.0+cu126", "2.13.0+cpu", "2.14.1"):
        assert torch_req.specifier.contains(version), f"pyproject's {torch_req} refuses torch {version}"
    extras = [Requirement(r) for deps in project["optional-dependencies"].values() for r in deps]
    exact = [str(r) for r in requirements + extras if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not exact, f"exact pins {exact} would replace what a user has installed; pin in constraints-cpu.txt"


def test_no_torchaudio_or_torchvision() -> None:
    present = []
    for dist in ("torchaudio", "torchvision"):
        try:
            present.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    assert not present, f"{present} installed: they pull CUDA builds; soundtok never depends on them"


def test_no_cuda_runtime_wheels() -> None:
    cuda = sorted(
        d.metadata["Name"] for d in importlib.metadata.distributions() if d.metadata["Name"].startswith("nvidia-")
    )
    assert not cuda, f"CUDA wheels installed ({cuda[:3]}...): something pulled a CUDA torch"
