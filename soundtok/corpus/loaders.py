"""Manifests from corpora on disk: the shared development corpus, and the standard layouts users download.

Every loader returns a :class:`~soundtok.corpus.manifest.Manifest` whose ids are ``<dataset>/<file stem>``
and whose labels are strings. Durations come from the CSV when it has them, else from ``soundfile.info``.

>>> from soundtok.corpus.loaders import parse_ravdess_name
>>> parse_ravdess_name("03-01-05-02-01-01-12.wav")["emotion"], parse_ravdess_name("03-01-05-02-01-01-12.wav")["gender"]
('angry', 'female')
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Collection, Iterable
from pathlib import Path

import soundfile as sf

from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.errors import CorpusError

log = logging.getLogger(__name__)

#: columns of the shared corpus CSVs that are item fields, not labels
CORE_COLUMNS = ("path", "dataset", "split", "duration_s")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")


def _duration(path: Path) -> float | None:
    """Seconds of audio in ``path``, or None (logged) if soundfile cannot read its header."""
    try:
        return float(sf.info(str(path)).duration)
    except Exception as exc:  # soundfile raises several types, none of them ours
        log.warning("%s: skipped, cannot read its audio header (%s: %s)", path, type(exc).__name__, exc)
        return None


def _existing_dir(root: str | os.PathLike[str], what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: no such folder; pass the folder where the {what} download was unpacked")
    return root


def _nonempty(items: list[AudioItem], root: Path, layout: str) -> Manifest:
    if not items:
        raise CorpusError(f"{root}: found no audio in the expected layout ({layout})")
    return Manifest(sorted(items, key=lambda i: i.id))


# ---------------------------------------------------------------------------------------------------------------
# the shared development corpus
def default_corpus_root() -> Path:
    """``$SOUNDTOK_CORPUS``, else ``../shared/corpus`` seen from the working directory or from this checkout."""
    env = os.environ.get("SOUNDTOK_CORPUS")
    if env:
        return Path(env)
    candidates = [Path.cwd().parent / "shared" / "corpus", Path(__file__).resolve().parents[3] / "shared" / "corpus"]
    for c in candidates:
        if (c / "index.csv").is_file():
            return c
    raise CorpusError(
        "cannot find the shared corpus (looked for index.csv in "
        + ", ".join(str(c) for c in candidates)
        + "); pass root= or set SOUNDTOK_CORPUS"
    )


def shared_corpus_datasets(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Dataset names (folder names) listed in the shared corpus ``index.csv``."""
    root = Path(root) if root is not None else default_corpus_root()
    index = root / "index.csv"
    if index.is_file():
        with index.open(newline="", encoding="utf-8") as f:
            return [row["name"] for row in csv.DictReader(f)]
    return sorted(p.name for p in root.iterdir() if (p / f"{p.name}.csv").is_file())


def load_shared_corpus(
    root: str | os.PathLike[str] | None = None,
    datasets: Iterable[str] | None = None,
    *,
    check_files: bool = False,
) -> Manifest:
    """The shared corpus (``<root>/<name>/<name>.csv``, ``path`` relative to ``root``) as one manifest.

    Ids are ``<name>/<file stem>`` (e.g. ``"librispeech/1089-134686-0009"``), ``dataset`` is the folder name,
    ``split`` comes from the CSV, and every other column becomes a string label (the CSV's own ``dataset``
    value is kept as the label ``source_dataset``). ``datasets`` picks folders (default: all in ``index.csv``).
    """
    root = Path(root) if root is not None else default_corpus_root()
    _existing_dir(root, "shared corpus")
    known = shared_corpus_datasets(root)
    names = list(known if datasets is None else datasets)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CorpusError(f"{root}: no dataset(s) {unknown}; available: {known}")
    items: list[AudioItem] = []
    for name in names:
        table = root / name / f"{name}.csv"
        try:
            with table.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except OSError as exc:
            raise CorpusError(f"{table}: cannot read ({exc.strerror or exc})") from None
        for n, row in enumerate(rows, start=2):
            missing = [c for c in ("path", "split", "duration_s") if not row.get(c)]
            if missing:
                raise CorpusError(f"{table}:{n}: empty or missing column(s) {missing}")
            path = root / row["path"]
            if check_files and not path.is_file():
                raise CorpusError(f"{table}:{n}: {path} does not exist")
            labels = {k: v for k, v in row.items() if k not in CORE_COLUMNS and k is not None}
            if row.get("dataset") and row["dataset"] != name:
                labels["source_dataset"] = row["dataset"]
            items.append(
                AudioItem(
                    f"{name}/{Path(row['path']).stem}", path, float(row["duration_s"]), labels, row["split"], name
                )
            )
    return Manifest(items)


# ---------------------------------------------------------------------------------------------------------------
# LibriSpeech: <root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac + <speaker>-<chapter>.trans.txt
def _librispeech_speakers(root: Path) -> dict[str, str]:
    """speaker id -> gender ("male"/"female") from SPEAKERS.TXT, when the download has it."""
    for folder in (root, root.parent):
        table = folder / "SPEAKERS.TXT"
        if table.is_file():
            genders = {}
            for line in table.read_text(encoding="utf-8", errors="replace").splitlines():
                fields = [f.strip() for f in line.split("|")]
                if line.startswith(";") or len(fields) < 2:
                    continue
                genders[fields[0]] = {"F": "female", "M": "male"}.get(fields[1], fields[1])
            return genders
    return {}


def load_librispeech(root: str | os.PathLike[str], subsets: Iterable[str] | None = None) -> Manifest:
    """LibriSpeech as unpacked from openslr (``LibriSpeech/`` with ``test-clean/``, ``train-clean-100/`` ...).

    ``split`` is the subset name; labels are ``speaker``, ``chapter``, ``transcript`` and, when
    ``SPEAKERS.TXT`` is present, ``gender``. ``subsets`` picks subset folders (default: all found).
    """
    root = _existing_dir(root, "LibriSpeech")
    if subsets is None:
        subset_dirs = sorted(p for p in root.iterdir() if p.is_dir() and any(p.glob("*/*/*.trans.txt")))
    else:
        subset_dirs = [root / s for s in subsets]
        for d in subset_dirs:
            if not d.is_dir():
                raise CorpusError(f"{d}: no such LibriSpeech subset folder under {root}")
    genders = _librispeech_speakers(root)
    items = []
    for subset in subset_dirs:
        for trans in sorted(subset.glob("*/*/*.trans.txt")):
            texts = {}
            for line in trans.read_text(encoding="utf-8").splitlines():
                utt, _, text = line.strip().partition(" ")
                if utt:
                    texts[utt] = text
            for audio in sorted(trans.parent.glob("*.flac")):
                speaker, chapter = trans.parent.parent.name, trans.parent.name
                if audio.stem not in texts:
                    log.warning("%s: no transcript line in %s; kept without a transcript", audio, trans.name)
                duration = _duration(audio)
                if duration is None:
                    continue
                labels = {"speaker": speaker, "chapter": chapter}
                if audio.stem in texts:
                    labels["transcript"] = texts[audio.stem]
                if speaker in genders:
                    labels["gender"] = genders[speaker]
                items.append(
                    AudioItem(f"librispeech/{audio.stem}", audio, duration, labels, subset.name, "librispeech")
                )
    return _nonempty(items, root, "<root>/<subset>/<speaker>/<chapter>/<utt>.flac + <speaker>-<chapter>.trans.txt")


# ---------------------------------------------------------------------------------------------------------------
# ESC-50: <root>/audio/*.wav + <root>/meta/esc50.csv
def load_esc50(root: str | os.PathLike[str], test_fold: int = 5) -> Manifest:
    """ESC-50 as cloned from github.com/karolpiczak/ESC-50: clips of ``fold == test_fold`` are ``test``.

    Labels: ``category``, ``target``, ``esc10``, ``fold``, ``src_file``, ``take``. Clips listed in the CSV but
    absent from ``audio/`` are skipped with a warning (partial downloads).
    """
    root = _existing_dir(root, "ESC-50")
    table = root / "meta" / "esc50.csv"
    if not table.is_file():
        raise CorpusError(
            f"{root}: no meta/esc50.csv; expected the ESC-50 layout <root>/audio/*.wav + <root>/meta/esc50.csv"
        )
    with table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"filename", "fold", "category"}
    if rows and not need <= set(rows[0]):
        raise CorpusError(f"{table}: expected columns {sorted(need)}, found {sorted(rows[0])}")
    folds = {int(r["fold"]) for r in rows}
    if rows and test_fold not in folds:
        raise CorpusError(f"{table}: test_fold={test_fold} is not one of its folds {sorted(folds)}")
    items, missing = [], 0
    for row in rows:
        audio = root / "audio" / row["filename"]
        if not audio.is_file():
            missing += 1
            continue
        duration = _duration(audio)
        if duration is None:
            continue
        labels = {k: v for k, v in row.items() if k != "filename" and k is not None}
        split = "test" if int(row["fold"]) == test_fold else "train"
        items.append(AudioItem(f"esc50/{audio.stem}", audio, duration, labels, split, "esc50"))
    if missing:
        log.warning("%s: %d of %d clips listed in meta/esc50.csv are missing from audio/", root, missing, len(rows))
    return _nonempty(items, root, "<root>/audio/*.wav + <root>/meta/esc50.csv")


# ---------------------------------------------------------------------------------------------------------------
# FSDD: <root>/recordings/<digit>_<speaker>_<take>.wav
_FSDD = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)$")


def load_fsdd(root: str | os.PathLike[str], test_takes: Collection[int] = range(5)) -> Manifest:
    """The Free Spoken Digit Dataset (github.com/Jakobovski/free-spoken-digit-dataset).

    Official split: takes 0-4 are ``test``, the rest ``train``. Labels: ``digit``, ``speaker``, ``take``.
    ``root`` may be the repository or its ``recordings/`` folder.
    """
    root = _existing_dir(root, "FSDD")
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    items = []
    for audio in sorted(folder.glob("*.wav")):
        match = _FSDD.match(audio.stem)
        if match is None:
            log.warning("%s: skipped, not named <digit>_<speaker>_<take>.wav", audio)
            continue
        duration = _duration(audio)
        if duration is None:
            continue
        digit, speaker, take = match.groups()
        split = "test" if int(take) in test_takes else "train"
        labels = {"digit": digit, "speaker": speaker, "take": str(int(take))}
        items.append(AudioItem(f"fsdd/{audio.stem}", audio, duration, labels, split, "fsdd"))
    return _nonempty(items, root, "<root>/recordings/<digit>_<speaker>_<take>.wav")


# ---------------------------------------------------------------------------------------------------------------
# RAVDESS: Actor_XX/MM-VV-EE-II-SS-RR-AA.wav
RAVDESS_MODALITY = {"01": "audio-video", "02": "video", "03": "audio"}
RAVDESS_CHANNEL = {"01": "speech", "02": "song"}
RAVDESS_EMOTION = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}  # fmt: skip
RAVDESS_INTENSITY = {"01": "normal", "02": "strong"}
RAVDESS_STATEMENT = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}


def parse_ravdess_name(name: str) -> dict[str, str]:
    """Labels encoded in a RAVDESS file name (``03-01-05-02-01-01-12.wav``); raises :class:`CorpusError`."""
    fields = Path(name).stem.split("-")
    try:
        if len(fields) != 7 or not all(len(f) == 2 and f.isdigit() for f in fields):
            raise KeyError
        modality, channel, emotion, intensity, statement, repetition, actor = fields
        actor_n = int(actor)
        return {
            "modality": RAVDESS_MODALITY[modality],
            "vocal_channel": RAVDESS_CHANNEL[channel],
            "emotion": RAVDESS_EMOTION[emotion],
            "intensity": RAVDESS_INTENSITY[intensity],
            "statement": RAVDESS_STATEMENT[statement],
            "repetition": str(int(repetition)),
            "actor": str(actor_n),
            "gender": "male" if actor_n % 2 else "female",
        }
    except KeyError:
        raise CorpusError(
            f"{name}: not a RAVDESS file name (expected 7 two-digit fields MM-VV-EE-II-SS-RR-AA, "
            "e.g. 03-01-05-02-01-01-12.wav)"
        ) from None


def load_ravdess(root: str | os.PathLike[str], test_actors: Collection[int] | None = None) -> Manifest:
    """RAVDESS (zenodo.org/record/1188976) unpacked as ``<root>/Actor_XX/*.wav``; audio-only files only.

    The split is speaker-independent: ``test_actors`` are ``test`` (default: the highest-numbered fifth of
    the actors found, e.g. 21-24 of 24, which is two women and two men). Labels: ``emotion``, ``intensity``,
    ``statement``, ``repetition``, ``actor``, ``gender``, ``vocal_channel``, ``modality``.
    """
    root = _existing_dir(root, "RAVDESS")
    found = []
    for audio in sorted(root.glob("Actor_*/*.wav")):
        try:
            labels = parse_ravdess_name(audio.name)
        except CorpusError as exc:
            log.warning("%s; skipped", exc)
            continue
        if labels["modality"] != "audio":
            continue
        found.append((audio, labels))
    actors = sorted({int(labels["actor"]) for _, labels in found})
    if test_actors is None:
        test_actors = actors[len(actors) - max(1, len(actors) // 5) :]
    items = []
    for audio, labels in found:
        duration = _duration(audio)
        if duration is None:
            continue
        split = "test" if int(labels["actor"]) in test_actors else "train"
        items.append(AudioItem(f"ravdess/{audio.stem}", audio, duration, labels, split, "ravdess"))
    return _nonempty(items, root, "<root>/Actor_XX/03-01-EE-II-SS-RR-AA.wav")


# ---------------------------------------------------------------------------------------------------------------
# pocketsphinx-testdata (Debian): <root>/{librivox,cards}/<utt>.wav + a sphinx transcription file per folder
POCKETSPHINX_TESTDATA = Path("/usr/share/pocketsphinx/test/data")
_SPHINX_TRANSCRIPTS = (("librivox", "transcription"), ("cards", "cards.transcription"))


def load_pocketsphinx_testdata(root: str | os.PathLike[str] = POCKETSPHINX_TESTDATA) -> Manifest:
    """Speech from outside the corpus, with transcripts, for choosing between checkpoints: Debian's
    ``pocketsphinx-testdata`` (``apt-get install pocketsphinx-testdata``): 5 LibriVox utterances (one reader) and
    5 spoken card names (another speaker), 16 kHz.

    Ids are ``librivox/<utterance>`` and ``cards/<utterance>`` (``dataset`` is that folder), ``split`` is ``test``
    and the label ``transcript`` holds the sphinx transcription (``<s>`` markers removed).
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: no such folder; apt-get install pocketsphinx-testdata, or pass its data folder")
    items = []
    for folder, name in _SPHINX_TRANSCRIPTS:
        table = root / folder / name
        try:
            lines = table.read_text().splitlines()
        except OSError as exc:
            raise CorpusError(f"{table}: cannot read ({exc.strerror or exc})") from None
        for line in lines:
            match = re.match(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\((.+)\)\s*$", line)
            if not match:
                continue
            audio = root / folder / f"{match.group(2).strip()}.wav"
            duration = _duration(audio)
            if duration is not None:
                labels = {"transcript": match.group(1).strip()}
                items.append(AudioItem(f"{folder}/{audio.stem}", audio, duration, labels, "test", folder))
    return _nonempty(items, root, "librivox/<utt>.wav + librivox/transcription, cards/<utt>.wav + cards/...")
