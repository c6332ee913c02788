"""Does a frozen LLM's hidden state carry what its audio tokens carry? The probe before training (issue 23, item 2).

For each tokenizer, the LLM is extended with its audio tokens (``soundtok.llm.extend_vocab``: new rows initialised
from the tokenizer's code vectors, ``--init codebook``, or their mean, ``--init mean``) and stays frozen. Every clip
of a task is written as audio token ids (``AudioVocab.tokens_to_ids`` with the begin/end markers; ``--dedup``
collapses runs of one code first, as the curriculum does for semantic units) and run through the LLM once; the
hidden states of every layer are mean-pooled over the clip's positions. A logistic regression (sklearn, standardised
features, C=1) is fitted on the corpus train split and scored on the test split, per layer. Beside it, in the same
run, the bag-of-codes reader: the same regression on each clip's normalised code counts (all levels), which is what
a linear reader gets from the tokens themselves, and the majority class of the train split (the blind prior).

If the best layer is far below the bag of codes, the embedding init loses what the codes know, and training
through it starts from nothing: the point of measuring this in minutes before a 100-minute LoRA run.

Tasks: ``digits`` (FSDD; ``--max-train`` train clips, seeded, and the whole test split) and ``gender`` (RAVDESS +
LibriSpeech). Clips are cut to ``--max-seconds``. Accuracy with Wilson 95% intervals.

    python benchmarks/llm_probe.py --tokenizers msn-16k,semantic-whisper-base-1000 --threads 1

Writes benchmarks/results/llm_probe.{json,md} (``--out``).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import soundtok
from soundtok.audio.io import load_audio
from soundtok.cache import cache_root
from soundtok.corpus.loaders import load_shared_corpus
from soundtok.eval.provenance import run_record
from soundtok.eval.stats import wilson
from soundtok.llm import extend_vocab, load_llm
from soundtok.types import Tokens

#: task -> (datasets, label column)
TASKS = {"digits": (("fsdd",), "digit"), "gender": (("ravdess", "librispeech"), "gender")}


def task_items(task: str, max_train: int, seed: int) -> dict[str, list[tuple[str, Path, str]]]:
    datasets, column = TASKS[task]
    manifest = load_shared_corpus(None, list(datasets))
    out: dict[str, list[tuple[str, Path, str]]] = {"train": [], "test": []}
    for item in sorted(manifest, key=lambda i: i.id):
        if item.split in out and item.labels.get(column):
            out[item.split].append((item.id, item.path, item.labels[column]))
    if len(out["train"]) > max_train:
        out["train"] = sorted(random.Random(seed).sample(out["train"], max_train))
    return out


def encode(tok: Any, items: list[tuple[str, Path, str]], max_seconds: float, cache: Path) -> dict[str, Any]:
    """Tokens of every clip, cached per tokenizer fingerprint (a torch file of tensors only)."""
    stored: dict[str, list[torch.Tensor]] = torch.load(cache, weights_only=True) if cache.is_file() else {}
    missing = [(i, p) for i, p, _ in items if i not in stored]
    for n, (item_id, path) in enumerate(missing):
        wav, sr = load_audio(path, sample_rate=tok.sample_rate, channels=1)
        tokens = tok.encode(wav[None, :, : int(max_seconds * sr)], sr)
        stored[item_id] = [c[0, : int(tokens.frame_lengths(level)[0])].clone() for level, c in enumerate(tokens.codes)]
        if (n + 1) % 250 == 0:
            print(f"  {n + 1}/{len(missing)} clips encoded", flush=True)
    if missing:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(stored, cache)
    return {i: stored[i] for i, _, _ in items}


def dedup(codes: torch.Tensor) -> torch.Tensor:
    keep = torch.ones_like(codes, dtype=torch.bool)
    keep[1:] = codes[1:] != codes[:-1]
    return codes[keep]


@torch.no_grad()
def pooled_states(model: Any, vocab: Any, tok: Any, codes: list[torch.Tensor], collapse: bool) -> torch.Tensor:
    """``[layers + 1, D]``: every layer's hidden states mean-pooled over the clip's token positions."""
    if collapse and len(codes) > 1:
        raise SystemExit("--dedup is for one-level tokenizers (runs of one code are a per-level notion)")
    levels = [dedup(c) if collapse else c for c in codes]
    tokens = Tokens(
        tuple(c[None] for c in levels),
        torch.tensor([max(len(c) * s.hop_length for c, s in zip(levels, tok.levels, strict=True))]),
        tok.sample_rate,
        tuple(tok.levels),
        tok.identity,
    )
    ids = vocab.tokens_to_ids(tokens, markers=True)[0][None]
    out = model(input_ids=ids, output_hidden_states=True)
    return torch.stack([h[0].mean(dim=0) for h in out.hidden_states]).float()  # [L + 1, D]


def bag_of_codes(codes: list[torch.Tensor], sizes: tuple[int, ...]) -> np.ndarray:
    parts = [torch.bincount(c.long(), minlength=n).float() for c, n in zip(codes, sizes, strict=True)]
    counts = torch.cat(parts)
    return (counts / counts.sum().clamp(min=1)).numpy()


def fit_score(x_train: np.ndarray, y_train: list[str], x_test: np.ndarray, y_test: list[str]) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    clf.fit(x_train, y_train)
    correct = int(sum(p == y for p, y in zip(clf.predict(x_test), y_test, strict=True)))
    low, high = wilson(correct, len(y_test))
    return {"accuracy": correct / len(y_test), "ci_low": low, "ci_high": high, "n": len(y_test)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizers", default="msn-16k,semantic-whisper-base-1000")
    parser.add_argument("--tasks", default="digits,gender")
    parser.add_argument("--llm", default="smollm2-135m")
    parser.add_argument("--init", default="codebook", choices=("codebook", "mean"))
    parser.add_argument("--dedup", action="store_true", help="collapse runs of one code before writing the ids")
    parser.add_argument("--max-train", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    rows: list[dict[str, Any]] = []
    for name in args.tokenizers.split(","):
        tok = soundtok.load(name)
        model, hf_tok = load_llm(args.llm)
        vocab = extend_vocab(model, hf_tok, tok, init=args.init, seed=args.seed)
        model.eval()
        for task in args.tasks.split(","):
            items = task_items(task, args.max_train, args.seed)
            cache = cache_root() / "llm-probe" / f"{tok.identity.fingerprint}-{task}-{args.max_seconds:g}s.pt"
            codes = encode(tok, items["train"] + items["test"], args.max_seconds, cache)
            print(f"{name} {task}: {len(items['train'])} train, {len(items['test'])} test clips", flush=True)
            feats = {
                split: [pooled_states(model, vocab, tok, codes[i], args.dedup) for i, _, _ in items[split]]
                for split in ("train", "test")
            }
            y = {split: [label for _, _, label in items[split]] for split in ("train", "test")}
            majority = max(set(y["train"]), key=y["train"].count)
            prior = sum(label == majority for label in y["test"])
            low, high = wilson(prior, len(y["test"]))
            base = {"tokenizer": name, "task": task, "init": args.init, "dedup": args.dedup}
            rows.append({**base, "reader": "blind prior", "layer": None, "accuracy": prior / len(y["test"]),
                         "ci_low": low, "ci_high": high, "n": len(y["test"])})  # fmt: skip
            bags = {s: np.stack([bag_of_codes(codes[i], tok.codebook_sizes) for i, _, _ in items[s]]) for s in y}
            rows.append({**base, "reader": "bag of codes", "layer": None,
                         **fit_score(bags["train"], y["train"], bags["test"], y["test"])})  # fmt: skip
            for layer in range(feats["train"][0].shape[0]):
                x = {s: torch.stack([f[layer] for f in feats[s]]).numpy() for s in y}
                rows.append({**base, "reader": "LLM hidden state", "layer": layer,
                             **fit_score(x["train"], y["train"], x["test"], y["test"])})  # fmt: skip
            best = max((r for r in rows if r["reader"] == "LLM hidden state" and r["task"] == task
                        and r["tokenizer"] == name), key=lambda r: r["accuracy"])  # fmt: skip
            bag = next(
                r for r in rows if r["reader"] == "bag of codes" and r["task"] == task and r["tokenizer"] == name
            )
            print(f"  best layer {best['layer']}: {best['accuracy']:.3f}; bag of codes {bag['accuracy']:.3f}; "
                  f"blind prior {prior / len(y['test']):.3f}", flush=True)  # fmt: skip
    record = {
        **run_record(),
        "seconds": round(time.time() - started),
        "rows": rows,
        "settings": vars(args) | {"out": str(args.out)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llm_probe.json").write_text(json.dumps(record, indent=1))
    lines = [
        "# Frozen-LLM probe: what the hidden states over audio tokens carry, before any training", "",
        f"Command: `{record['command']}` ({record['seconds']} s; {record['machine']}). {args.llm}, audio rows "
        f"initialised `{args.init}`, dedup {args.dedup}; logistic regression on the train split, accuracy on the test "
        "split with Wilson 95% intervals.", "",
        "| tokenizer | task | reader | layer | accuracy [95% CI] | n |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        layer = "" if r["layer"] is None else str(r["layer"])
        lines.append(f"| {r['tokenizer']} | {r['task']} | {r['reader']} | {layer} | "
                     f"{r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['n']} |")  # fmt: skip
    (args.out / "llm_probe.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'llm_probe.md'}")


if __name__ == "__main__":
    main()
