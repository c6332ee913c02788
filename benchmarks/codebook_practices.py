"""Which codebook practice keeps RVQ usage high? The same small codec trained under each, on the same batches.

Variants (``soundtok.nn.quantize.VQConfig``): Euclidean search with random init and no restarts (the plain VQ-VAE
baseline); + k-means init on the first batch; + dead-code restart; DAC's factorised, l2-normalised codes alone;
factorised + k-means + restarts (soundtok's default); and the same with unit-length codes in the losses and output
(``unit_codes``, what ``configs/codec-16k.yaml`` trains with). Each run trains a 4-codebook x 1024 codec (8 channels, mel loss
only, no quantizer dropout) for ``--steps`` steps on the corpus train split with the same seed, so every variant sees
the same batches; then the test split (``--clips`` clips of up to 4 s, all datasets) is encoded and we report, per
level, the fraction of the 1024 codes used and the unigram entropy in bits (10 = uniform), with the held-out mel
distance at 4 codebooks.

    python benchmarks/codebook_practices.py                # ~6 variants x --steps (default 400)
    python benchmarks/codebook_practices.py --steps 20 --clips 4 --out /tmp/cb   # a smoke run

Writes benchmarks/results/codebook_practices.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

import soundtok
from soundtok.corpus.loaders import load_shared_corpus
from soundtok.eval.signal import mel_distance
from soundtok.eval.tokens import token_stats
from soundtok.train.config import load_config
from soundtok.train.data import eval_clips
from soundtok.train.gan import train_gan

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "euclidean, random init, no restart": dict(factorised=False, kmeans_init=False, dead_code_threshold=0.0),
    "euclidean + k-means init": dict(factorised=False, kmeans_init=True, dead_code_threshold=0.0),
    "euclidean + k-means + dead-code restart": dict(factorised=False, kmeans_init=True, dead_code_threshold=0.02),
    "factorised l2 (DAC), random init, no restart": dict(factorised=True, kmeans_init=False, dead_code_threshold=0.0),
    "factorised + k-means + restart (default)": dict(factorised=True, kmeans_init=True, dead_code_threshold=0.02),
    "factorised + k-means + restart + unit codes": dict(
        factorised=True, kmeans_init=True, dead_code_threshold=0.02, unit_codes=True
    ),
}
SMALL = {
    "channels": 8,
    "strides": [8, 5, 4, 2],
    "dilations": [1],
    "activation": "elu",
    "latent_dim": 32,
    "num_quantizers": 4,
    "codebook_size": 1024,
    "quantizer_dropout": 0.0,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--clips", type=int, default=40, help="held-out clips for usage and mel distance")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "codebook_practices")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    clips = eval_clips(load_shared_corpus(None).filter(split="test"), 16000, args.clips, 4.0)
    rows = []
    for label, practice in VARIANTS.items():
        overrides = [
            f"model={json.dumps({**SMALL, **practice})}",
            f"steps={args.steps}",
            f"data.batch_size={args.batch_size}",
            f"adversarial_start={args.steps + 1}",  # reconstruction losses only: the quantizer is what differs
            "optim.lr=0.0003",
            f"log_every={args.steps}",
            f"eval_every={args.steps * 10}",
            f"checkpoint_every={args.steps}",
        ]
        cfg = load_config(ROOT / "configs" / "codec-16k.yaml", overrides)
        run = args.runs / label.split(" (")[0].replace(" ", "_").replace(",", "").replace("+", "and")
        t0 = time.perf_counter()
        export = train_gan(cfg, run)
        assert export is not None
        seconds = time.perf_counter() - t0
        codec = soundtok.load(export)
        tokens, dists = [], []
        for _, wav in clips:
            t = codec.encode(wav[None], 16000)
            tokens.append(t)
            dists.append(mel_distance(wav[0], codec.decode(t)[0, 0], 16000))
        stats = token_stats(tokens)
        rows.append(
            {
                "variant": label,
                "practice": practice,
                "usage": stats.usage,
                "entropy_bits": stats.entropy_bits,
                "entropy_bitrate": stats.entropy_bitrate,
                "nominal_bitrate": stats.nominal_bitrate,
                "mel_distance": sum(dists) / len(dists),
                "train_seconds": seconds,
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    lines = [
        f"# Codebook practices: a 4 x 1024 RVQ codec, {args.steps} steps each (batch {args.batch_size} x 1 s)",
        "",
        f"Command: `python benchmarks/codebook_practices.py --steps {args.steps} --clips {args.clips}`. Same seed and "
        f"batches for every variant; {len(clips)} held-out clips (test split, all datasets, <= 4 s). Usage = "
        "fraction of the 1024 codes used per level; entropy in bits per code (10 = uniform); mel distance at 4 "
        f"codebooks (lower is better). Machine: {platform.machine()}, {torch.get_num_threads()} threads.",
        "",
        "| variant | usage per level | entropy bits per level | used / nominal bit/s | mel distance |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        usage = " / ".join(f"{u:.2f}" for u in r["usage"])
        entropy = " / ".join(f"{h:.1f}" for h in r["entropy_bits"])
        lines.append(
            f"| {r['variant']} | {usage} | {entropy} | {r['entropy_bitrate']:.0f} / {r['nominal_bitrate']:.0f} | "
            f"{r['mel_distance']:.3f} |"
        )
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "codebook_practices.md").write_text(table)
    (args.out / "codebook_practices.json").write_text(json.dumps({"steps": args.steps, "rows": rows}, indent=2))
    print(table)


if __name__ == "__main__":
    main()
