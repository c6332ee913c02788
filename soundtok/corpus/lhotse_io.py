"""Manifests to and from lhotse ``RecordingSet`` + ``SupervisionSet`` (needs ``pip install 'soundtok[data]'``).

One soundtok item is one whole file: a lhotse recording with one supervision spanning it. Labels travel in
the supervision's ``custom["labels"]``, and the usual ones also fill lhotse's own fields (``transcript`` ->
``text``, ``speaker``, ``gender``, ``language``); ``split`` and ``dataset`` go in ``custom`` too.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import soundfile as sf

from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.errors import CorpusError

if TYPE_CHECKING:
    from lhotse import RecordingSet, SupervisionSet

#: soundtok label -> lhotse SupervisionSegment field
LHOTSE_FIELDS = {"transcript": "text", "speaker": "speaker", "gender": "gender", "language": "language"}


def _lhotse() -> Any:
    try:
        import lhotse
    except ImportError:
        raise CorpusError("lhotse is not installed; install it with: pip install 'soundtok[data]'") from None
    return lhotse


def to_lhotse(manifest: Manifest) -> tuple[RecordingSet, SupervisionSet]:
    """One recording (read with soundfile) and one whole-file supervision per item, ids kept."""
    lhotse = _lhotse()
    from lhotse.audio import AudioSource

    recordings, supervisions = [], []
    for item in manifest:
        try:
            info = sf.info(str(item.path))
        except Exception as exc:  # soundfile raises several types, none of them ours
            raise CorpusError(f"item {item.id!r}: cannot read {item.path} ({type(exc).__name__}: {exc})") from None
        channels = list(range(info.channels))
        recording = lhotse.Recording(
            id=item.id,
            sources=[AudioSource(type="file", channels=channels, source=str(item.path))],
            sampling_rate=int(info.samplerate),
            num_samples=int(info.frames),
            duration=info.frames / info.samplerate,
        )
        extra = {field: item.labels[label] for label, field in LHOTSE_FIELDS.items() if label in item.labels}
        supervisions.append(
            lhotse.SupervisionSegment(
                id=item.id,
                recording_id=item.id,
                start=0.0,
                duration=recording.duration,
                channel=channels[0] if len(channels) == 1 else channels,
                custom={"labels": dict(item.labels), "split": item.split, "dataset": item.dataset},
                **extra,
            )
        )
        recordings.append(recording)
    return lhotse.RecordingSet.from_recordings(recordings), lhotse.SupervisionSet.from_segments(supervisions)


def from_lhotse(recordings: RecordingSet, supervisions: SupervisionSet | None = None) -> Manifest:
    """A manifest with one item per recording; labels from its (single, whole-file) supervision.

    Recordings must be single local files; a recording with several supervisions (segments) is refused,
    since a soundtok item is a whole file: cut the segments to files first (lhotse ``Cut.save_audio``).
    """
    _lhotse()
    by_recording: dict[str, list[Any]] = defaultdict(list)
    for sup in supervisions or []:
        by_recording[sup.recording_id].append(sup)
    unknown = sorted(set(by_recording) - {r.id for r in recordings})
    if unknown:
        raise CorpusError(f"supervisions refer to recordings that are not in the RecordingSet: {unknown[:5]}")
    items = []
    for rec in recordings:
        if len(rec.sources) != 1 or rec.sources[0].type != "file":
            raise CorpusError(
                f"recording {rec.id!r}: soundtok items are single local files, got sources "
                f"{[s.type for s in rec.sources]}; save the audio to a file first"
            )
        sups = by_recording.get(rec.id, [])
        if len(sups) > 1:
            raise CorpusError(
                f"recording {rec.id!r} has {len(sups)} supervisions; a soundtok item is a whole file with one set of "
                "labels: cut the segments to files first (e.g. cuts.trim_to_supervisions() then save_audio)"
            )
        labels: dict[str, str] = {}
        split = dataset = ""
        if sups:
            sup = sups[0]
            custom = dict(sup.custom or {})
            labels.update({str(k): str(v) for k, v in (custom.pop("labels", None) or {}).items()})
            split, dataset = str(custom.pop("split", "")), str(custom.pop("dataset", ""))
            for key, value in custom.items():
                if isinstance(value, str | int | float | bool):
                    labels.setdefault(str(key), str(value))
            for label, field in LHOTSE_FIELDS.items():
                value = getattr(sup, field, None)
                if value is not None:
                    labels.setdefault(label, str(value))
        items.append(AudioItem(rec.id, rec.sources[0].source, rec.duration, labels, split, dataset))
    return Manifest(items)
