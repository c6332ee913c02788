"""Instruction data from labels: determinism, label fidelity, splits, the JSONL file, and which ids are supervised."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import soundtok
import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny)
from soundtok.corpus.loaders import default_corpus_root, load_shared_corpus
from soundtok.corpus.manifest import AudioItem, Manifest
from soundtok.errors import CorpusError, OutputExistsError
from soundtok.llm.dummies import tiny_chat_tokenizer
from soundtok.llm.instructions import (
    CLASSIFY_TASKS,
    DIGIT_WORDS,
    TASKS,
    Instruction,
    InstructionError,
    build_instructions,
    class_name,
    from_jsonl,
    render_instruction,
    split_counts,
    to_jsonl,
)
from soundtok.llm.prompt import PromptFormat, TokenKind
from soundtok.llm.vocab import extend_vocab
from soundtok.tokenizers.base import AudioTokenizer
from soundtok.types import Tokens

STATEMENT = "Kids are talking by the door"
CAPTIONS = [f"caption number {k}" for k in range(1, 6)]


def _item(item_id: str, labels: dict[str, str], split: str = "train") -> AudioItem:
    return AudioItem(item_id, Path("x.flac"), 1.0, labels, split, item_id.split("/")[0])


@pytest.fixture(scope="module")
def tiny() -> Manifest:
    """One or two items per dataset, with the labels the shared corpus CSVs have, and one unknown dataset."""
    return Manifest(
        [
            _item("esc50/1-100-A-0", {"category": "dog", "target": "0"}),
            _item("esc50/5-200-A-14", {"category": "chirping_birds", "target": "14"}, "test"),
            _item("instruments/Violin_or_fiddle/ab12", {"label": "Violin_or_fiddle"}),
            _item("fsdd/7_theo_30", {"digit": "7", "speaker": "theo", "gender": "male"}),
            _item("fsdd/0_george_0", {"digit": "0", "speaker": "george"}, "test"),  # no gender label
            _item(
                "ravdess/03-01-05-02-01-01-12",
                {"emotion": "angry", "intensity": "strong", "statement": STATEMENT, "gender": "female"},
                "test",
            ),
            _item("librispeech/1089-134686-0009", {"transcript": "AT MOST BY AN ALMS", "gender": "male"}),
            _item("clotho/pug", {f"caption_{k}": c for k, c in enumerate(CAPTIONS, start=1)}, "evaluation"),
            _item("other/x", {"label": "whatever"}),
        ]
    )


def by_task(instructions: list[Instruction], item_id: str) -> dict[str, Instruction]:
    return {i.task: i for i in instructions if i.item_id == item_id and i.id.endswith("/0")}


# ------------------------------------------------------------------------------------------------------------
# determinism
def test_same_seed_same_examples_other_seed_others(tiny: Manifest) -> None:
    a = build_instructions(tiny, seed=0, templates_per_item=2)
    assert a == build_instructions(tiny, seed=0, templates_per_item=2)
    b = build_instructions(tiny, seed=1, templates_per_item=2)
    assert [i.id for i in a] == [i.id for i in b]  # the same examples exist ...
    assert a != b  # ... phrased differently


def test_adding_items_changes_no_other_example(tiny: Manifest) -> None:
    before = build_instructions(tiny, seed=3)
    more = Manifest([_item("esc50/9-9-A-5", {"category": "cat"}), *tiny, _item("fsdd/3_lucas_9", {"digit": "3"})])
    after = {i.id: i for i in build_instructions(more, seed=3)}
    assert all(after[i.id] == i for i in before)


def test_ids_unique_and_distinct_phrasings(tiny: Manifest) -> None:
    instructions = build_instructions(tiny, templates_per_item=3)
    assert len({i.id for i in instructions}) == len(instructions)
    assert all(i.id.startswith(f"{i.item_id}/{i.task}/") for i in instructions)
    for item in tiny:
        for task in TASKS:
            group = [i for i in instructions if i.item_id == item.id and i.task == task]
            assert len({(i.question, i.answer) for i in group}) == len(group)  # no example repeated
    # a task with few variants gives fewer examples than asked, never duplicates
    many = build_instructions(tiny, templates_per_item=1000, tasks=["open_question"])
    gender = [i for i in many if i.item_id == "librispeech/1089-134686-0009"]
    assert 4 <= len(gender) < 1000


def test_gender_needs_both_genders() -> None:
    """A dataset of one gender (FSDD's six male speakers) asks no gender question: its only answer is the prior."""
    items = [
        _item("fsdd/7_theo_30", {"digit": "7", "gender": "male"}),
        _item("librispeech/a", {"transcript": "A", "gender": "male"}),
        _item("librispeech/b", {"transcript": "B", "gender": "female"}, "test"),
    ]
    gender = build_instructions(items, tasks=["classify_gender"])
    assert [(i.item_id, i.answer) for i in gender] == [("librispeech/a", "male"), ("librispeech/b", "female")]


def test_bad_arguments(tiny: Manifest) -> None:
    with pytest.raises(InstructionError, match="templates_per_item"):
        build_instructions(tiny, templates_per_item=0)
    with pytest.raises(InstructionError, match="unknown task"):
        build_instructions(tiny, tasks=["translate"])
    with pytest.raises(InstructionError, match="ESC50_SOUNDS"):
        build_instructions([_item("esc50/x", {"category": "kazoo"})])


# ------------------------------------------------------------------------------------------------------------
# what the examples say, on the tiny manifest
def test_tasks_per_dataset_and_splits(tiny: Manifest) -> None:
    instructions = build_instructions(tiny)
    tasks = {item.id: set(by_task(instructions, item.id)) for item in tiny}
    assert tasks["esc50/1-100-A-0"] == {"caption", "classify_event", "open_question", "text_to_audio"}
    assert tasks["instruments/Violin_or_fiddle/ab12"] == {
        "caption", "classify_instrument", "open_question", "text_to_audio"
    }  # fmt: skip
    # each dataset of the tiny manifest holds one gender: no gender question (test_gender_needs_both_genders)
    assert tasks["fsdd/7_theo_30"] == {"caption", "classify_digit", "open_question", "text_to_audio"}
    assert tasks["fsdd/0_george_0"] == {"caption", "classify_digit", "open_question", "text_to_audio"}
    assert tasks["ravdess/03-01-05-02-01-01-12"] == {"caption", "classify_emotion", "open_question"}
    assert tasks["librispeech/1089-134686-0009"] == {"caption", "asr", "open_question"}
    assert tasks["clotho/pug"] == {"caption"}
    assert tasks["other/x"] == set()  # no templates: skipped
    split_of = {item.id: item.split for item in tiny}
    for i in instructions:
        assert i.split == ("test" if i.item_id.startswith("clotho/") else split_of[i.item_id])
    assert split_counts(instructions)[("classify_digit", "test")] == 1


def test_answers_follow_from_labels(tiny: Manifest) -> None:
    instructions = build_instructions(tiny, templates_per_item=50)
    for i in instructions:
        if i.task in CLASSIFY_TASKS:
            assert i.answer in i.choices and i.question.endswith(", ".join(i.choices) + ".")
    first = {item.id: by_task(instructions, item.id) for item in tiny}
    dog, birds = first["esc50/1-100-A-0"], first["esc50/5-200-A-14"]
    assert dog["classify_event"].answer == "dog" and birds["classify_event"].answer == "chirping birds"
    assert len(dog["classify_event"].choices) == 50
    assert "a dog barks" in dog["caption"].references
    assert dog["text_to_audio"].references == ("dog",)
    violin = first["instruments/Violin_or_fiddle/ab12"]
    assert violin["classify_instrument"].answer == "violin or fiddle"
    assert "a recording of a violin" in violin["caption"].references
    digit = first["fsdd/7_theo_30"]
    assert digit["classify_digit"].answer == "seven" and set(digit["classify_digit"].choices) == set(DIGIT_WORDS)
    assert "a man says the digit seven" in digit["caption"].references
    assert first["fsdd/0_george_0"]["classify_digit"].answer == "zero"
    angry = first["ravdess/03-01-05-02-01-01-12"]
    assert angry["classify_emotion"].answer == "angry"
    assert f"a woman speaks very angrily: '{STATEMENT}'" in angry["caption"].references
    libri = first["librispeech/1089-134686-0009"]
    assert libri["asr"].answer == "AT MOST BY AN ALMS" and libri["asr"].references == ("AT MOST BY AN ALMS",)
    assert "a man reads aloud: 'at most by an alms'" in libri["caption"].references
    clotho = first["clotho/pug"]["caption"]
    assert clotho.references == tuple(CAPTIONS) and clotho.answer in CAPTIONS and clotho.split == "test"
    # open questions: every answer is one of its references, and the ones we can check are right
    opened = {(i.item_id, i.question): i.answer for i in instructions if i.task == "open_question"}
    assert opened["librispeech/1089-134686-0009", "How many words does the speaker say?"] == "five"
    assert opened["ravdess/03-01-05-02-01-01-12", "Is the speaker a man or a woman?"] == "a woman"
    assert opened["ravdess/03-01-05-02-01-01-12", "Does the speaker sound angry?"] == "yes"
    assert opened["ravdess/03-01-05-02-01-01-12", "Does the speaker sound happy?"] == "no"
    assert opened["instruments/Violin_or_fiddle/ab12", "Is this speech, music or another sound?"] == "music"
    assert opened["esc50/5-200-A-14", "Is this the sound of an animal (not a person)?"] == "no"


def test_text_to_audio_has_audio_only_in_the_answer(tiny: Manifest) -> None:
    for i in build_instructions(tiny, templates_per_item=5):
        assert i.audio_in_prompt == (i.task != "text_to_audio")
        if i.task == "text_to_audio":
            assert i.answer == "" and i.choices == () and len(i.references) == 1
    t2a = by_task(build_instructions(tiny), "esc50/1-100-A-0")["text_to_audio"]
    assert "a dog barking" in t2a.question


def test_instruction_checks_itself() -> None:
    good = Instruction("a/caption/0", "a", "caption", "train", "Describe it.", "a dog barks", True, ("a dog barks",))
    for bad, match in [
        ({"task": "translate"}, "unknown task"),
        ({"answer": "a cat"}, "not one of its references"),
        ({"audio_in_prompt": False}, "audio_in_prompt"),
        ({"task": "text_to_audio"}, "answer is the audio"),
        ({"task": "classify_event"}, "choices"),
        ({"choices": ("a dog barks",)}, "choices"),
        ({"question": ""}, "question"),
        ({"references": ()}, "reference"),
    ]:
        with pytest.raises(InstructionError, match=match):
            dataclasses.replace(good, **bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------
# the real corpus
@pytest.fixture(scope="module")
def corpus() -> Manifest:
    try:
        return load_shared_corpus(default_corpus_root())
    except CorpusError as exc:
        pytest.skip(f"no shared corpus: {exc}")


def test_real_corpus(corpus: Manifest) -> None:
    instructions = build_instructions(corpus)
    assert len({i.id for i in instructions}) == len(instructions)
    counts = split_counts(instructions)
    assert {task for task, _ in counts} == set(TASKS)
    items = {item.id: item for item in corpus}
    for i in instructions:
        item = items[i.item_id]
        if item.dataset == "clotho":
            assert i.split == "test" and i.task == "caption" and len(i.references) == 5
        else:
            assert i.split == item.split and i.split in ("train", "test")
        if i.task in CLASSIFY_TASKS:
            assert i.answer in i.choices
            key = {"classify_event": "category", "classify_instrument": "label", "classify_emotion": "emotion"}
            key |= {"classify_digit": "digit", "classify_gender": "gender"}
            assert i.answer == class_name(i.task, item.labels[key[i.task]])
        if i.task == "classify_digit":
            assert i.answer == DIGIT_WORDS[int(item.labels["digit"])]
        if i.task == "asr":
            assert i.answer == item.labels["transcript"]
        if i.task == "text_to_audio":
            assert item.dataset in ("esc50", "instruments", "fsdd") and not i.audio_in_prompt and i.answer == ""
    # one example per item and task: counts are the corpus' own
    n = {d: len(corpus.filter(dataset=d)) for d in corpus.datasets}
    assert sum(v for (t, _), v in counts.items() if t == "caption") == len(corpus)
    assert counts["classify_event", "test"] == len(corpus.filter(dataset="esc50", split="test"))
    assert sum(v for (t, _), v in counts.items() if t == "asr") == n["librispeech"]
    assert sum(v for (t, _), v in counts.items() if t == "text_to_audio") == n["esc50"] + n["instruments"] + n["fsdd"]
    assert ("caption", "evaluation") not in counts


# ------------------------------------------------------------------------------------------------------------
# files
def test_jsonl_round_trip(tiny: Manifest, tmp_path: Path) -> None:
    instructions = build_instructions(tiny, templates_per_item=2)
    path = to_jsonl(instructions, tmp_path / "instructions.jsonl")
    assert from_jsonl(path) == instructions
    with pytest.raises(OutputExistsError):
        to_jsonl(instructions, path)
    to_jsonl(instructions[:3], path, force=True)
    assert from_jsonl(path) == instructions[:3]
    with pytest.raises(InstructionError, match="duplicate"):
        to_jsonl([instructions[0], instructions[0]], tmp_path / "dup.jsonl")


def test_corrupt_files_are_refused(tiny: Manifest, tmp_path: Path) -> None:
    good = build_instructions(tiny)[0].to_dict()
    cases = {
        "truncated": json.dumps(good)[:-10],
        "missing key": json.dumps({k: v for k, v in good.items() if k != "answer"}),
        "wrong type": json.dumps(good | {"audio_in_prompt": "yes"}),
        "inconsistent": json.dumps(good | {"answer": "something else"}),
        "not an object": "[1, 2]",
    }
    for name, line in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(good) + "\n" + line + "\n")
        with pytest.raises(InstructionError, match=rf"{name}\.jsonl:2: "):
            from_jsonl(path)
    (tmp_path / "dup.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(InstructionError, match="duplicate"):
        from_jsonl(tmp_path / "dup.jsonl")
    with pytest.raises(InstructionError, match="cannot read"):
        from_jsonl(tmp_path / "absent.jsonl")


# ------------------------------------------------------------------------------------------------------------
# rendering: which ids carry which weight
@pytest.fixture(scope="module")
def toy() -> AudioTokenizer:
    return soundtok.load("toy-tiny")  # levels: hop 160 (16 codes), hop 320 (32 codes)


@pytest.fixture(scope="module")
def fmt(toy: AudioTokenizer) -> PromptFormat:
    """The tiny word-level chat tokenizer, extended with toy-tiny's audio tokens."""
    pytest.importorskip("transformers")
    tok = tiny_chat_tokenizer()
    return PromptFormat(tok, extend_vocab(None, tok, toy))


def clip(toy: AudioTokenizer) -> Tokens:
    """One hand-written toy-tiny item of 640 samples: 4 frames at hop 160, 2 at hop 320."""
    fast, slow = [3, 5, 7, 1], [9, 11]
    return Tokens((torch.tensor([fast]), torch.tensor([slow])), torch.tensor([640]), 16000, toy.levels, toy.identity)


def test_render_text_to_audio_supervises_the_answer_audio(
    fmt: PromptFormat, toy: AudioTokenizer, tiny: Manifest
) -> None:
    prompt_format = fmt
    assert prompt_format.vocab is not None
    instruction = by_task(build_instructions(tiny), "esc50/1-100-A-0")["text_to_audio"]
    tokens = clip(toy)
    r = render_instruction(instruction, prompt_format, tokens)
    audio_ids = prompt_format.vocab.tokens_to_ids(tokens)[0]  # [<|audio_start|>, 6 codes, <|audio_end|>]
    answer_audio = r.kinds == TokenKind.ANSWER_AUDIO
    assert torch.equal(r.input_ids[answer_audio], audio_ids)
    assert torch.all(r.loss_weights[answer_audio] == 10.0)
    assert not (r.kinds == TokenKind.PROMPT_AUDIO).any()
    # besides the audio only the end of turn is supervised (weight 1); the question is prompt (weight 0)
    rest = r.supervised & ~answer_audio
    assert r.tokens(prompt_format.tokenizer)[int(rest.nonzero()[0])] == "<|im_end|>" and int(rest.sum()) == 1
    # the generation prompt needs no audio at all
    prompt = render_instruction(instruction, prompt_format, None, add_generation_prompt=True)
    assert not prompt.supervised.any() and not prompt_format.vocab.is_audio(prompt.input_ids).any()


def test_render_understanding_keeps_the_audio_in_the_prompt(
    fmt: PromptFormat, toy: AudioTokenizer, tiny: Manifest
) -> None:
    prompt_format = fmt
    assert prompt_format.vocab is not None
    tokens = clip(toy)
    audio_ids = prompt_format.vocab.tokens_to_ids(tokens)[0]
    instructions = build_instructions(tiny)
    for instruction in (i for i in instructions if i.task != "text_to_audio"):
        r = render_instruction(instruction, prompt_format, tokens, system="you are helpful .")
        prompt_audio = r.kinds == TokenKind.PROMPT_AUDIO
        assert torch.equal(r.input_ids[prompt_audio], audio_ids)
        assert torch.all(r.loss_weights[prompt_audio] == 0.0)
        assert not (r.kinds == TokenKind.ANSWER_AUDIO).any()
        assert torch.all(r.loss_weights[r.kinds == TokenKind.ANSWER_TEXT] == 1.0)
    dog = by_task(instructions, "esc50/1-100-A-0")["classify_event"]
    r = render_instruction(dog, prompt_format, tokens)
    assert [t for t, s in zip(r.tokens(prompt_format.tokenizer), r.supervised.tolist(), strict=True) if s] == [
        "dog",
        "<|im_end|>",
    ]
    with pytest.raises(InstructionError, match="batch size 1"):
        render_instruction(dog, prompt_format, _two(tokens))
    with pytest.raises(InstructionError, match="pass its item's tokens"):
        render_instruction(dog, prompt_format, None)


def _two(t: Tokens) -> Tokens:
    """A batch of two copies of a one-item ``t``."""
    codes = tuple(c.repeat(2, 1) for c in t.codes)  # each [2, T'_l]
    return Tokens(codes, t.lengths.repeat(2), t.sample_rate, t.levels, t.tokenizer)
