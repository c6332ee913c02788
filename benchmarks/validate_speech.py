"""Validation of speech tokenizers on audio from outside the corpus: candidates against a reference, paired per clip.

The corpus test split is for reporting; choosing between checkpoints (e.g. what a GPU pack run brought back) needs
audio neither the candidates nor the shipped models were trained on. The default set is Debian's
``pocketsphinx-testdata`` (``apt-get install pocketsphinx-testdata``): 5 LibriVox utterances (one reader) and 5
spoken card names (another speaker), 16 kHz, with transcripts. Each clip goes through every tokenizer (and codec
setting); per clip: mel distance, STOI, and the WER of Whisper tiny.en against the transcript (pooled over clips).
Each candidate is compared with the reference on the same clips: mean difference and a 95% t interval.

    python benchmarks/validate_speech.py --reference codec-16k --candidates runs/gpu-pack-2/codec-mel/export \\
        --codebooks 6,12 --out benchmarks/results/gpu_pack_validation
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import soundtok
from soundtok.audio.io import load_audio
from soundtok.corpus.loaders import load_pocketsphinx_testdata
from soundtok.errors import CorpusError
from soundtok.eval import mean_ci, mel_distance, normalize_text, stoi, transcribe, wer


def pocketsphinx_clips() -> list[tuple[str, torch.Tensor, str]]:
    """(id, [1, T] at 16 kHz, transcript) of the pocketsphinx test utterances."""
    try:
        items = load_pocketsphinx_testdata()
    except CorpusError as exc:
        raise SystemExit(f"no validation audio: {exc}") from None
    return [(i.id, load_audio(i.path, sample_rate=16000, channels=1)[0], i.labels["transcript"]) for i in items]


def run(systems: dict[str, tuple[str, int | None]], clips: list[tuple[str, torch.Tensor, str]]) -> dict:
    """Per system and clip: mel distance, STOI, transcript; pooled WER."""
    results: dict[str, dict] = {}
    for label, (source, codebooks) in systems.items():
        tok = soundtok.load(source)
        if codebooks is not None:
            tok.set_num_codebooks(codebooks)
        rows = []
        for key, wav, text in clips:
            out = tok.decode(tok.encode(wav[None], 16000))[0, :, : wav.shape[-1]]
            hyp = transcribe(out[0], 16000)
            rows.append(
                {"id": key, "mel_distance": mel_distance(wav[0], out[0], 16000), "stoi": stoi(wav[0], out[0], 16000),
                 "wer": wer(normalize_text(text), normalize_text(hyp)), "words": len(text.split()), "hyp": hyp}
            )  # fmt: skip
        pooled = sum(r["wer"] * r["words"] for r in rows) / sum(r["words"] for r in rows)
        results[label] = {
            "source": source,
            "codebooks": codebooks,
            "bitrate": tok.bitrate,
            "wer": pooled,
            "clips": rows,
        }
        print(f"{label}: WER {pooled:.3f}", flush=True)
    return results


def table(results: dict, reference: str) -> str:
    lines = [
        "| system | kbit/s | mel dist ↓ | STOI ↑ | WER ↓ (pooled) | Δ mel vs reference | Δ STOI vs reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in results.items():
        ref = results[reference_for(label, results, reference)]
        cells = []
        for metric in ("mel_distance", "stoi"):
            mean, half = mean_ci([c[metric] for c in r["clips"]])
            cells.append(f"{mean:.3f} ± {half:.3f}")
        deltas = []
        for metric in ("mel_distance", "stoi"):
            mean, half = mean_ci([c[metric] - d[metric] for c, d in zip(r["clips"], ref["clips"], strict=True)])
            deltas.append("—" if r is ref else f"{mean:+.3f} ± {half:.3f}")
        lines.append(
            f"| {label} | {r['bitrate'] / 1000:g} | {cells[0]} | {cells[1]} | {r['wer']:.3f} | "
            + " | ".join(deltas)
            + " |"
        )
    return "\n".join(lines)


def reference_for(label: str, results: dict, reference: str) -> str:
    """The reference row at the same codec setting (``@N`` suffix) as ``label``."""
    suffix = label[label.index("@") :] if "@" in label else ""
    return f"{reference}{suffix}" if f"{reference}{suffix}" in results else reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default="codec-16k")
    parser.add_argument("--candidates", default="", help="comma-separated checkpoint folders (label = parent/name)")
    parser.add_argument("--codebooks", default="", help="codec settings, e.g. 6,12 (default: the tokenizer's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/validate_speech"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    settings = [int(c) for c in args.codebooks.split(",") if c] or [None]
    systems: dict[str, tuple[str, int | None]] = {}
    for source in [args.reference, *filter(None, args.candidates.split(","))]:
        label = source if source == args.reference else "/".join(Path(source).parts[-3:-1])
        for n in settings:
            systems[label if n is None else f"{label}@{n}"] = (source, n)
    clips = pocketsphinx_clips()
    results = run(systems, clips)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "validate_speech.json").write_text(json.dumps(results, indent=1))
    text = f"{len(clips)} out-of-corpus clips (pocketsphinx-testdata), 95% t intervals over clips\n\n"
    text += table(results, args.reference) + "\n"
    (args.out / "validate_speech.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
