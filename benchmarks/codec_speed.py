"""Encode/decode speed of the codec and the vocoder against EnCodec's and DAC's architectures, in one run.

soundtok's models are the shipped ``codec-16k`` and ``vocoder-16k`` checkpoints when installed (else random
weights at the ``configs/*.yaml`` size: speed does not depend on training); the vocoder's "encode" is the log-mel
and its "decode" the waveform synthesis, with Griffin-Lim (32 iterations) beside it. The references have random
weights: transformers' ``EncodecModel`` (its default 24 kHz config, 1.5 kbit/s = 2
codebooks, the closest to our 1.5 kbit/s setting) and ``DacModel`` (its 16 kHz config, 12 codebooks). The same
30 s of real speech (the bundled LibriSpeech clip, tiled, resampled for EnCodec) goes through each; every timing
is the median of ``--repeats`` runs after a warm-up, with ``torch.set_num_threads(--threads)``. Peak memory is the
peak RSS of a fresh process per model.

    pip install "soundtok[bench]"; python benchmarks/codec_speed.py   # writes benchmarks/results/codec_speed.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

import soundtok
from soundtok.audio.io import resample
from soundtok.eval.speed import in_fresh_process, median_seconds, peak_rss_mb
from soundtok.fixtures import load_fixture

ROOT = Path(__file__).resolve().parents[1]

MODELS = [
    "soundtok codec-16k",
    "EnCodec (transformers, 24 kHz)",
    "DAC (transformers, 16 kHz)",
    "soundtok vocoder-16k",
    "Griffin-Lim (32 iterations)",
]


def measure(
    name: str, seconds: float, threads: int, repeats: int, config: Path, vocoder_config: Path
) -> dict[str, Any]:
    """Encode and decode times of one model (``--child``: run in a fresh process, so the peak RSS is its own)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    clip, sr = load_fixture("speech")

    def audio(rate: int) -> torch.Tensor:
        x = clip if rate == sr else resample(clip, sr, rate)
        n = int(seconds * rate)
        return x.repeat(1, n // x.shape[-1] + 1)[:, :n][None]  # [1, 1, T]

    model: Any
    enc: Callable[[], Any]
    dec: Callable[[], Any]
    bitrate: float | None
    if name == "soundtok codec-16k":
        from soundtok.registry import CHECKPOINTS
        from soundtok.tokenizers.codec import CodecConfig, CodecTokenizer

        weights = "trained" if (CHECKPOINTS / "codec-16k" / "config.json").is_file() else "random"
        if weights == "trained":
            model = soundtok.load("codec-16k")
        else:
            model = CodecTokenizer(CodecConfig.from_dict(yaml.safe_load(config.read_text())["model"])).eval()
        model.set_num_codebooks(4)  # 4 x 10 bit x 50 Hz = 2 kbit/s
        wav = audio(16000)
        tokens = model.encode(wav, 16000)
        enc, dec = (lambda: model.encode(wav, 16000)), (lambda: model.decode(tokens))
        bitrate = model.bitrate
    elif name in ("soundtok vocoder-16k", "Griffin-Lim (32 iterations)"):
        from soundtok.audio.mel import log_mel
        from soundtok.registry import CHECKPOINTS
        from soundtok.vocoder import GriffinLim, Vocoder, VocoderConfig, load_vocoder

        weights = "trained" if (CHECKPOINTS / "vocoder-16k" / "config.json").is_file() else "random"
        if name.startswith("Griffin"):
            model, weights = GriffinLim(), "none"
        elif weights == "trained":
            model = load_vocoder("vocoder-16k")
        else:
            model = Vocoder(VocoderConfig.from_dict(yaml.safe_load(vocoder_config.read_text())["model"])).eval()
        wav = audio(16000)[0]  # [1, T]
        mel = log_mel(wav, model.mel_config)
        enc, dec = (lambda: log_mel(wav, model.mel_config)), (lambda: model.synthesize(mel))
        bitrate = None
    elif name == "EnCodec (transformers, 24 kHz)":
        from transformers import EncodecConfig, EncodecModel

        weights, model = "random", EncodecModel(EncodecConfig()).eval()
        wav = audio(24000)
        out = model.encode(wav, bandwidth=1.5)
        enc, dec = (lambda: model.encode(wav, bandwidth=1.5)), (lambda: model.decode(out.audio_codes, out.audio_scales))
        bitrate = 1500.0
    elif name == "DAC (transformers, 16 kHz)":
        from transformers import DacConfig, DacModel

        weights, model = "random", DacModel(DacConfig(sampling_rate=16000)).eval()
        wav = audio(16000)
        out = model.encode(wav)
        enc, dec = (lambda: model.encode(wav)), (lambda: model.decode(audio_codes=out.audio_codes))
        frame_rate = getattr(model.config, "frame_rate", None)
        bitrate = frame_rate * model.config.n_codebooks * 10 if frame_rate is not None else None
    else:
        raise SystemExit(f"unknown model {name}")
    params = sum(p.numel() for p in model.parameters())
    e, d = median_seconds(enc, repeats), median_seconds(dec, repeats)
    return {"name": name, "weights": weights, "params": params, "bitrate": bitrate, "encode_s": e, "decode_s": d,
            "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "codec-16k.yaml")
    parser.add_argument("--vocoder-config", type=Path, default=ROOT / "configs" / "vocoder-16k.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)  # a fresh process: one model
    args = parser.parse_args()
    settings = (args.seconds, args.threads, args.repeats, args.config, args.vocoder_config)
    if args.child:
        print(json.dumps(measure(args.child, *settings)))
        return
    rows = []
    for name in MODELS:
        flags = ["--seconds", "--threads", "--repeats", "--config", "--vocoder-config"]
        argv = [__file__, "--child", name, *(x for f, v in zip(flags, settings, strict=True) for x in (f, str(v)))]
        try:
            rows.append(in_fresh_process(argv))
        except ChildProcessError as exc:
            raise SystemExit(f"{name} failed: {exc}") from None
        print(rows[-1], flush=True)
    ours = rows[0]["encode_s"] + rows[0]["decode_s"]
    lines = [
        f"# Codec and vocoder speed: {args.seconds:g} s of speech, {args.threads} CPU threads",
        "",
        f"Command: `python benchmarks/codec_speed.py` (median of {args.repeats} runs after a warm-up; peak RSS of a"
        " fresh process per model). RTF = processing time / audio duration (lower is faster).",
        "",
        "| model | weights | params (M) | encode RTF | decode RTF | enc+dec RTF | enc+dec vs codec-16k | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        total = r["encode_s"] + r["decode_s"]
        lines.append(
            f"| {r['name']} | {r['weights']} | {r['params'] / 1e6:.1f} | {r['encode_s'] / args.seconds:.3f} | "
            f"{r['decode_s'] / args.seconds:.3f} | {total / args.seconds:.3f} | {total / ours:.2f}x | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    table = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "codec_speed.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
