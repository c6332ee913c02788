"""Training data for waveform models: random fixed-length crops of a manifest's audio.

Batches are a pure function of (seed, step, rank): a resumed run draws exactly the batches the killed run would
have drawn, and each process draws different ones. Crops are read straight from disk (soundfile seeks in FLAC),
items are picked in proportion to their duration, and items shorter than a crop are zero-padded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from soundtok.audio.io import load_audio, resample
from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.errors import AudioLoadingError


@dataclass(frozen=True)
class CropSampler:
    items: tuple[AudioItem, ...]
    sample_rate: int
    segment: int  # samples per crop

    @classmethod
    def from_manifest(cls, manifest: Manifest, sample_rate: int, seconds: float) -> CropSampler:
        items = tuple(sorted(manifest, key=lambda i: i.id))
        if not items:
            raise AudioLoadingError("the training manifest is empty; check the corpus folder, datasets and split")
        return cls(items, sample_rate, int(round(seconds * sample_rate)))

    def batch(self, batch_size: int, *, seed: int, step: int, rank: int = 0) -> torch.Tensor:
        """``[batch_size, 1, segment]`` crops, the same for the same (seed, step, rank)."""
        rng = random.Random(f"{seed}:{step}:{rank}")
        weights = [max(i.duration, 1e-3) for i in self.items]
        out = torch.zeros(batch_size, 1, self.segment)
        for b, item in enumerate(rng.choices(self.items, weights=weights, k=batch_size)):
            out[b, 0] = self._crop(item, rng)
        return out

    def _crop(self, item: AudioItem, rng: random.Random) -> torch.Tensor:
        info = sf.info(str(item.path))
        native = int(round(self.segment * info.samplerate / self.sample_rate))
        start = rng.randrange(max(info.frames - native, 0) + 1)
        data, sr = sf.read(str(item.path), start=start, frames=native, dtype="float32", always_2d=True)
        wav = torch.from_numpy(np.ascontiguousarray(data.T)).mean(dim=0)  # [T] mono
        if sr != self.sample_rate:
            wav = resample(wav, sr, self.sample_rate)
        wav = wav[: self.segment]
        return torch.nn.functional.pad(wav, (0, self.segment - wav.shape[-1]))


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
