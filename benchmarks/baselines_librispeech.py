"""Training-free baselines on the corpus's LibriSpeech test split: bitrate, STOI, PESQ, WER/dWER.

Every clip is encoded and decoded by each tokenizer, resampled back to 16 kHz and compared with the original.
Whisper tiny.en (offline, int8) transcribes the original and each decoded clip: ``wer`` is against the LibriSpeech
transcript, ``dwer`` against Whisper's transcript of the original. Means with 95% intervals (t-distribution over
clips); ``entropy bit/s`` is what the codes actually carry (unigram entropy per level x frame rate).

    python benchmarks/baselines_librispeech.py                 # all 84 test clips (~10 min on 2 CPU cores)
    python benchmarks/baselines_librispeech.py --limit 5       # a quick look

Writes benchmarks/results/baselines_librispeech.{md,json} (use --out to change).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

import soundtok
from soundtok.audio.io import load_audio, resample
from soundtok.eval import asr, perceptual
from soundtok.eval import tokens as token_metrics
from soundtok.eval.provenance import machine
from soundtok.eval.stats import mean_ci
from soundtok.registry import PRESETS, available

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
TOKENIZERS = ["mulaw-8bit-16k", "mulaw-8bit-8k", "mulaw-4bit-8k", "codec2-3200", "codec2-1200", "codec2-700c"]
METRICS = ["stoi", "pesq_wb", "pesq_nb", "wer", "dwer"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--limit", type=int, default=None, help="first N test clips only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(2)

    with open(args.corpus / "librispeech" / "librispeech.csv") as f:
        rows = sorted((r for r in csv.DictReader(f) if r["split"] == "test"), key=lambda r: r["path"])
    rows = rows[: args.limit] if args.limit else rows
    tokenizers = {name: soundtok.load(name) for name in TOKENIZERS if available(PRESETS[name]) is None}
    skipped = sorted(set(TOKENIZERS) - set(tokenizers))

    scores: dict[str, dict[str, list[float]]] = {n: {m: [] for m in METRICS} for n in ["original", *tokenizers]}
    all_tokens: dict[str, list[soundtok.Tokens]] = {n: [] for n in tokenizers}
    # (reference, hypothesis) transcript pairs per tokenizer, for corpus-level (pooled) WER and dWER
    pairs: dict[str, dict[str, list[tuple[str, str]]]] = {n: {"wer": [], "dwer": []} for n in scores}
    seconds = 0.0
    t0 = time.time()
    for row in tqdm(rows, desc="clips", unit="clip"):
        ref, sr = load_audio(args.corpus / row["path"], sample_rate=16000, channels=1)
        seconds += ref.shape[-1] / sr
        ref_text = asr.transcribe(ref[0], sr)
        scores["original"]["wer"].append(asr.wer(row["transcript"], ref_text))
        scores["original"]["dwer"].append(0.0)
        pairs["original"]["wer"].append((row["transcript"], ref_text))
        pairs["original"]["dwer"].append((ref_text, ref_text))
        for name, tok in tokenizers.items():
            tokens = tok.encode(ref[None], sr)
            all_tokens[name].append(tokens)
            deg = resample(tok.decode(tokens)[0, 0], tok.sample_rate, sr)
            s = scores[name]
            s["stoi"].append(perceptual.stoi(ref[0], deg, sr))
            for mode in ("wb", "nb"):
                try:
                    s[f"pesq_{mode}"].append(perceptual.pesq(ref[0], deg, sr, mode=mode))
                except soundtok.SoundtokError:
                    pass  # counted below: n < clips
            deg_text = asr.transcribe(deg, sr)
            s["wer"].append(asr.wer(row["transcript"], deg_text))
            s["dwer"].append(asr.dwer_from_transcripts(ref_text, deg_text))
            pairs[name]["wer"].append((row["transcript"], deg_text))
            pairs[name]["dwer"].append((ref_text, deg_text))
    elapsed = time.time() - t0

    results = {
        "clips": len(rows),
        "audio_seconds": round(seconds, 1),
        "elapsed_seconds": round(elapsed, 1),
        "machine": machine(),
        "skipped": skipped,
        "tokenizers": {},
    }
    for name, per_metric in scores.items():
        entry: dict[str, object] = {}
        if name in tokenizers:
            stats = token_metrics.token_stats(all_tokens[name])
            entry.update(
                bitrate=tokenizers[name].bitrate,
                entropy_bitrate=round(stats.entropy_bitrate, 1),
                token_rate=tokenizers[name].token_rate,
                sample_rate=tokenizers[name].sample_rate,
            )
        else:
            entry.update(bitrate=256000.0, entropy_bitrate=None, token_rate=None, sample_rate=16000)
        for metric, values in per_metric.items():
            if values:
                m, ci = mean_ci(values)
                entry[metric] = {"mean": round(m, 4), "ci95": round(ci, 4), "n": len(values)}
        for metric, pair_list in pairs[name].items():
            entry[f"{metric}_pooled"] = round(asr.pooled_wer(pair_list), 4)
        results["tokenizers"][name] = entry  # type: ignore[index]

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "baselines_librispeech.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (args.out / "baselines_librispeech.md").write_text(table)
    print(table)


def render(results: dict) -> str:
    lines = [
        f"# Training-free baselines, LibriSpeech test split ({results['clips']} clips, {results['audio_seconds']} s)",
        "",
        "Command: `python benchmarks/baselines_librispeech.py`"
        f" ({results['elapsed_seconds']} s on {results['machine']}).",
        "Decoded audio is resampled to 16 kHz and compared with the original; 8 kHz tokenizers lose everything above"
        " 4 kHz, which WB-PESQ penalises. WER: Whisper tiny.en vs the LibriSpeech transcript; dWER: vs Whisper's"
        " transcript of the original; both pooled over the corpus (all errors / all reference words; per-clip means"
        " with"
        " intervals are in the JSON). Other columns: mean ± 95% interval over clips.",
        "",
        "| tokenizer | rate Hz | bit/s nominal | bit/s entropy | tokens/s | STOI | PESQ-WB | PESQ-NB | WER | dWER |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(entry: dict, key: str) -> str:
        v = entry.get(key)
        if not v:
            return "n/a"
        return f"{v['mean']:.3f} ± {v['ci95']:.3f}" + (f" (n={v['n']})" if v["n"] != results["clips"] else "")

    for name, e in results["tokenizers"].items():
        ent = "-" if e["entropy_bitrate"] is None else f"{e['entropy_bitrate']:.0f}"
        tr = "-" if e["token_rate"] is None else f"{e['token_rate']:g}"
        lines.append(
            f"| {name} | {e['sample_rate']} | {e['bitrate']:.0f} | {ent} | {tr} | {cell(e, 'stoi')} | "
            f"{cell(e, 'pesq_wb')} | {cell(e, 'pesq_nb')} | {e['wer_pooled']:.3f} | {e['dwer_pooled']:.3f} |"
        )
    if results["skipped"]:
        lines += ["", f"Skipped (unavailable here): {', '.join(results['skipped'])}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
