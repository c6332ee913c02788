"""A feature store: the hidden states of a feature encoder for every item of a corpus, computed once.

k-means fitting, the layer study and the continuous-feature probes all read the same features many times; an
encoder pass over the corpus is the expensive part, so it is done once and kept on disk.

Layout::

    features/
      features.json        encoder settings, layers, frame rate, dim, and per item: id, split, dataset, offset,
                           frames (written last: a folder without it is incomplete and is recomputed)
      layer-<i>.npy        float16 [total frames, D]: all items' valid frames, one after another

Item ``k``'s layer-``i`` features are ``layer-<i>.npy[offset_k : offset_k + frames_k]`` (``[frames_k, D]``);
:meth:`FeatureStore.get` returns them, and the ``.npy`` files open memory-mapped, so a store larger than memory
reads fine. float16 halves the size (Whisper base, 7 layers, the 3.7 h corpus: 4.8 GB) and changes the features
by less than their own run-to-run float noise for k-means and probes.

>>> # store = extract_features(load_encoder("whisper-base", window_seconds=1.0), manifest, "runs/features")
>>> # store.get("fsdd/0_george_0", layer=6).shape   -> (15, 512)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from soundtok.audio.io import load_audio
from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.encoders.base import FeatureEncoder
from soundtok.errors import CheckpointError
from soundtok.fileio import atomic_write

log = logging.getLogger(__name__)

INDEX_FILE = "features.json"
FORMAT = "soundtok-feature-store"


@dataclass(frozen=True)
class StoredItem:
    id: str
    split: str
    dataset: str
    offset: int  # first row in every layer-<i>.npy
    frames: int


class FeatureStore:
    """Read side of a feature folder written by :func:`extract_features`."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        index = self.folder / INDEX_FILE
        if not index.is_file():
            raise CheckpointError(f"{self.folder}: no {INDEX_FILE}; it is not a (complete) feature store")
        meta = json.loads(index.read_text())
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{index}: not a soundtok feature store (format {meta.get('format')!r})")
        self.settings: dict[str, Any] = meta["settings"]
        self.layers: tuple[int, ...] = tuple(meta["layers"])
        self.frame_rate: float = meta["frame_rate"]
        self.dim: int = meta["dim"]
        self.items = {d["id"]: StoredItem(**d) for d in meta["items"]}
        self._arrays: dict[int, np.ndarray] = {}

    def array(self, layer: int) -> np.ndarray:
        """The whole ``[total frames, D]`` float16 array of ``layer`` (memory-mapped)."""
        if layer not in self.layers:
            raise KeyError(f"layer {layer} is not in this store; it holds layers {list(self.layers)}")
        if layer not in self._arrays:
            self._arrays[layer] = np.load(self.folder / f"layer-{layer}.npy", mmap_mode="r")
        return self._arrays[layer]

    def get(self, item_id: str, layer: int) -> np.ndarray:
        """``[frames, D]`` float16 features of one item."""
        try:
            item = self.items[item_id]
        except KeyError:
            raise KeyError(f"{item_id!r} is not in the feature store {self.folder}") from None
        return self.array(layer)[item.offset : item.offset + item.frames]

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Row indices ``[N]`` (int64) of every frame of the items ``ids``, in order: to select their features."""
        return np.concatenate([np.arange(it.offset, it.offset + it.frames) for it in (self.items[i] for i in ids)])


def extract_features(
    encoder: FeatureEncoder,
    manifest: Manifest | Sequence[AudioItem],
    folder: str | os.PathLike[str],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> FeatureStore:
    """Encode every item of ``manifest`` (16 kHz mono after loading) and write the store; an existing complete
    store made by the same encoder settings and layers is returned as it is."""
    folder = Path(folder)
    wanted = encoder.resolve_layers(layers)
    settings = dict(getattr(encoder, "settings", {"encoder": encoder.name}))
    if (folder / INDEX_FILE).is_file():
        store = FeatureStore(folder)
        if store.settings == settings and store.layers == wanted and set(store.items) >= {i.id for i in manifest}:
            return store
        raise CheckpointError(
            f"{folder} holds features of other settings ({store.settings}, layers {list(store.layers)}); "
            "choose another folder or delete it"
        )
    if folder.exists():
        shutil.rmtree(folder)  # an interrupted extraction: no index, start again
    folder.mkdir(parents=True)
    items = sorted(manifest, key=lambda it: it.duration)  # similar lengths together: little padding
    total = sum(int(encoder.num_frames(torch.tensor([_samples(it, encoder.sample_rate)]))) for it in items)
    arrays = {
        layer: np.lib.format.open_memmap(folder / f"layer-{layer}.npy", "w+", np.float16, (total, encoder.dim))
        for layer in wanted
    }
    index, offset = [], 0
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"features ({encoder.name})", unit="batch")
    for batch in batches:
        clips = [load_audio(it.path, sample_rate=encoder.sample_rate, channels=1)[0][0] for it in batch]
        lengths = torch.tensor([c.shape[0] for c in clips])
        wav = torch.zeros(len(clips), int(lengths.max()))
        for b, c in enumerate(clips):
            wav[b, : c.shape[0]] = c
        out = encoder(wav, lengths, layers=wanted)
        for b, it in enumerate(batch):
            frames = int(out.lengths[b])
            for layer, h in zip(wanted, out.hidden, strict=True):
                arrays[layer][offset : offset + frames] = h[b, :frames].cpu().numpy().astype(np.float16)
            index.append(StoredItem(it.id, it.split, it.dataset, offset, frames).__dict__)
            offset += frames
    if offset != total:
        raise RuntimeError(f"expected {total} frames from the durations, the encoder gave {offset}")
    for array in arrays.values():
        array.flush()
    meta = {
        "format": FORMAT,
        "settings": settings,
        "layers": list(wanted),
        "frame_rate": encoder.frame_rate,
        "dim": encoder.dim,
        "items": index,
    }
    atomic_write(folder / INDEX_FILE, lambda tmp: tmp.write_text(json.dumps(meta)))
    return FeatureStore(folder)


def _samples(item: AudioItem, sample_rate: int) -> int:
    """The item's length in samples at ``sample_rate``, read from the file header (exact, unlike the duration)."""
    import soundfile as sf

    info = sf.info(str(item.path))
    if info.samplerate == sample_rate:
        return int(info.frames)
    from soundtok.audio.io import resampled_length

    return resampled_length(int(info.frames), int(info.samplerate), sample_rate)
