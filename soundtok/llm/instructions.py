"""Instruction data from real labels: audio + question -> answer, and text -> audio, built from a corpus manifest.

The idea is OpenAQA's (Gong et al. 2023, "Listen, Think, and Understand"), restricted to what the labels of our
corpus state: every answer follows from a label, so none is invented by another model.

Definitions
-----------
*Instruction.* One training or evaluation example about one audio item (:class:`Instruction`): a ``question``
and its ``answer`` (text), the ``task`` it exercises, the item's ``split``, every acceptable ``references``
answer, and for classification the ``choices`` the question lists. For *understanding* tasks the item's audio is
in the prompt (``audio_in_prompt``); for ``text_to_audio`` the question is a text prompt, the item's audio is the
answer, ``answer`` is ``""`` and ``references`` holds the class the generated audio should be heard as (for scoring
it with a classifier). An instruction's ``id`` is ``"<item id>/<task>/<k>"``, ``k`` counting its examples.

*Tasks*, and the labels (CSV columns of the shared corpus, or the keys the loaders of :mod:`soundtok.corpus`
give) each is built from:

===================== ========================================== ===================================================
task                  datasets (label)                           answer
===================== ========================================== ===================================================
caption               esc50 (category), instruments (label),     a sentence templated from the labels ("a dog
                      fsdd (digit, gender), ravdess (emotion,    barks", "a woman speaks angrily: 'Kids are talking
                      intensity, statement, gender),             by the door'"); for clotho one of its 5 human
                      librispeech (transcript, gender),          captions, all 5 being references
                      clotho (caption_1..5)
classify_event        esc50 (category)                           the class name
classify_instrument   instruments (label)                        the class name
classify_emotion      ravdess (emotion)                          the class name
classify_digit        fsdd (digit)                               the digit as a word ("seven")
classify_gender       fsdd, ravdess, librispeech (gender; only   "female" or "male"
                      datasets that hold both genders)
asr                   librispeech (transcript)                   the transcript, exactly as labelled
open_question         esc50, instruments, fsdd, ravdess,         speech / music / another sound; a man / a woman;
                      librispeech                                how many words are spoken; the ESC-50 group of an
                                                                 event, animal or not; an instrument's family;
                                                                 emotional intensity; "does the speaker sound X?"
text_to_audio         esc50, instruments, fsdd                   (the audio) for "Generate the sound of a dog
                                                                 barking.", "Play a cello.", "Say the digit seven
                                                                 in a man's voice."
===================== ========================================== ===================================================

*Class names* (a classification answer, and every entry of its ``choices``): the label lower-cased with
underscores as spaces (``"chirping_birds"`` -> ``"chirping birds"``, ``"Violin_or_fiddle"`` -> ``"violin or
fiddle"``), digits as words (``"7"`` -> ``"seven"``). A question lists *all* classes of its task, the canonical
ones (the 50 ESC-50 categories, the 10 instruments of the corpus, the 8 RAVDESS emotions, ten digits, two genders)
plus any other class the manifest holds, shuffled per example so the answer's position carries no information.

*Splits.* An instruction has its item's corpus split, except that items of :data:`EVAL_ONLY_DATASETS` (clotho,
whose 7 clips come with 5 human captions each) are always ``"test"``.

*Examples per item.* Each task offers groups of variants (a group is one question; its variants are phrasings of
the question and, for captions, of the answer). ``templates_per_item`` examples are drawn per (item, task) without
repeating a variant, visiting the groups round robin in a random order (so open questions differ before phrasings
repeat); fewer come out when a task has fewer variants. The draws use ``random.Random(f"{seed}/{item id}/{task}")``:
the same seed gives the same examples, and adding items or tasks never changes the examples of others.

*Files.* :func:`to_jsonl` writes one JSON object per instruction (the fields of :class:`Instruction`; tuples as
lists), atomically; :func:`from_jsonl` checks every line and names the first bad one.

*Rendering.* :func:`render_instruction` turns an instruction and its item's audio tokens (e.g.
``TokenStore.get(instruction.item_id)``) into chat turns for :class:`~soundtok.llm.prompt.PromptFormat`: a user
turn ``<audio>\\n<question>`` and an assistant turn ``<answer>`` for understanding tasks (the audio is prompt,
weight 0; the answer text weight 1), a user turn ``<question>`` and an assistant turn ``<audio>`` for
``text_to_audio`` (the answer audio, markers included, weight 10).

>>> from soundtok.corpus.manifest import AudioItem, Manifest
>>> m = Manifest([AudioItem("fsdd/7_theo_3", "a.wav", 0.4, {"digit": "7", "gender": "male"}, "train", "fsdd")])
>>> [(i.task, i.answer) for i in build_instructions(m) if i.task in ("classify_digit", "text_to_audio")]
[('classify_digit', 'seven'), ('text_to_audio', '')]
>>> split_counts(build_instructions(m, templates_per_item=2))[("caption", "train")]
2
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.errors import SoundtokError
from soundtok.fileio import atomic_write, read_jsonl
from soundtok.llm.prompt import PromptFormat, Rendered, Turn
from soundtok.types import Tokens

log = logging.getLogger(__name__)

#: every task, in the order instructions of one item are built
TASKS: tuple[str, ...] = (
    "caption",
    "classify_event",
    "classify_instrument",
    "classify_emotion",
    "classify_digit",
    "classify_gender",
    "asr",
    "open_question",
    "text_to_audio",
)
CLASSIFY_TASKS: frozenset[str] = frozenset(t for t in TASKS if t.startswith("classify_"))
#: datasets whose items are for evaluation only: their instructions are in split "test" whatever the manifest says
EVAL_ONLY_DATASETS: frozenset[str] = frozenset({"clotho"})


class InstructionError(SoundtokError, ValueError):
    """An instruction is inconsistent, a file of instructions is malformed, or a label cannot be phrased."""


@dataclass(frozen=True)
class Instruction:
    """One example (module docstring). ``references`` and ``choices`` may be given as lists (made tuples)."""

    id: str
    item_id: str
    task: str
    split: str
    question: str
    answer: str
    audio_in_prompt: bool
    references: tuple[str, ...]
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "choices", tuple(self.choices))
        where = f"instruction {self.id!r}"
        for name in ("id", "item_id", "question"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InstructionError(f"{where}: {name} must be a non-empty string, got {value!r}")
        if self.task not in TASKS:
            raise InstructionError(f"{where}: unknown task {self.task!r}; tasks are {list(TASKS)}")
        if not isinstance(self.split, str) or not isinstance(self.answer, str):
            raise InstructionError(f"{where}: split and answer must be strings")
        if not all(isinstance(r, str) and r for r in (*self.references, *self.choices)):
            raise InstructionError(f"{where}: references and choices must be non-empty strings")
        if not self.references:
            raise InstructionError(f"{where}: needs at least one reference answer")
        if self.task == "text_to_audio":
            if self.answer or self.audio_in_prompt:
                raise InstructionError(
                    f"{where}: a text_to_audio instruction's answer is the audio, so answer must be '' and "
                    f"audio_in_prompt False (got answer={self.answer!r}, audio_in_prompt={self.audio_in_prompt})"
                )
        else:
            if not self.answer or self.audio_in_prompt is not True:
                raise InstructionError(
                    f"{where}: a {self.task} instruction needs a text answer and audio_in_prompt=True "
                    f"(got answer={self.answer!r}, audio_in_prompt={self.audio_in_prompt!r})"
                )
            if self.answer not in self.references:
                raise InstructionError(f"{where}: answer {self.answer!r} is not one of its references")
        if (self.task in CLASSIFY_TASKS) != bool(self.choices):
            raise InstructionError(f"{where}: choices are given for classification tasks, and only for those")
        if self.choices and self.answer not in self.choices:
            raise InstructionError(f"{where}: answer {self.answer!r} is not one of its choices {list(self.choices)}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Instruction:
        """Inverse of :meth:`to_dict`; checks keys and types (:class:`InstructionError`)."""
        if not isinstance(d, Mapping):
            raise InstructionError(f"an instruction is a JSON object, got {type(d).__name__}")
        names = [f.name for f in fields(cls)]
        missing = [k for k in names if k not in d]
        unknown = sorted(set(d) - set(names))
        if missing or unknown:
            raise InstructionError(f"instruction keys: missing {missing}, unknown {unknown}; the keys are {names}")
        for name in ("references", "choices"):
            if not isinstance(d[name], list | tuple) or not all(isinstance(x, str) for x in d[name]):
                raise InstructionError(f"instruction {d['id']!r}: {name} must be a list of strings, got {d[name]!r}")
        if not isinstance(d["audio_in_prompt"], bool):
            raise InstructionError(f"instruction {d['id']!r}: audio_in_prompt must be true or false")
        return cls(**{k: d[k] for k in names})


# ---------------------------------------------------------------------------------------------------------------
# what the labels mean, in words
@dataclass(frozen=True)
class Sound:
    """An ESC-50 category in words: a caption ``sentence``, a noun phrase (``gerund``) and its ESC-50 ``group``."""

    sentence: str  # "a dog barks"
    gerund: str  # "a dog barking": "the sound of ..." / "Generate the sound of ..."
    group: str  # one of ESC50_GROUPS


#: the five ESC-50 groups (categories with targets 0-9, 10-19, ... in the dataset's own order)
ESC50_GROUPS: tuple[str, ...] = ("animal", "natural", "human", "domestic", "urban")
_S = Sound
ESC50_SOUNDS: dict[str, Sound] = {
    # animals
    "dog": _S("a dog barks", "a dog barking", "animal"),
    "rooster": _S("a rooster crows", "a rooster crowing", "animal"),
    "pig": _S("a pig grunts", "a pig grunting", "animal"),
    "cow": _S("a cow moos", "a cow mooing", "animal"),
    "frog": _S("a frog croaks", "a frog croaking", "animal"),
    "cat": _S("a cat meows", "a cat meowing", "animal"),
    "hen": _S("a hen clucks", "a hen clucking", "animal"),
    "insects": _S("insects buzz", "insects buzzing", "animal"),
    "sheep": _S("a sheep bleats", "a sheep bleating", "animal"),
    "crow": _S("a crow caws", "a crow cawing", "animal"),
    # natural soundscapes and water
    "rain": _S("rain falls", "rain falling", "natural"),
    "sea_waves": _S("sea waves crash", "sea waves crashing", "natural"),
    "crackling_fire": _S("a fire crackles", "a fire crackling", "natural"),
    "crickets": _S("crickets chirp", "crickets chirping", "natural"),
    "chirping_birds": _S("birds chirp", "birds chirping", "natural"),
    "water_drops": _S("water drips", "water dripping", "natural"),
    "wind": _S("wind blows", "wind blowing", "natural"),
    "pouring_water": _S("water is poured", "water being poured", "natural"),
    "toilet_flush": _S("a toilet flushes", "a toilet flushing", "natural"),
    "thunderstorm": _S("thunder rumbles in a storm", "thunder rumbling in a storm", "natural"),
    # human, non-speech
    "crying_baby": _S("a baby cries", "a baby crying", "human"),
    "sneezing": _S("someone sneezes", "someone sneezing", "human"),
    "clapping": _S("hands clap", "hands clapping", "human"),
    "breathing": _S("someone breathes", "someone breathing", "human"),
    "coughing": _S("someone coughs", "someone coughing", "human"),
    "footsteps": _S("someone walks", "someone walking", "human"),
    "laughing": _S("someone laughs", "someone laughing", "human"),
    "brushing_teeth": _S("someone brushes their teeth", "someone brushing their teeth", "human"),
    "snoring": _S("someone snores", "someone snoring", "human"),
    "drinking_sipping": _S("someone sips a drink", "someone sipping a drink", "human"),
    # interior / domestic
    "door_wood_knock": _S("someone knocks on a wooden door", "someone knocking on a wooden door", "domestic"),
    "mouse_click": _S("a computer mouse clicks", "a computer mouse clicking", "domestic"),
    "keyboard_typing": _S("someone types on a keyboard", "someone typing on a keyboard", "domestic"),
    "door_wood_creaks": _S("a wooden door creaks", "a wooden door creaking", "domestic"),
    "can_opening": _S("a can is opened", "a can being opened", "domestic"),
    "washing_machine": _S("a washing machine runs", "a washing machine running", "domestic"),
    "vacuum_cleaner": _S("a vacuum cleaner runs", "a vacuum cleaner running", "domestic"),
    "clock_alarm": _S("an alarm clock rings", "an alarm clock ringing", "domestic"),
    "clock_tick": _S("a clock ticks", "a clock ticking", "domestic"),
    "glass_breaking": _S("glass breaks", "glass breaking", "domestic"),
    # exterior / urban
    "helicopter": _S("a helicopter flies", "a helicopter flying", "urban"),
    "chainsaw": _S("a chainsaw runs", "a chainsaw running", "urban"),
    "siren": _S("a siren wails", "a siren wailing", "urban"),
    "car_horn": _S("a car horn honks", "a car horn honking", "urban"),
    "engine": _S("an engine runs", "an engine running", "urban"),
    "train": _S("a train passes", "a train passing", "urban"),
    "church_bells": _S("church bells ring", "church bells ringing", "urban"),
    "airplane": _S("an airplane flies over", "an airplane flying over", "urban"),
    "fireworks": _S("fireworks explode", "fireworks exploding", "urban"),
    "hand_saw": _S("someone saws with a hand saw", "someone sawing with a hand saw", "urban"),
}
del _S

#: instrument label -> (noun phrase with its article, family); other labels get "a/an <class name>" and no family
INSTRUMENTS: dict[str, tuple[str, str]] = {
    "Acoustic_guitar": ("an acoustic guitar", "string"),
    "Bass_drum": ("a bass drum", "percussion"),
    "Cello": ("a cello", "string"),
    "Clarinet": ("a clarinet", "wind"),
    "Double_bass": ("a double bass", "string"),
    "Flute": ("a flute", "wind"),
    "Hi_hat": ("a hi-hat", "percussion"),
    "Saxophone": ("a saxophone", "wind"),
    "Snare_drum": ("a snare drum", "percussion"),
    "Violin_or_fiddle": ("a violin", "string"),
}

#: RAVDESS emotion -> (adverb, adverb at strong intensity, adjective)
EMOTIONS: dict[str, tuple[str, str, str]] = {
    "neutral": ("in a neutral tone", "in a neutral tone", "neutral"),
    "calm": ("calmly", "very calmly", "calm"),
    "happy": ("happily", "very happily", "happy"),
    "sad": ("sadly", "very sadly", "sad"),
    "angry": ("angrily", "very angrily", "angry"),
    "fearful": ("fearfully", "very fearfully", "fearful"),
    "disgust": ("with disgust", "with strong disgust", "disgusted"),
    "surprised": ("with surprise", "with great surprise", "surprised"),
}
DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
GENDERS: tuple[str, ...] = ("female", "male")
_PERSON = {"female": "woman", "male": "man"}

#: classification task -> (datasets, label key)
_CLASS_LABELS: dict[str, tuple[frozenset[str], str]] = {
    "classify_event": (frozenset({"esc50"}), "category"),
    "classify_instrument": (frozenset({"instruments"}), "label"),
    "classify_emotion": (frozenset({"ravdess"}), "emotion"),
    "classify_digit": (frozenset({"fsdd"}), "digit"),
    "classify_gender": (frozenset({"fsdd", "ravdess", "librispeech"}), "gender"),
}


def class_name(task: str, label: str) -> str:
    """The class name of ``label`` for classification ``task`` (module docstring): ``"7"`` -> ``"seven"``."""
    if task == "classify_digit":
        if len(label) != 1 or not label.isdigit():
            raise InstructionError(f"digit label {label!r} is not one of 0-9")
        return DIGIT_WORDS[int(label)]
    return label.replace("_", " ").strip().lower()


def _canonical_classes(task: str) -> tuple[str, ...]:
    labels: dict[str, tuple[str, ...]] = {
        "classify_event": tuple(ESC50_SOUNDS),
        "classify_instrument": tuple(INSTRUMENTS),
        "classify_emotion": tuple(EMOTIONS),
        "classify_digit": tuple(str(d) for d in range(10)),
        "classify_gender": GENDERS,
    }
    return tuple(class_name(task, label) for label in labels[task])


def _class_lists(manifest: Iterable[AudioItem]) -> dict[str, tuple[str, ...]]:
    """Per classification task: its canonical classes, then any others the manifest holds (sorted)."""
    found: dict[str, set[str]] = defaultdict(set)
    for item in manifest:
        for task, (datasets, key) in _CLASS_LABELS.items():
            label = item.labels.get(key)
            if item.dataset in datasets and label and (task != "classify_gender" or _gender(item)):
                found[task].add(class_name(task, label))
    out = {}
    for task in _CLASS_LABELS:
        canonical = _canonical_classes(task)
        out[task] = canonical + tuple(sorted(found[task] - set(canonical)))
    return out


def _one_gender_datasets(items: Iterable[AudioItem]) -> frozenset[str]:
    """Datasets whose gender-labelled items are all of one gender (FSDD's six speakers are all male): their gender
    question has one answer, so it teaches the LLM the prior and nothing it hears, and scores it on the prior."""
    found: dict[str, set[str]] = defaultdict(set)
    for item in items:
        gender = _gender(item)
        if gender is not None:
            found[item.dataset].add(gender)
    return frozenset(d for d, genders in found.items() if len(genders) == 1)


def _gender(item: AudioItem) -> str | None:
    gender = item.labels.get("gender", "").strip().lower()
    return gender if gender in GENDERS else None


def _number(n: int) -> str:
    """``n`` in words (0 <= n < 1000; digits beyond)."""
    ones = (
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen"
    ).split()
    tens = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
    if n < 20:
        return ones[n]
    if n < 100:
        return tens[n // 10] + (f"-{ones[n % 10]}" if n % 10 else "")
    if n < 1000:
        return f"{ones[n // 100]} hundred" + (f" {_number(n % 100)}" if n % 100 else "")
    return str(n)


# ---------------------------------------------------------------------------------------------------------------
# templates: per dataset, per task, groups of variants
@dataclass(frozen=True)
class _Variant:
    """One way to ask (and answer) a question; ``{choices}`` in ``question`` is filled when the example is drawn."""

    question: str
    answer: str
    references: tuple[str, ...]
    choices: tuple[str, ...] = ()


_Group = list[_Variant]
_Templates = dict[str, list[_Group]]  # task -> groups
_Classes = Mapping[str, tuple[str, ...]]  # classification task -> its class list

CAPTION_QUESTIONS = (
    "Describe the audio.",
    "Write a short caption for this recording.",
    "What can you hear in this recording? Answer in one sentence.",
    "Describe this sound in one sentence.",
)
CLASSIFY_QUESTIONS: dict[str, tuple[str, ...]] = {
    "classify_event": (
        "Which sound event is this? Choose one of: {choices}.",
        "What sound is in this recording? Answer with one of: {choices}.",
        "Classify this sound. Options: {choices}.",
    ),
    "classify_instrument": (
        "Which instrument is playing? Choose one of: {choices}.",
        "Name the instrument in this recording. Answer with one of: {choices}.",
        "Classify the instrument. Options: {choices}.",
    ),
    "classify_emotion": (
        "Which emotion does the speaker express? Choose one of: {choices}.",
        "How does the speaker feel? Answer with one of: {choices}.",
        "Classify the emotion in this voice. Options: {choices}.",
    ),
    "classify_digit": (
        "Which digit does the speaker say? Choose one of: {choices}.",
        "What number is spoken? Answer with one of: {choices}.",
        "Classify the spoken digit. Options: {choices}.",
    ),
    "classify_gender": (
        "Is the speaker female or male? Choose one of: {choices}.",
        "What is the speaker's gender? Answer with one of: {choices}.",
        "Classify the speaker's gender. Options: {choices}.",
    ),
}
#: ``question_style="short"``: the same questions without the list of classes (one short answer is expected; the
#: choices still travel with the instruction, for scoring by log-likelihood), variant for variant
CLASSIFY_QUESTIONS_SHORT: dict[str, tuple[str, ...]] = {
    "classify_event": ("Which sound event is this?", "What sound is in this recording?", "Classify this sound."),
    "classify_instrument": (
        "Which instrument is playing?",
        "Name the instrument in this recording.",
        "Classify the instrument.",
    ),
    "classify_emotion": (
        "Which emotion does the speaker express?",
        "How does the speaker feel?",
        "Classify the emotion in this voice.",
    ),
    "classify_digit": ("Which digit does the speaker say?", "What number is spoken?", "Classify the spoken digit."),
    "classify_gender": (
        "Is the speaker female or male?",
        "What is the speaker's gender?",
        "Classify the speaker's gender.",
    ),
}
_SHORT: dict[str, str] = {
    long: short
    for task, questions in CLASSIFY_QUESTIONS.items()
    for long, short in zip(questions, CLASSIFY_QUESTIONS_SHORT[task], strict=True)
}
QUESTION_STYLES = ("choices", "short")
ASR_QUESTIONS = (
    "Transcribe the speech.",
    "What does the speaker say? Write it down word for word.",
    "Write down exactly what is said in this recording.",
)


def _caption(captions: Sequence[str]) -> list[_Group]:
    refs = tuple(dict.fromkeys(captions))
    return [[_Variant(q, c, refs) for q in CAPTION_QUESTIONS for c in refs]]


def _classify(task: str, label: str, classes: _Classes) -> list[_Group]:
    name = class_name(task, label)
    return [[_Variant(q, name, (name,), classes[task]) for q in CLASSIFY_QUESTIONS[task]]]


def _open(questions: Sequence[str], answer: str, *also: str) -> _Group:
    """One open question (its phrasings); ``also`` are further acceptable answers."""
    refs = tuple(dict.fromkeys((answer, *also)))
    return [_Variant(q, answer, refs) for q in questions]


def _to_audio(prompts: Sequence[str], target: str) -> list[_Group]:
    return [[_Variant(p, "", (target,)) for p in prompts]]


def _kind(kind: str) -> _Group:
    also = ("other", "neither") if kind == "another sound" else ()
    return _open(
        ("Is this speech, music or another sound?", "Does this recording hold speech, music or some other sound?"),
        kind,
        *also,
    )


def _word_count(text: str) -> _Group:
    n = len(text.split())
    answer = _number(n) if n <= 10 else str(n)
    return _open(
        ("How many words does the speaker say?", "How many words are spoken in this recording?"),
        answer,
        str(n),
        _number(n),
    )


def _speaker(item: AudioItem, classes: _Classes, t: _Templates) -> str:
    """Add the gender tasks of a speech item to ``t``; return the word for the speaker ("man", "woman", "person")."""
    gender = _gender(item)
    if gender is None:
        return "person"
    person = _PERSON[gender]
    t["classify_gender"] = _classify("classify_gender", gender, classes)
    t["open_question"].append(
        _open(
            ("Is the speaker a man or a woman?", "Is this a man's or a woman's voice?"), f"a {person}", person, gender
        )
    )
    return person


_Build = Callable[[AudioItem, _Classes], _Templates]
_BUILDERS: dict[str, _Build] = {}  # dataset -> the templates of one of its items


def _builder(dataset: str) -> Callable[[_Build], _Build]:
    def register(fn: _Build) -> _Build:
        _BUILDERS[dataset] = fn
        return fn

    return register


@_builder("esc50")
def _esc50(item: AudioItem, classes: _Classes) -> _Templates:
    category = item.labels.get("category")
    if not category:
        return {}
    if category not in ESC50_SOUNDS:
        raise InstructionError(
            f"item {item.id!r}: ESC-50 category {category!r} has no words; add it to "
            "soundtok.llm.instructions.ESC50_SOUNDS (a Sound: sentence, gerund, group)"
        )
    s = ESC50_SOUNDS[category]
    t: _Templates = defaultdict(list)
    t["caption"] = _caption((s.sentence, f"the sound of {s.gerund}", f"a recording of {s.gerund}"))
    t["classify_event"] = _classify("classify_event", category, classes)
    t["open_question"] += [
        _kind("another sound"),
        _open(
            (
                "Which group does this sound belong to: animal, natural (soundscapes and water), human (non-speech), "
                "domestic (interior) or urban (exterior)?",
            ),
            s.group,
        ),
        _open(("Is this the sound of an animal (not a person)?",), "yes" if s.group == "animal" else "no"),
    ]
    t["text_to_audio"] = _to_audio(
        (
            f"Generate the sound of {s.gerund}.",
            f"Make a recording of {s.gerund}.",
            f"Create audio of {s.gerund}.",
            f"Produce the sound of {s.gerund}.",
        ),
        class_name("classify_event", category),
    )
    return t


@_builder("instruments")
def _instruments(item: AudioItem, classes: _Classes) -> _Templates:
    label = item.labels.get("label")
    if not label:
        return {}
    name = class_name("classify_instrument", label)
    phrase, family = INSTRUMENTS.get(label, (("an " if name[0] in "aeiou" else "a ") + name, ""))
    t: _Templates = defaultdict(list)
    t["caption"] = _caption((f"a recording of {phrase}", f"someone plays {phrase}", f"the sound of {phrase}"))
    t["classify_instrument"] = _classify("classify_instrument", label, classes)
    t["open_question"].append(_kind("music"))
    if family:
        t["open_question"].append(
            _open(
                (
                    "Is this a string, wind or percussion instrument?",
                    "Which family does this instrument belong to: string, wind or percussion?",
                ),
                family,
            )
        )
    t["text_to_audio"] = _to_audio(
        (
            f"Generate the sound of {phrase}.",
            f"Play {phrase}.",
            f"Create a recording of someone playing {phrase}.",
        ),
        name,
    )
    return t


@_builder("fsdd")
def _fsdd(item: AudioItem, classes: _Classes) -> _Templates:
    digit = item.labels.get("digit")
    if not digit:
        return {}
    word = class_name("classify_digit", digit)
    t: _Templates = defaultdict(list)
    person = _speaker(item, classes, t)
    t["caption"] = _caption(
        (
            f"a {person} says the digit {word}",
            f"a {person} speaks the word '{word}'",
            f"a {person}'s voice says '{word}'",
        )
    )
    t["classify_digit"] = _classify("classify_digit", digit, classes)
    t["open_question"] += [_kind("speech"), _word_count(word)]
    voice = f" in a {person}'s voice" if person != "person" else ""
    t["text_to_audio"] = _to_audio(
        (f"Say the digit {word}{voice}.", f"Generate a {person} saying the digit {word}.", f"Speak the word '{word}'."),
        word,
    )
    return t


@_builder("ravdess")
def _ravdess(item: AudioItem, classes: _Classes) -> _Templates:
    emotion = item.labels.get("emotion")
    if not emotion:
        return {}
    strong = item.labels.get("intensity") == "strong"
    adverb, strong_adverb, adjective = EMOTIONS.get(emotion, (f"in a {emotion} tone",) * 2 + (emotion,))
    how = strong_adverb if strong else adverb
    statement = item.labels.get("statement", "")
    t: _Templates = defaultdict(list)
    person = _speaker(item, classes, t)
    t["caption"] = _caption(
        (f"a {person} speaks {how}: '{statement}'", f"a {person} says '{statement}' {how}")
        if statement
        else (f"a {person} speaks {how}",)
    )
    t["classify_emotion"] = _classify("classify_emotion", emotion, classes)
    t["open_question"].append(_kind("speech"))
    if statement:
        t["open_question"].append(_word_count(statement))
    if item.labels.get("intensity") in ("normal", "strong"):
        t["open_question"].append(
            _open(("Is the emotion expressed with normal or strong intensity?",), item.labels["intensity"])
        )
    # "does the speaker sound X?": one group asks about the true emotion (yes), one about the others (no)
    ask = "Does the speaker sound {}?"
    others = [EMOTIONS[e][2] for e in EMOTIONS if e != emotion]
    t["open_question"] += [
        _open((ask.format(adjective),), "yes"),
        [_Variant(ask.format(o), "no", ("no",)) for o in others],
    ]
    return t


@_builder("librispeech")
def _librispeech(item: AudioItem, classes: _Classes) -> _Templates:
    transcript = item.labels.get("transcript", "").strip()
    t: _Templates = defaultdict(list)
    person = _speaker(item, classes, t)
    t["open_question"].append(_kind("speech"))
    if transcript:
        text = transcript.lower()
        t["caption"] = _caption(
            (
                f"a {person} reads aloud: '{text}'",
                f"a {person} reads a passage from a book: '{text}'",
                f"a recording of a {person} reading: '{text}'",
            )
        )
        t["asr"] = [[_Variant(q, transcript, (transcript,)) for q in ASR_QUESTIONS]]
        t["open_question"].append(_word_count(transcript))
    return t


@_builder("clotho")
def _clotho(item: AudioItem, classes: _Classes) -> _Templates:
    captions = [c for k in range(1, 6) if (c := item.labels.get(f"caption_{k}", "").strip())]
    return {"caption": _caption(captions)} if captions else {}


# ---------------------------------------------------------------------------------------------------------------
# building
def _draw(rng: random.Random, groups: Sequence[_Group], n: int) -> list[_Variant]:
    """Up to ``n`` distinct variants: groups visited round robin in a random order, a random unused variant each."""
    pools = [rng.sample(g, len(g)) for g in groups if g]
    order = rng.sample(range(len(pools)), len(pools))
    out: list[_Variant] = []
    while len(out) < n and any(pools):
        for i in order:
            if pools[i] and len(out) < n:
                out.append(pools[i].pop())
    return out


def build_instructions(
    manifest: Manifest | Iterable[AudioItem],
    *,
    seed: int = 0,
    templates_per_item: int = 1,
    tasks: Collection[str] | None = None,
    question_style: str = "choices",
) -> list[Instruction]:
    """Instructions for every item of ``manifest`` whose dataset has templates (module docstring), in manifest
    order, then task order (:data:`TASKS`), then ``k``; ``tasks`` keeps only those tasks.

    ``question_style="short"`` asks classification questions without listing the classes
    (:data:`CLASSIFY_QUESTIONS_SHORT`: a short curriculum's questions); the draws, answers and ``choices`` are the
    same as with ``"choices"``.

    Items of other datasets are skipped (logged). Deterministic given ``seed``; each item's examples depend only on
    that item, ``seed`` and (for the class lists of classification questions) the classes the manifest holds.
    """
    if isinstance(templates_per_item, bool) or not isinstance(templates_per_item, int) or templates_per_item < 1:
        raise InstructionError(f"templates_per_item must be an integer >= 1, got {templates_per_item!r}")
    wanted = set(TASKS if tasks is None else tasks)
    if question_style not in QUESTION_STYLES:
        raise InstructionError(f"question_style must be one of {list(QUESTION_STYLES)}, got {question_style!r}")
    unknown = sorted(wanted - set(TASKS))
    if unknown:
        raise InstructionError(f"unknown task(s) {unknown}; tasks are {list(TASKS)}")
    items = list(manifest)
    classes = _class_lists(items)
    one_gender = _one_gender_datasets(items)
    skipped: Counter[str] = Counter()
    out: list[Instruction] = []
    for item in items:
        build = _BUILDERS.get(item.dataset)
        if build is None:
            skipped[item.dataset or "(no dataset)"] += 1
            continue
        split = "test" if item.dataset in EVAL_ONLY_DATASETS else item.split
        templates = build(item, classes)
        for task in TASKS:
            if task not in wanted or not templates.get(task):
                continue
            if task == "classify_gender" and item.dataset in one_gender:
                continue
            rng = random.Random(f"{seed}/{item.id}/{task}")
            for k, v in enumerate(_draw(rng, templates[task], templates_per_item)):
                question = v.question
                choices = v.choices
                if choices:  # shuffled so the answer's position says nothing
                    choices = tuple(rng.sample(choices, len(choices)))
                    question = (
                        _SHORT[question]
                        if question_style == "short"
                        else question.replace("{choices}", ", ".join(choices))
                    )
                out.append(
                    Instruction(
                        id=f"{item.id}/{task}/{k}",
                        item_id=item.id,
                        task=task,
                        split=split,
                        question=question,
                        answer=v.answer,
                        audio_in_prompt=task != "text_to_audio",
                        references=v.references,
                        choices=choices,
                    )
                )
    if skipped:
        log.info(
            "no instruction templates for dataset(s) %s; skipped %d item(s) (templates exist for %s)",
            sorted(skipped), sum(skipped.values()), sorted(_BUILDERS),
        )  # fmt: skip
    return out


def split_counts(instructions: Iterable[Instruction]) -> dict[tuple[str, str], int]:
    """Number of instructions per ``(task, split)``, in task order then split name."""
    counts = Counter((i.task, i.split) for i in instructions)
    order = {t: n for n, t in enumerate(TASKS)}
    return dict(sorted(counts.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])))


# ---------------------------------------------------------------------------------------------------------------
# files
def _check_unique(instructions: Sequence[Instruction], where: str) -> None:
    seen: set[str] = set()
    for i in instructions:
        if i.id in seen:
            raise InstructionError(f"{where}: duplicate instruction id {i.id!r}; ids must be unique")
        seen.add(i.id)


def to_jsonl(instructions: Iterable[Instruction], path: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write one JSON object per instruction, atomically; refuses to overwrite unless ``force``."""
    items = list(instructions)
    bad = [type(i).__name__ for i in items if not isinstance(i, Instruction)]
    if bad:
        raise InstructionError(f"to_jsonl writes Instruction objects, got {bad[0]}")
    _check_unique(items, str(path))
    text = "".join(json.dumps(i.to_dict(), ensure_ascii=False) + "\n" for i in items)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), force=force)


def from_jsonl(path: str | os.PathLike[str]) -> list[Instruction]:
    """Read a file written by :func:`to_jsonl`; :class:`InstructionError` names the first bad line."""
    path = Path(path)
    out = []
    for n, entry in read_jsonl(path, InstructionError, "instructions"):
        try:
            out.append(Instruction.from_dict(entry))
        except InstructionError as exc:
            raise InstructionError(f"{path}:{n}: {exc}") from None
    _check_unique(out, str(path))
    return out


# ---------------------------------------------------------------------------------------------------------------
# rendering
def instruction_turns(
    instruction: Instruction,
    tokens: Tokens | None,
    *,
    system: str | None = None,
    with_answer: bool = True,
) -> list[Turn]:
    """The chat turns of ``instruction`` (module docstring); ``tokens`` are its item's audio (batch size 1), which
    may be None only when no audio is rendered (``text_to_audio`` without its answer)."""
    needs_audio = instruction.audio_in_prompt or with_answer
    if needs_audio and tokens is None:
        raise InstructionError(f"instruction {instruction.id!r} renders audio; pass its item's tokens")
    if tokens is not None and tokens.batch_size != 1:
        raise InstructionError(
            f"instruction {instruction.id!r}: expected the tokens of one item (batch size 1), got a batch of "
            f"{tokens.batch_size}; pass tokens.item(i) or TokenStore.get(instruction.item_id)"
        )
    turns = [Turn.system(system)] if system else []
    if instruction.audio_in_prompt and tokens is not None:
        turns.append(Turn.user(tokens, "\n" + instruction.question))
        if with_answer:
            turns.append(Turn.assistant(instruction.answer))
    else:
        turns.append(Turn.user(instruction.question))
        if with_answer and tokens is not None:
            turns.append(Turn.assistant(tokens))
    return turns


def render_instruction(
    instruction: Instruction,
    fmt: PromptFormat,
    tokens: Tokens | None,
    *,
    system: str | None = None,
    add_generation_prompt: bool = False,
) -> Rendered:
    """``input_ids`` and ``loss_weights`` of ``instruction`` with its item's ``tokens`` (module docstring).

    ``add_generation_prompt`` renders the prompt alone, ending where the answer starts (for generation; no weight
    is then non-zero, and ``tokens`` may be None for ``text_to_audio``).
    """
    turns = instruction_turns(instruction, tokens, system=system, with_answer=not add_generation_prompt)
    return fmt.render(turns, add_generation_prompt=add_generation_prompt)


__all__ = [
    "CLASSIFY_QUESTIONS_SHORT",
    "CLASSIFY_TASKS",
    "DIGIT_WORDS",
    "EMOTIONS",
    "ESC50_GROUPS",
    "ESC50_SOUNDS",
    "EVAL_ONLY_DATASETS",
    "GENDERS",
    "INSTRUMENTS",
    "QUESTION_STYLES",
    "TASKS",
    "Instruction",
    "InstructionError",
    "Sound",
    "build_instructions",
    "class_name",
    "from_jsonl",
    "instruction_turns",
    "render_instruction",
    "split_counts",
    "to_jsonl",
]
