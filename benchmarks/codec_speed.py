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
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, statistics, sys, time, torch, yaml
import soundtok
from soundtok.audio.io import resample
from soundtok.testing import load_fixture
name, seconds, threads, repeats = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
clip, sr = load_fixture("speech")
weights = "random"

def audio(rate):
    x = clip if rate == sr else resample(clip, sr, rate)
    n = int(seconds * rate)
    return x.repeat(1, n // x.shape[-1] + 1)[:, :n][None]  # [1, 1, T]

if name == "soundtok codec-16k":
    from soundtok.registry import CHECKPOINTS
    from soundtok.tokenizers.codec import CodecConfig, CodecTokenizer
    weights = "trained" if (CHECKPOINTS / "codec-16k" / "config.json").is_file() else "random"
    if weights == "trained":
        model = soundtok.load("codec-16k")
    else:
        model = CodecTokenizer(CodecConfig.from_dict(yaml.safe_load(open(sys.argv[5]))["model"])).eval()
    model.set_num_codebooks(4)  # 4 x 10 bit x 50 Hz = 2 kbit/s
    wav = audio(16000)
    enc = lambda: model.encode(wav, 16000)
    tokens = enc()
    dec = lambda: model.decode(tokens)
    params = sum(p.numel() for p in model.parameters())
    bitrate = model.bitrate
elif name in ("soundtok vocoder-16k", "Griffin-Lim (32 iterations)"):
    from soundtok.registry import CHECKPOINTS
    from soundtok.audio.mel import log_mel
    from soundtok.vocoder import GriffinLim, Vocoder, VocoderConfig, load_vocoder
    weights = "trained" if (CHECKPOINTS / "vocoder-16k" / "config.json").is_file() else "random"
    if name.startswith("Griffin"):
        model, weights = GriffinLim(), "none"
    elif weights == "trained":
        model = load_vocoder("vocoder-16k")
    else:
        model = Vocoder(VocoderConfig.from_dict(yaml.safe_load(open(sys.argv[6]))["model"])).eval()
    wav = audio(16000)[0]  # [1, T]
    enc = lambda: log_mel(wav, model.mel_config)
    mel = enc()
    dec = lambda: model.synthesize(mel)
    params = sum(p.numel() for p in model.parameters())
    bitrate = None
elif name == "EnCodec (transformers, 24 kHz)":
    from transformers import EncodecConfig, EncodecModel
    model = EncodecModel(EncodecConfig()).eval()
    wav = audio(24000)
    enc = lambda: model.encode(wav, bandwidth=1.5)
    out = enc()
    dec = lambda: model.decode(out.audio_codes, out.audio_scales)
    params = sum(p.numel() for p in model.parameters())
    bitrate = 1500.0
elif name == "DAC (transformers, 16 kHz)":
    from transformers import DacConfig, DacModel
    model = DacModel(DacConfig(sampling_rate=16000)).eval()
    wav = audio(16000)
    enc = lambda: model.encode(wav)
    out = enc()
    dec = lambda: model.decode(audio_codes=out.audio_codes)
    params = sum(p.numel() for p in model.parameters())
    bitrate = model.config.frame_rate * model.config.n_codebooks * 10 if hasattr(model.config, "frame_rate") else None
else:
    raise SystemExit(f"unknown model {name}")

def timed(fn):
    with torch.inference_mode():
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return statistics.median(times)

e, d = timed(enc), timed(dec)
print(json.dumps({"name": name, "weights": weights, "params": params, "bitrate": bitrate, "encode_s": e, "decode_s": d,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

MODELS = [
    "soundtok codec-16k",
    "EnCodec (transformers, 24 kHz)",
    "DAC (transformers, 16 kHz)",
    "soundtok vocoder-16k",
    "Griffin-Lim (32 iterations)",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "codec-16k.yaml")
    parser.add_argument("--vocoder-config", type=Path, default=ROOT / "configs" / "vocoder-16k.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    rows = []
    for name in MODELS:
        argv = [name, *map(str, (args.seconds, args.threads, args.repeats, args.config, args.vocoder_config))]
        done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{name} failed")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
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
