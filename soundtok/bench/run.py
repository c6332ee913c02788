"""Run systems over a clip set, score every clip with :class:`soundtok.eval.Evaluator`, cache what was computed.

The unit of work and of caching is one (system fingerprint, task, clip-set hash, metric set): its per-clip
metrics, Whisper transcripts, timings, token statistics and decoded audio live in
``<cache>/bench/<system>/<key>/`` and ``result.json`` is written last, so an interrupted run leaves nothing that
is mistaken for a result. A rerun with nothing changed loads every entry and computes nothing; a new system (or
new weights, which change the fingerprint) computes only its own entry.
"""

from __future__ import annotations

import gc
import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import soundtok
from soundtok.bench.data import RATE, ClipSet
from soundtok.bench.memory import peak_memory_mib
from soundtok.bench.systems import System, load_system
from soundtok.cache import cache_root, sha256_bytes
from soundtok.errors import SoundtokError
from soundtok.eval.provenance import machine

log = logging.getLogger(__name__)

TASK = "resynthesis"
#: bump when what an entry holds or how it is measured changes (old entries are then recomputed); 2: peak memory
#: measured in a fresh process per system (was sampled in the bench's own process)
FORMAT_VERSION = 2
#: metrics per domain: quick (seconds per clip) and full (adds ViSQOL and DNSMOS, slower)
QUICK_METRICS = {
    "speech": ("mel_distance", "stoi", "pesq_wb", "speaker_sim", "dwer"),
    "events": ("mel_distance", "stft_distance"),
    "music": ("mel_distance", "stft_distance"),
}
FULL_METRICS = {
    "speech": ("mel_distance", "stoi", "pesq_wb", "visqol_speech", "dnsmos_ovrl", "speaker_sim", "dwer"),
    "events": ("mel_distance", "stft_distance", "visqol_audio"),
    "music": ("mel_distance", "stft_distance", "visqol_audio"),
}
#: the metric each domain's ranking and plots use
PRIMARY = {"speech": "stoi", "events": "mel_distance", "music": "mel_distance"}


def safe_name(text: str) -> str:
    """A file-name-safe form of a system name or clip id."""
    return re.sub(r"[^A-Za-z0-9._@-]+", "__", text)


@dataclass
class Entry:
    """One system's results on one clip set (what the cache holds)."""

    system: dict[str, Any]  # name, kind, fingerprint, bitrate, token_rate, parameters, description
    clips: dict[str, dict[str, Any]]  # clip id -> metrics, reasons, transcripts, encode_s, decode_s, seconds
    tokens: dict[str, Any]  # codebook usage, entropy, entropy bitrate (tokenizers only)
    cost: dict[str, Any]  # encode/decode real-time factor, peak memory, machine
    folder: Path
    cached: bool = False
    computed_at: str = ""

    def audio_path(self, clip_id: str) -> Path:
        return self.folder / "audio" / f"{safe_name(clip_id)}.flac"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "system": self.system,
            "clips": self.clips,
            "tokens": self.tokens,
            "cost": self.cost,
            "computed_at": self.computed_at,
        }


@dataclass
class BenchRun:
    clipset: ClipSet
    metrics: dict[str, tuple[str, ...]]
    entries: list[Entry] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # system -> why it could not run
    notes: list[str] = field(default_factory=list)

    @property
    def computed(self) -> int:
        return sum(not e.cached for e in self.entries)


def entry_key(fingerprint: str, clipset: ClipSet, metrics: dict[str, tuple[str, ...]]) -> str:
    spec = json.dumps([FORMAT_VERSION, TASK, fingerprint, clipset.hash, sorted(metrics.items())])
    return sha256_bytes(spec.encode())[:16]


def _load_entry(folder: Path) -> Entry | None:
    path = folder / "result.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT_VERSION:
            return None
        return Entry(data["system"], data["clips"], data["tokens"], data["cost"], folder, True, data["computed_at"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable cached result %s (%s); it will be recomputed", path, exc)
        return None


def _compute(
    system: System,
    clipset: ClipSet,
    metrics: dict[str, tuple[str, ...]],
    folder: Path,
    evaluators: dict[str, Any],
    progress: Callable[[str], None],
) -> Entry:
    from soundtok.audio.io import save_audio
    from soundtok.eval import Evaluator, token_stats

    clips: dict[str, dict[str, Any]] = {}
    all_tokens = []
    encode_s = decode_s = 0.0
    tmp = folder.with_name(folder.name + ".partial")
    system.run(clipset.clips[0].wav, RATE)  # warm-up (first-call allocations, kernels for this shape): not timed
    outputs = {}
    for clip in clipset.clips:
        progress(f"{system.name}: {clip.id}")
        out = system.run(clip.wav, RATE)
        outputs[clip.id] = out
        encode_s += out.encode_s
        decode_s += out.decode_s
        if out.tokens is not None:
            all_tokens.append(out.tokens)
    progress(f"{system.name}: peak memory")
    try:
        peak_mib = peak_memory_mib(system.name)  # system names are specs load_system reads
    except ChildProcessError as exc:
        log.warning("could not measure the peak memory of %s: %s", system.name, exc)
        peak_mib = None
    for clip in clipset.clips:
        out = outputs[clip.id]
        save_audio(tmp / "audio" / f"{safe_name(clip.id)}.flac", out.wav.clamp(-1, 1), RATE, force=True)
        if clip.id not in evaluators:
            evaluators[clip.id] = Evaluator(clip.wav, RATE, metrics[clip.domain], reference_text=None)
        report = evaluators[clip.id].score(out.wav, on_metric=lambda m, c=clip: progress(f"{system.name}: {c.id} {m}"))
        clips[clip.id] = {
            "domain": clip.domain,
            "seconds": clip.seconds,
            "metrics": {k: v.value for k, v in report.values.items()},
            "reasons": {k: v.unavailable_reason for k, v in report.values.items() if v.value is None},
            "transcripts": report.transcripts,
            "encode_s": out.encode_s,
            "decode_s": out.decode_s,
        }
    tokens: dict[str, Any] = {}
    if all_tokens:
        stats = token_stats(all_tokens)
        tokens = {
            "codebook_usage": list(stats.usage),
            "entropy_bits": list(stats.entropy_bits),
            "entropy_bitrate": stats.entropy_bitrate,
        }
    seconds = clipset.seconds
    cost = {
        "encode_rtf": encode_s / seconds,
        "decode_rtf": decode_s / seconds,
        "peak_mib": peak_mib,
        "machine": machine(),
    }
    entry = Entry(
        {
            k: getattr(system, k)
            for k in ("name", "kind", "fingerprint", "bitrate", "token_rate", "parameters", "description")
        },
        clips,
        tokens,
        cost,
        folder,
        False,
        time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    (tmp / "result.json").write_text(json.dumps(entry.to_json(), indent=1))
    if folder.exists():  # a stale entry without result.json
        shutil.rmtree(folder)
    tmp.rename(folder)
    return entry


def run_bench(
    systems: Iterable[str],
    clipset: ClipSet,
    *,
    full_metrics: bool = False,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> BenchRun:
    """Every system over every clip of ``clipset``; cached entries are loaded, the others computed and stored.

    A system that cannot be loaded or run (missing library, bad name) is recorded in ``BenchRun.failed`` with the
    reason, and the others still run.
    """
    metrics = {d: (FULL_METRICS if full_metrics else QUICK_METRICS)[d] for d in clipset.domains}
    root = (cache_dir or cache_root() / "bench").expanduser()
    run = BenchRun(clipset, metrics)
    evaluators: dict[str, Any] = {}  # clip id -> Evaluator, shared by the systems computed in this run
    for spec in systems:
        progress(spec)
        try:
            system = load_system(spec)
            folder = root / safe_name(system.name) / entry_key(system.fingerprint, clipset, metrics)
            entry = _load_entry(folder)
            if entry is None:
                entry = _compute(system, clipset, metrics, folder, evaluators, progress)
            del system
            gc.collect()  # one model in memory at a time
        except SoundtokError as exc:
            run.failed[spec] = str(exc)
            continue
        entry.system["name"] = spec
        run.entries.append(entry)
    run.notes.append(f"soundtok {soundtok.__version__}; cache {root}")
    return run
