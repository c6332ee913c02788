"""Clips to listen to and a figure to look at: one held-out speech clip through the codec and its references.

The clip is a LibriSpeech test-split utterance (CC BY 4.0; speaker 5142, one of the corpus's six held-out test
speakers, never trained on), cut to ``--seconds``. It goes through the codec at 1, 3 and 12 codebooks (0.5, 1.5 and
6 kbit/s), Codec 2 3200 and Opus 6 kbit/s when they are installed; each result is written as 16 kHz FLAC beside a
figure of all their log-mel spectrograms, with the mel distance to the original in each title.

    python benchmarks/codec_examples.py    # writes benchmarks/results/codec_examples/
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import soundtok
from soundtok.audio.io import load_audio, resample, save_audio
from soundtok.audio.mel import log_mel
from soundtok.errors import SoundtokError
from soundtok.eval.opus import opus_transcode
from soundtok.eval.signal import mel_distance
from soundtok.registry import PRESETS, available
from soundtok.tokenizers.base import AudioTokenizer

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "corpus" / "librispeech" / "audio" / "5142" / "5142-33396-0042.flac"
RATE = 16000


def through_tokenizer(tok: AudioTokenizer, wav: torch.Tensor) -> torch.Tensor:
    out = tok.decode(tok.encode(wav[None, None], RATE))[0, 0]
    return resample(out, tok.sample_rate, RATE)[: wav.shape[-1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=CLIP)
    parser.add_argument("--codec", default="codec-16k")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "codec_examples")
    args = parser.parse_args()

    wav = load_audio(args.clip, sample_rate=RATE, channels=1)[0][0, : int(args.seconds * RATE)]
    systems: dict[str, torch.Tensor] = {"original": wav}
    label = Path(args.codec).name if Path(args.codec).is_dir() else args.codec  # a preset name or a folder's
    codec = soundtok.load(args.codec)  # loaded once; set_num_codebooks picks each bitrate
    for n in (1, 3, 12):
        codec.set_num_codebooks(n)
        systems[f"{label} {n * 0.5:g} kbps"] = through_tokenizer(codec, wav)
    if not available(PRESETS["codec2-3200"]):
        systems["codec2 3.2 kbps"] = through_tokenizer(soundtok.load("codec2-3200"), wav)
    try:
        systems["opus 6 kbps"] = opus_transcode(wav, RATE, 6000).wav
    except SoundtokError as exc:
        print(f"opus skipped: {exc}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    args.out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(systems), 1, figsize=(10, 2.0 * len(systems)), sharex=True)
    for ax, (name, audio) in zip(axes, systems.items(), strict=True):
        save_audio(args.out / f"{name.replace(' ', '_')}.flac", audio[None], RATE, force=True)
        title = name if name == "original" else f"{name}: mel distance {mel_distance(wav, audio, RATE):.3f}"
        ax.imshow(log_mel(audio[None])[0].numpy(), origin="lower", aspect="auto", vmin=-11.5, vmax=2.0)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel bin")
    axes[-1].set_xlabel("frame (16 ms)")
    fig.tight_layout()
    fig.savefig(args.out / "spectrograms.png", dpi=80)
    print(f"wrote {len(systems)} clips and spectrograms.png to {args.out}")


if __name__ == "__main__":
    main()
