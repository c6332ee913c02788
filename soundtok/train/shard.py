"""A compact training shard: a corpus's training audio in two FLAC files, for machines the corpus does not reach.

A lent GPU machine gets the repository and a few tens of MiB beside it, not ``../shared``; the GPU pack
(``scripts/gpu_pack.py``) trains from a shard instead. A shard folder holds

* ``train.flac`` and ``valid.flac``: 16-bit mono FLAC at the shard's sample rate, every item of the split one
  after another;
* ``shard.json``: ``format``, ``sample_rate``, and per item ``id``, ``dataset``, ``split`` (``train`` or
  ``valid``), ``offset`` and ``frames`` (in samples, within its split's file), plus how it was built.

Both splits come from the corpus's *training* split: ``valid`` holds whole items kept out of ``train``, to score
a run without touching the corpus test split. Items are picked per dataset, in a seeded order that spreads them
over speakers (one label value after another), until the dataset's share of the size budget is filled.

:meth:`Shard.sampler` draws crops from the shard held in memory (:class:`ShardSampler`).
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from soundtok.audio.io import load_audio
from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.errors import AudioLoadingError
from soundtok.train.crops import crop_length, speed_perturbed

FORMAT = 1
SPLITS = ("train", "valid")
#: the label that spreads picks over sources, per dataset (first one present)
_SPREAD_LABELS = ("speaker", "actor", "category", "label")


def _spread_order(items: list[AudioItem], seed: int) -> list[AudioItem]:
    """``items`` shuffled, then interleaved by speaker (or class): the first picks cover every source."""
    rng = random.Random(seed)
    items = sorted(items, key=lambda i: i.id)
    rng.shuffle(items)
    label = next((k for k in _SPREAD_LABELS if items and k in items[0].labels), None)
    groups: dict[str, list[AudioItem]] = {}
    for item in items:
        groups.setdefault(item.labels.get(label, "") if label else "", []).append(item)
    order: list[AudioItem] = []
    queues = list(groups.values())
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop(0))
    return order


def _flac_bytes(pcm: np.ndarray, sample_rate: int) -> int:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(pcm, -1.0, 1.0), sample_rate, subtype="PCM_16", format="FLAC")
    return len(buffer.getvalue())


def build_shard(
    manifest: Manifest,
    out: str | Path,
    *,
    shares_mib: Mapping[str, float],
    valid_items: int = 2,
    sample_rate: int = 16000,
    max_item_seconds: float = 12.0,
    seed: int = 0,
) -> dict[str, object]:
    """Write a shard of ``manifest``'s ``train`` split to the folder ``out``; returns its ``shard.json``.

    ``shares_mib`` maps a dataset to the MiB of FLAC it may take; ``valid_items`` items per dataset go to
    ``valid``. Items longer than ``max_item_seconds`` are cut (a crop never needs more).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train = manifest.filter(split="train")
    audio: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    entries: list[dict[str, object]] = []
    offsets = dict.fromkeys(SPLITS, 0)
    for dataset, mib in shares_mib.items():
        items = _spread_order([i for i in train if i.dataset == dataset], seed)
        if not items:
            raise AudioLoadingError(f"no training items of dataset {dataset!r} in the manifest")
        used = 0  # bytes of this dataset's items as FLAC
        for n, item in enumerate(items):
            split = "valid" if n < valid_items else "train"
            wav, _ = load_audio(item.path, sample_rate=sample_rate, channels=1)
            pcm = wav[0, : int(max_item_seconds * sample_rate)].numpy()
            if split == "train":
                used += _flac_bytes(pcm, sample_rate)
                if used > mib * 2**20:
                    break
            audio[split].append(pcm)
            entries.append(
                {"id": item.id, "dataset": dataset, "split": split, "offset": offsets[split], "frames": len(pcm)}
            )
            offsets[split] += len(pcm)
    for split in SPLITS:
        data = np.concatenate(audio[split]) if audio[split] else np.zeros(0, np.float32)
        sf.write(out / f"{split}.flac", np.clip(data, -1.0, 1.0), sample_rate, subtype="PCM_16", format="FLAC")
    index: dict[str, object] = {
        "format": FORMAT,
        "sample_rate": sample_rate,
        "seed": seed,
        "shares_mib": dict(shares_mib),
        "seconds": {s: offsets[s] / sample_rate for s in SPLITS},
        "bytes": {s: (out / f"{s}.flac").stat().st_size for s in SPLITS},
        "items": entries,
    }
    (out / "shard.json").write_text(json.dumps(index, indent=1))
    return index


@dataclass(frozen=True)
class ShardSampler:
    """Random crops of a training shard's audio held in memory (:class:`Shard`), items picked in
    proportion to their duration."""

    audio: torch.Tensor  # [T]
    items: tuple[tuple[str, str, int, int], ...]
    segment: int
    speed_perturb: float = 0.0  # see :func:`speed_perturbed`

    def batch(self, batch_size: int, *, seed: int, step: int, rank: int = 0) -> torch.Tensor:
        """``[batch_size, 1, segment]`` crops, the same for the same (seed, step, rank)."""
        rng = random.Random(f"{seed}:{step}:{rank}")
        out = torch.zeros(batch_size, 1, self.segment)
        weights = [max(frames, 1) for *_, frames in self.items]
        for b, (_, _, offset, frames) in enumerate(rng.choices(self.items, weights=weights, k=batch_size)):
            length = crop_length(self.segment, self.speed_perturb, rng)
            start = rng.randrange(max(frames - length, 0) + 1)
            crop = self.audio[offset + start : offset + min(frames, start + length)]
            crop = torch.nn.functional.pad(crop, (0, length - crop.shape[0]))
            out[b, 0] = speed_perturbed(crop, self.segment)
        return out


@dataclass(frozen=True)
class Shard:
    """A shard in memory: per split, one float32 waveform and its items' ``(id, dataset, offset, frames)``."""

    sample_rate: int
    audio: Mapping[str, torch.Tensor]  # split -> [T]
    items: Mapping[str, tuple[tuple[str, str, int, int], ...]]

    @classmethod
    def load(cls, folder: str | Path) -> Shard:
        folder = Path(folder)
        try:
            index = json.loads((folder / "shard.json").read_text())
        except (OSError, ValueError) as exc:
            raise AudioLoadingError(
                f"{folder}: not a training shard ({exc}); build one with scripts/gpu_pack.py build"
            ) from None
        if index.get("format") != FORMAT:
            raise AudioLoadingError(f"{folder}: shard format {index.get('format')!r}, this soundtok reads {FORMAT}")
        audio, items = {}, {}
        for split in SPLITS:
            rows = [e for e in index["items"] if e["split"] == split]
            items[split] = tuple((e["id"], e["dataset"], int(e["offset"]), int(e["frames"])) for e in rows)
            data, sr = np.zeros(0, np.float32), index["sample_rate"]
            if rows:  # (libsndfile cannot read back a FLAC file of no samples)
                data, sr = sf.read(str(folder / f"{split}.flac"), dtype="float32")
            if sr != index["sample_rate"]:
                raise AudioLoadingError(f"{folder}/{split}.flac: {sr} Hz, shard.json says {index['sample_rate']}")
            audio[split] = torch.from_numpy(data)
            if any(o + f > len(data) for _, _, o, f in items[split]):
                raise AudioLoadingError(f"{folder}/{split}.flac is shorter than its items in shard.json")
        return cls(int(index["sample_rate"]), audio, items)

    def sampler(self, sample_rate: int, seconds: float, speed_perturb: float = 0.0) -> ShardSampler:
        if sample_rate != self.sample_rate:
            raise AudioLoadingError(f"the shard is at {self.sample_rate} Hz, the model at {sample_rate} Hz")
        if not self.items["train"]:
            raise AudioLoadingError("the shard's train split is empty")
        segment = int(round(seconds * sample_rate))
        return ShardSampler(self.audio["train"], self.items["train"], segment, speed_perturb)

    def eval_clips(self, count: int, seconds: float) -> list[tuple[str, torch.Tensor]]:
        """The first ``count`` validation items, each cut to at most ``seconds``, as ``(id, [1, T])``."""
        clips = []
        for item_id, _, offset, frames in self.items["valid"][:count]:
            length = min(frames, int(seconds * self.sample_rate))
            clips.append((item_id, self.audio["valid"][offset : offset + length][None].clone()))
        return clips
