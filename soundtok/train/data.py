"""Training data for waveform models: random fixed-length crops of a manifest's audio.

Batches are a pure function of (seed, step, rank): a resumed run draws exactly the batches the killed run would
have drawn, and each process draws different ones. Crops are read straight from disk (soundfile seeks in FLAC),
items are picked in proportion to their duration, and items shorter than a crop are zero-padded.
:func:`training_data` gives a recipe its sampler and held-out clips from the config's ``data`` section: a
manifest, the shared corpus, or a training shard (:mod:`soundtok.train.shard`, held in memory).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf
import torch

from soundtok.audio.io import load_audio, resample
from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.errors import AudioLoadingError
from soundtok.train.crops import crop_length, speed_perturbed
from soundtok.train.shard import Shard, ShardSampler

if TYPE_CHECKING:
    from soundtok.train.config import DataConfig


@dataclass(frozen=True)
class CropSampler:
    items: tuple[AudioItem, ...]
    sample_rate: int
    segment: int  # samples per crop
    speed_perturb: float = 0.0  # see :func:`speed_perturbed`

    @classmethod
    def from_manifest(
        cls, manifest: Manifest, sample_rate: int, seconds: float, speed_perturb: float = 0.0
    ) -> CropSampler:
        items = tuple(sorted(manifest, key=lambda i: i.id))
        if not items:
            raise AudioLoadingError("the training manifest is empty; check the corpus folder, datasets and split")
        return cls(items, sample_rate, int(round(seconds * sample_rate)), speed_perturb)

    def batch(self, batch_size: int, *, seed: int, step: int, rank: int = 0) -> torch.Tensor:
        """``[batch_size, 1, segment]`` crops, the same for the same (seed, step, rank)."""
        return self.batch_items(batch_size, seed=seed, step=step, rank=rank)[0]

    def batch_items(
        self, batch_size: int, *, seed: int, step: int, rank: int = 0
    ) -> tuple[torch.Tensor, list[AudioItem]]:
        """:meth:`batch` and the item each crop came from (for recipes that read labels)."""
        rng = random.Random(f"{seed}:{step}:{rank}")
        weights = [max(i.duration, 1e-3) for i in self.items]
        out = torch.zeros(batch_size, 1, self.segment)
        chosen = rng.choices(self.items, weights=weights, k=batch_size)
        for b, item in enumerate(chosen):
            length = crop_length(self.segment, self.speed_perturb, rng)
            out[b, 0] = speed_perturbed(self._crop(item, rng, length), self.segment)
        return out, chosen

    def _crop(self, item: AudioItem, rng: random.Random, length: int) -> torch.Tensor:
        info = sf.info(str(item.path))
        native = int(round(length * info.samplerate / self.sample_rate))
        start = rng.randrange(max(info.frames - native, 0) + 1)
        data, sr = sf.read(str(item.path), start=start, frames=native, dtype="float32", always_2d=True)
        wav = torch.from_numpy(np.ascontiguousarray(data.T)).mean(dim=0)  # [T] mono
        if sr != self.sample_rate:
            wav = resample(wav, sr, self.sample_rate)
        wav = wav[:length]
        return torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))


def eval_clips(manifest: Manifest, sample_rate: int, count: int, seconds: float) -> list[tuple[str, torch.Tensor]]:
    """The first ``count`` held-out items (by id, spread over datasets), each cut to at most ``seconds``."""
    by_dataset: dict[str, list[AudioItem]] = {}
    for item in sorted(manifest, key=lambda i: i.id):
        by_dataset.setdefault(item.dataset, []).append(item)
    picked: list[AudioItem] = []
    while len(picked) < count and any(by_dataset.values()):
        for items in by_dataset.values():
            if items and len(picked) < count:
                picked.append(items.pop(0))
    clips = []
    for item in picked:
        wav, _ = load_audio(item.path, sample_rate=sample_rate, channels=1)
        clips.append((item.id, wav[:, : int(seconds * sample_rate)]))
    return clips


def training_data(
    data: DataConfig, sample_rate: int
) -> tuple[CropSampler | ShardSampler, list[tuple[str, torch.Tensor]]]:
    """A recipe's training crops and held-out clips: from ``data.shard`` (its ``valid`` items held out), else
    from ``data.manifest`` or the shared corpus (``data.train_split`` / ``data.eval_split``)."""
    if data.shard is not None:
        shard = Shard.load(data.shard)
        return shard.sampler(sample_rate, data.segment_seconds, data.speed_perturb), shard.eval_clips(
            data.eval_items, data.eval_seconds
        )
    from soundtok.corpus.loaders import load_shared_corpus

    corpus = (
        Manifest.from_jsonl(data.manifest)
        if data.manifest is not None
        else load_shared_corpus(data.corpus, data.datasets)
    )
    train = corpus.filter(split=data.train_split)
    sampler = CropSampler.from_manifest(train, sample_rate, data.segment_seconds, data.speed_perturb)
    held_out = eval_clips(corpus.filter(split=data.eval_split), sample_rate, data.eval_items, data.eval_seconds)
    return sampler, held_out
