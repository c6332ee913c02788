"""Which codebook practice keeps RVQ usage high? The same codec trained under each, on the same batches.

Variants (``soundtok.nn.quantize.VQConfig``), each a full ``configs/codec-16k.yaml`` model (``--model codec-16k``:
12 x 1024 codebooks, quantizer dropout) or a small 4 x 1024 one (``--model small``): Euclidean search with random
init and no restarts (the plain VQ-VAE baseline); DAC's factorised, l2-normalised codes with k-means init and
rare restarts (below 2% of a uniform share; soundtok's first default); the same with unit-length codes in the
losses and output (``unit_codes``); the same with restarts below 40% of a uniform share; a Euclidean codebook learnt
by gradient with k-means and 40% restarts; and EnCodec's practice, EMA codebooks + k-means + 40% restarts (what
``codec-16k`` trains with). Every run uses the same seed, so every variant sees the same batches (mel loss only,
no discriminators, lr 2e-4); then ``--clips`` held-out clips (test split, all datasets, <= 4 s) are encoded with
every level, and we report per level the fraction of the codes used and the unigram entropy in bits (10 =
uniform), the bitrate those entropies add up to, and the held-out mel distance.

    python benchmarks/codebook_practices.py                # 6 variants x 300 steps of the codec-16k model
    python benchmarks/codebook_practices.py --model small --steps 20 --clips 4 --out /tmp/cb   # a smoke run

Writes benchmarks/results/codebook_practices.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import soundtok
from soundtok.corpus.loaders import load_shared_corpus
from soundtok.eval.provenance import machine
from soundtok.eval.signal import mel_distance
from soundtok.eval.tokens import token_stats
from soundtok.train.config import load_config
from soundtok.train.data import eval_clips
from soundtok.train.gan import train_gan

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "codec-16k.yaml"


def practice(*, factorised: bool, ema: bool = False, kmeans_init: bool = True, restart: float = 0.4,
             unit_codes: bool = False) -> dict[str, object]:  # fmt: skip
    """The quantizer fields of one variant (``restart``: ``VQConfig.dead_code_threshold``)."""
    return dict(factorised=factorised, ema=ema, kmeans_init=kmeans_init, dead_code_threshold=restart,
                unit_codes=unit_codes)  # fmt: skip


VARIANTS = {
    "euclidean, random init, no restart": practice(factorised=False, kmeans_init=False, restart=0.0),
    "factorised (DAC) + k-means + restart 0.02": practice(factorised=True, restart=0.02),
    "factorised + unit codes + k-means + restart 0.02": practice(factorised=True, restart=0.02, unit_codes=True),
    "factorised + k-means + restart 0.4": practice(factorised=True),
    "euclidean + k-means + restart 0.4": practice(factorised=False),
    "EMA euclidean + k-means + restart 0.4 (codec-16k)": practice(factorised=False, ema=True),
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
    parser.add_argument("--model", choices=["codec-16k", "small"], default="codec-16k")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--clips", type=int, default=40, help="held-out clips for usage and mel distance")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "codebook_practices")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    clips = eval_clips(load_shared_corpus(None).filter(split="test"), 16000, args.clips, 4.0)
    base = SMALL if args.model == "small" else load_config(CONFIG).model
    rows = []
    for label, practice in VARIANTS.items():
        overrides = [
            f"model={json.dumps({**base, **practice})}",
            f"steps={args.steps}",
            f"data.batch_size={args.batch_size}",
            f"adversarial_start={args.steps + 1}",  # reconstruction losses only: the quantizer is what differs
            "optim.lr=0.0002",
            f"log_every={args.steps}",
            f"eval_every={args.steps * 10}",
            f"checkpoint_every={args.steps}",
        ]
        cfg = load_config(CONFIG, overrides)
        run = args.runs / args.model / label.split(" (")[0].replace(" ", "_").replace(",", "").replace("+", "and")
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

    levels = len(rows[0]["usage"])
    lines = [
        f"# Codebook practices: a {levels} x 1024 RVQ codec ({args.model}), {args.steps} steps each "
        f"(batch {args.batch_size} x 1 s)",
        "",
        f"Command: `python benchmarks/codebook_practices.py --model {args.model} --steps {args.steps} --clips "
        f"{args.clips}`. Same seed and batches for every variant; {len(clips)} held-out clips (test split, all "
        f"datasets, <= 4 s), encoded with all {levels} levels. Usage = fraction of the 1024 codes used, entropy in "
        f"bits per code (10 = uniform), each as the mean over levels [lowest, highest level]; mel distance with all "
        f"levels (lower is better). Machine: {machine()}.",
        "",
        "| variant | codes used | entropy bits | entropy / nominal bit/s | mel distance | train s |",
        "|---|---|---|---|---|---|",
    ]

    def spread(values: list[float], fmt: str) -> str:
        return f"{sum(values) / len(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"

    for r in rows:
        lines.append(
            f"| {r['variant']} | {spread(r['usage'], '.2f')} | {spread(r['entropy_bits'], '.1f')} | "
            f"{r['entropy_bitrate']:.0f} / {r['nominal_bitrate']:.0f} | {r['mel_distance']:.3f} | "
            f"{r['train_seconds']:.0f} |"
        )
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "codebook_practices.md").write_text(table)
    report = {"model": args.model, "steps": args.steps, "rows": rows}
    (args.out / "codebook_practices.json").write_text(json.dumps(report, indent=2))
    print(table)


if __name__ == "__main__":
    main()
