"""Hour-long input: encode/decode time and peak memory, chunked (the default) vs whole, per tokenizer.

Each measurement runs in a fresh subprocess so its peak resident memory (ru_maxrss) is its own. The input is
``--minutes`` of real speech (the bundled LibriSpeech clip, tiled) at 16 kHz; the baseline row "load only" is the
process that just builds the input, so the tokenizer's own footprint is the difference.

    python benchmarks/long_audio.py --minutes 60

Writes benchmarks/results/long_audio.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

import soundtok
import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny, one of the rows)
from soundtok.eval.speed import in_fresh_process, peak_rss_mb
from soundtok.fixtures import load_fixture

ROOT = Path(__file__).resolve().parents[1]


def measure(name: str, minutes: float, chunk: str) -> dict[str, Any]:
    """One row (``--child``: run in a fresh process, so the peak RSS is its own): ``minutes`` of the bundled speech
    clip, tiled, through ``name`` (``"load only"``: the input alone); ``chunk`` is ``"default"`` or seconds."""
    torch.set_num_threads(2)
    clip, sr = load_fixture("speech")
    total = int(minutes * 60 * sr)
    wav = clip.repeat(1, total // clip.shape[-1] + 1)[:, :total][None]  # [1, 1, T]
    out: dict[str, Any] = {"name": name, "chunk": chunk}
    if name != "load only":
        tok = soundtok.load(name)
        chunk_s = None if chunk == "default" else float(chunk)
        t0 = time.perf_counter()
        tokens = tok.encode(wav, sr, chunk_seconds=chunk_s)
        t1 = time.perf_counter()
        audio = tok.decode(tokens, chunk_seconds=chunk_s)
        t2 = time.perf_counter()
        if audio.shape[-1] != tokens.lengths[0]:
            raise RuntimeError(f"{name} decoded {audio.shape[-1]} samples of {int(tokens.lengths[0])}")
        out.update(encode_s=t1 - t0, decode_s=t2 - t1, frames=[c.shape[1] for c in tokens.codes][:1])
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a fresh process: one tokenizer (with --chunk)
    parser.add_argument("--chunk", default="default", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.minutes, args.chunk)))
        return
    runs = [
        ("load only", "default"),
        ("mulaw-8bit-16k", "default"),
        ("codec2-3200", "default"),
        ("toy-tiny", "default"),
        ("toy-tiny", str(args.minutes * 60 + 1)),  # one chunk: the whole input at once
    ]
    rows = []
    for name, chunk in runs:
        try:
            rows.append(in_fresh_process([__file__, "--child", name, "--minutes", str(args.minutes), "--chunk", chunk]))
        except ChildProcessError as exc:
            raise SystemExit(f"{name} failed: {exc}") from None
        print(rows[-1], flush=True)
    audio_s = args.minutes * 60
    lines = [
        f"# {args.minutes:g} minutes of 16 kHz speech in one encode/decode call (2 CPU threads)",
        "",
        f"Command: `python benchmarks/long_audio.py --minutes {args.minutes:g}`. Peak RSS of a fresh process that",
        "builds the input and runs one encode + decode; chunk 'default' = the family's rule (30 s chunks with",
        "context for neural families; Codec 2 streams frame by frame).",
        "",
        "| tokenizer | chunk s | encode s | decode s | encode x real time | peak RSS MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["name"] == "load only":
            lines.append(f"| (input only) | - | - | - | - | {r['peak_rss_mb']:.0f} |")
            continue
        lines.append(
            f"| {r['name']} | {r['chunk']} | {r['encode_s']:.1f} | {r['decode_s']:.1f} | "
            f"{audio_s / r['encode_s']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "long_audio.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
