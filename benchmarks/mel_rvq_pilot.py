"""Pilot for issue 24's mel-domain route: how much speech survives a residual k-means quantiser on log-mel frames,
decoded by Griffin-Lim, with no network at all?

Griffin-Lim from the true log-mel keeps speech intelligible (STOI 0.94 on the corpus), far above every learned
decoder soundtok has. This measures what is left after quantising the mel: per-channel normalised 80-bin log-mel
frames (62.5 frames/s), residual k-means with ``--levels`` codebooks of 1024 fitted level by level on the corpus
train split's speech (LibriSpeech + RAVDESS), so n levels cost n x 625 bit/s. Each level count is decoded with
Griffin-Lim (32 iterations) and scored beside Codec 2 (700C, 3200), codec-16k at 3 kbit/s and Griffin-Lim from the
unquantised mel, in the same run, on two sets: out-of-corpus speech (pocketsphinx-testdata: WER against its
transcripts; the set to choose on) and the corpus test split's speech (dWER against Whisper on the original).

    python benchmarks/mel_rvq_pilot.py --out benchmarks/results/mel_rvq_pilot
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

import soundtok
from soundtok.audio.io import load_audio, resample
from soundtok.audio.mel import MelConfig, log_mel
from soundtok.corpus.loaders import load_pocketsphinx_testdata, load_shared_corpus
from soundtok.eval import mean_ci, mel_distance, normalize_text, stoi, transcribe, wer
from soundtok.nn.kmeans import fit_kmeans, nearest
from soundtok.vocoder import GriffinLim

MEL = MelConfig()
BITS_PER_LEVEL = 10 * MEL.sample_rate / MEL.hop_length  # 1024 entries at 62.5 frames/s: 625 bit/s


def training_frames(max_items: int, seed: int) -> torch.Tensor:
    """``[N, 80]`` log-mel frames of up to ``max_items`` train-split speech items (seeded pick)."""
    corpus = load_shared_corpus(None, ["librispeech", "ravdess"]).filter(split="train")
    items = sorted(corpus, key=lambda i: i.id)
    random.Random(seed).shuffle(items)
    frames = []
    for item in items[:max_items]:
        wav, _ = load_audio(item.path, sample_rate=MEL.sample_rate, channels=1)
        frames.append(log_mel(wav[0], MEL).T)  # [F, 80]
    return torch.cat(frames)


class MelRVQ:
    """Residual k-means over normalised log-mel frames."""

    def __init__(self, frames: torch.Tensor, levels: int, clusters: int, seed: int) -> None:
        self.mean, self.std = frames.mean(0), frames.std(0).clamp(min=1e-3)
        residual = (frames - self.mean) / self.std
        self.codebooks = []
        for level in range(levels):
            order = residual[torch.randperm(len(residual), generator=torch.Generator().manual_seed(seed + level))]
            result = fit_kmeans(lambda o=order: iter(o.split(8192)), num_clusters=clusters, passes=4, seed=seed)
            self.codebooks.append(result.centroids)
            index, dist = nearest(residual, result.centroids)
            residual = residual - result.centroids[index]
            print(f"level {level + 1}: residual mean square {float(residual.pow(2).mean()):.4f}", flush=True)

    def roundtrip(self, mel: torch.Tensor, levels: int) -> torch.Tensor:
        """``mel [80, F]`` quantised with the first ``levels`` codebooks and back."""
        x = ((mel.T - self.mean) / self.std).float()
        out = torch.zeros_like(x)
        for codebook in self.codebooks[:levels]:
            index, _ = nearest(x - out, codebook)
            out = out + codebook[index]
        return (out * self.std + self.mean).T


def pocketsphinx_clips() -> list[tuple[str, torch.Tensor, str | None]]:
    """The out-of-corpus set of benchmarks/validate_speech.py, with its transcripts."""
    items = load_pocketsphinx_testdata()
    return [(i.id, load_audio(i.path, sample_rate=16000, channels=1)[0], i.labels["transcript"]) for i in items]


def corpus_test_speech(per_dataset: int, max_seconds: float) -> list[tuple[str, torch.Tensor, str | None]]:
    """Evenly spaced test-split clips of LibriSpeech and RAVDESS, as the resynthesis benchmark picks them."""
    clips: list[tuple[str, torch.Tensor, str | None]] = []
    for name in ("librispeech", "ravdess"):
        items = sorted(load_shared_corpus(None, [name]).filter(split="test"), key=lambda i: i.id)
        step = max(1, len(items) // per_dataset)
        for item in items[::step][:per_dataset]:
            wav, _ = load_audio(item.path, sample_rate=MEL.sample_rate, channels=1)
            clips.append((item.id, wav[:, : int(max_seconds * MEL.sample_rate)], None))
    return clips


def score(systems: dict, clips: list) -> dict:
    results = {}
    originals = {key: transcribe(wav[0], 16000) if text is None else text for key, wav, text in clips}
    for label, run in systems.items():
        rows = []
        for key, wav, _ in clips:
            out = run(wav)[..., : wav.shape[-1]].reshape(-1)
            out = torch.nn.functional.pad(out, (0, wav.shape[-1] - out.shape[-1]))
            ref_text = normalize_text(originals[key])
            hyp = normalize_text(transcribe(out, 16000))
            rows.append(
                {"id": key, "mel_distance": mel_distance(wav[0], out, 16000), "stoi": stoi(wav[0], out, 16000),
                 "wer": wer(ref_text, hyp) if ref_text else 0.0, "words": len(ref_text.split())}
            )  # fmt: skip
        words = sum(r["words"] for r in rows)
        pooled = sum(r["wer"] * r["words"] for r in rows) / max(words, 1)
        results[label] = {"wer": pooled, "clips": rows}
        print(f"  {label}: STOI {mean_ci([r['stoi'] for r in rows])[0]:.3f} WER {pooled:.3f}", flush=True)
    return results


def table(results: dict, bitrates: dict) -> str:
    lines = ["| system | kbit/s | mel dist ↓ | STOI ↑ | WER ↓ (pooled) |", "|---|---|---|---|---|"]
    for label, r in results.items():
        mel = "{:.3f} ± {:.3f}".format(*mean_ci([c["mel_distance"] for c in r["clips"]]))
        st = "{:.3f} ± {:.3f}".format(*mean_ci([c["stoi"] for c in r["clips"]]))
        lines.append(f"| {label} | {bitrates[label]} | {mel} | {st} | {r['wer']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", type=int, default=6)
    parser.add_argument("--clusters", type=int, default=1024)
    parser.add_argument("--train-items", type=int, default=600)
    parser.add_argument("--per-dataset", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mel_rvq_pilot"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()

    frames = training_frames(args.train_items, args.seed)
    print(f"{len(frames)} training frames", flush=True)
    rvq = MelRVQ(frames, args.levels, args.clusters, args.seed)
    griffin_lim = GriffinLim(MEL)
    codec = soundtok.load("codec-16k")
    codec.set_num_codebooks(6)
    systems = {"griffin-lim, true mel": lambda w: griffin_lim.synthesize(log_mel(w, MEL))}
    bitrates = {"griffin-lim, true mel": "-"}
    for n in range(1, args.levels + 1):
        label = f"mel RVQ x{n} + griffin-lim"
        systems[label] = lambda w, n=n: griffin_lim.synthesize(rvq.roundtrip(log_mel(w[0], MEL), n)[None])
        bitrates[label] = f"{n * BITS_PER_LEVEL / 1000:g}"
    for name in ("codec2-700c", "codec2-3200"):
        tok = soundtok.load(name)
        systems[name] = lambda w, t=tok: resample(t.decode(t.encode(w[None], 16000)), t.sample_rate, 16000)
        bitrates[name] = f"{tok.bitrate / 1000:g}"
    systems["codec-16k @ 6 codebooks"] = lambda w: codec.decode(codec.encode(w[None], 16000))
    bitrates["codec-16k @ 6 codebooks"] = f"{codec.bitrate / 1000:g}"

    report = {}
    text = [f"Fitted on {len(frames)} log-mel frames of {args.train_items} train-split speech items; "
            f"{args.clusters} entries per level; seed {args.seed}; 95% t intervals over clips.\n"]  # fmt: skip
    for name, clips in (
        ("out-of-corpus speech (pocketsphinx-testdata, WER vs transcripts)", pocketsphinx_clips()),
        ("corpus test speech (LibriSpeech + RAVDESS, dWER vs Whisper on the original)", corpus_test_speech(
            args.per_dataset, 5.0)),
    ):  # fmt: skip
        print(name, flush=True)
        report[name] = score(systems, clips)
        text += [f"## {name}, {len(clips)} clips\n", table(report[name], bitrates), ""]
    text.append(
        f"{time.time() - started:.0f} s on {args.threads} thread(s). Command: `python benchmarks/mel_rvq_pilot.py`"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mel_rvq_pilot.json").write_text(json.dumps(report, indent=1))
    (args.out / "mel_rvq_pilot.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
