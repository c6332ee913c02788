"""The environment soundtok is tested in must be the clean CPU one (../shared/ASSETS.md pitfalls): an exact
torch 2.13.0 CPU build, and no torchaudio/torchvision, which would break transformers and peft here."""

from __future__ import annotations

import importlib.metadata

import torch


def test_torch_is_the_pinned_cpu_build() -> None:
    assert torch.__version__.split("+")[0] == "2.13.0", f"torch {torch.__version__}; pyproject pins 2.13.0"
    assert torch.version.cuda is None, f"a CUDA torch build ({torch.version.cuda}) was installed; pin torch==2.13.0"


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
