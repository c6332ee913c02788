"""The clips a benchmark runs on: the bundled fixtures (``quick``) or the shared corpus's test splits.

Every clip is mono float32 at 16 kHz with an id, a domain (``speech``, ``events``, ``music``) and, for speech with
a known transcript, its text. A :class:`ClipSet`'s ``hash`` covers the ids and the exact samples, so cached
results are reused only for the same audio.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from soundtok.errors import SoundtokError

RATE = 16000
#: clips are cut to a whole number of this many samples (lcm of the codec hop 320 and the mel hop 256)
FRAME = math.lcm(320, 256)
#: corpus datasets per domain
DOMAINS = {"speech": ("librispeech", "ravdess"), "events": ("esc50",), "music": ("instruments",)}


@dataclass(frozen=True)
class Clip:
    id: str
    domain: str
    wav: torch.Tensor  # [T] float32 at RATE
    text: str | None = None
    source: str = ""  # where it came from (dataset/path), for the report

    @property
    def seconds(self) -> float:
        return self.wav.shape[-1] / RATE


@dataclass(frozen=True)
class ClipSet:
    name: str
    clips: tuple[Clip, ...]
    description: str

    @property
    def hash(self) -> str:
        digest = hashlib.sha256()
        for clip in self.clips:
            digest.update(f"{clip.id}\0{clip.domain}\0{clip.wav.shape[-1]}\0".encode())
            digest.update(clip.wav.contiguous().numpy().astype("<f4").tobytes())
        return digest.hexdigest()[:16]

    @property
    def domains(self) -> list[str]:
        return list(dict.fromkeys(c.domain for c in self.clips))

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.clips)


def _cut(wav: torch.Tensor, max_seconds: float) -> torch.Tensor:
    n = min(wav.shape[-1], int(max_seconds * RATE)) // FRAME * FRAME
    return wav[..., : max(n, min(wav.shape[-1], FRAME))].clone()


def quick_clips() -> ClipSet:
    """The three bundled clips (LibriSpeech sentence, FSDD digit, ESC-50 sneeze): no ``../shared`` needed."""
    from soundtok.fixtures import FIXTURES, fixture_path, load_fixture

    clips = []
    for name, domain in (("speech", "speech"), ("digit", "speech"), ("sneeze", "events")):
        wav, _ = load_fixture(name, RATE)
        text = FIXTURES[name][1].get("transcript") or FIXTURES[name][1].get("digit")
        if name == "digit" and text is not None:
            text = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][int(text)]
        clips.append(Clip(name, domain, _cut(wav[0], 10.0), text, f"bundled fixture {fixture_path(name).name}"))
    return ClipSet("quick", tuple(clips), "the bundled fixtures (soundtok/testing/data, see ATTRIBUTION.md)")


def corpus_clips(root: Path, per_dataset: int = 12, max_seconds: float = 5.0, split: str = "test") -> ClipSet:
    """``per_dataset`` clips of each corpus dataset's ``split`` (sorted by id, the centre of each of ``per_dataset``
    equal parts), at most ``max_seconds`` each, cut to a whole number of :data:`FRAME` samples: the clips of
    benchmarks/resynthesis.py."""
    from soundtok.audio.io import load_audio
    from soundtok.corpus.loaders import load_shared_corpus

    if not Path(root).is_dir():
        raise SoundtokError(f"corpus folder {root} does not exist; pass --corpus PATH or use --quick")
    manifest = load_shared_corpus(root, [d for names in DOMAINS.values() for d in names])
    clips = []
    for domain, datasets in DOMAINS.items():
        for dataset in datasets:
            items = sorted((i for i in manifest if i.dataset == dataset and i.split == split), key=lambda i: i.id)
            count = min(per_dataset, len(items))
            for k in range(count):
                item = items[(2 * k + 1) * len(items) // (2 * count)]  # centre of the k-th of `count` equal parts
                wav, _ = load_audio(item.path, sample_rate=RATE, channels=1)
                if wav.shape[-1] < FRAME:
                    continue
                text = item.labels.get("transcript") if domain == "speech" else None
                clips.append(Clip(item.id, domain, _cut(wav[0], max_seconds), text or None, str(item.path)))
    if not clips:
        raise SoundtokError(f"no {split} clips found under {root}")
    description = f"corpus {split} splits: {per_dataset} clips per dataset, at most {max_seconds:g} s"
    return ClipSet(f"corpus-{split}-{per_dataset}x{max_seconds:g}s", tuple(clips), description)
