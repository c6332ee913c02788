"""The curriculum settings of the lora recipe and the listening evaluation (soundtok.llm.listening), on the tiny
Llama and toy-tiny tokens."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

import soundtok
import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny)
from soundtok.corpus import AudioItem, Manifest
from soundtok.llm.instructions import CLASSIFY_QUESTIONS_SHORT, Instruction, build_instructions
from soundtok.llm.listening import Scored, choice_loglik, evaluate_task, summarise, user_turn
from soundtok.llm.prompt import Turn
from soundtok.llm.recipe import (
    MODEL_DIR,
    TOKENS_DIR,
    LLMTrainConfig,
    hold_out,
    load_audio_llm,
    permute_labels,
    run_instructions,
    train_llm,
)
from soundtok.llm.train import param_groups
from soundtok.llm.vocab import PromptAudio
from soundtok.store import TokenStore
from soundtok.testing import fixture_path

pytest.importorskip("peft")


def digit_items(n: int) -> list[AudioItem]:
    clip = fixture_path("digit")
    return [
        AudioItem(
            f"fsdd/{i % 10}_s{i}_0",
            clip,
            0.3 + 0.01 * i,
            {"digit": str(i % 10), "gender": ("male", "female")[i % 2]},
            "test" if i % 5 == 0 else "train",
            "fsdd",
        )  # fmt: skip
        for i in range(n)
    ]


def test_short_questions_keep_the_choices_and_list_none() -> None:
    items = digit_items(3)
    short = build_instructions(items, tasks=["classify_digit"], question_style="short")
    listed = build_instructions(items, tasks=["classify_digit"])
    for s, c in zip(short, listed, strict=True):
        assert s.question in CLASSIFY_QUESTIONS_SHORT["classify_digit"] and "seven" not in s.question
        assert (s.answer, s.choices) == (c.answer, c.choices) and c.question.startswith(s.question[:-1].split()[0])
    with pytest.raises(ValueError, match="question_style"):
        build_instructions(items, question_style="long")


def test_hold_out_moves_whole_items_of_the_train_split() -> None:
    data = build_instructions(digit_items(200), tasks=["classify_digit", "classify_gender"])
    held = hold_out(data, 0.25, seed=0)
    assert held == hold_out(data, 0.25, seed=0) and hold_out(data, 0.0, 0) == data
    by_item: dict[str, set[str]] = {}
    for before, after in zip(data, held, strict=True):
        by_item.setdefault(after.item_id, set()).add(after.split)
        assert after.split == before.split or (before.split == "train" and after.split == "validation")
    assert all(len(s) == 1 for s in by_item.values())  # both tasks of an item land on the same side
    share = sum(s == {"validation"} for s in by_item.values()) / sum(i.split == "train" for i in digit_items(200))
    assert 0.15 < share < 0.35


def test_permuted_labels_keep_their_counts_and_lose_the_audio() -> None:
    data = build_instructions(digit_items(200), tasks=["classify_digit"])
    permuted = permute_labels(data, seed=0)
    train = [(a, b) for a, b in zip(data, permuted, strict=True) if a.split == "train"]
    assert Counter(a.answer for a, _ in train) == Counter(b.answer for _, b in train)
    assert sum(a.answer == b.answer for a, b in train) < 0.3 * len(train)
    assert all(a == b for a, b in zip(data, permuted, strict=True) if a.split != "train")


def test_new_rows_get_their_own_rate_and_no_decay() -> None:
    lora, rows = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    named = [("base.q_proj.lora_A.weight", lora), ("embed.trainable_tokens_delta.default", rows)]
    assert [len(g["params"]) for g in param_groups(named, 1e-4, None)] == [2]
    slow, fast = param_groups(named, 1e-4, 1e-3)
    assert slow["params"] == [lora] and fast["params"] == [rows]
    assert (fast["lr"], fast["weight_decay"]) == (1e-3, 0.0)
    with pytest.raises(ValueError, match="no new audio rows"):
        param_groups(named[:1], 1e-4, 1e-3)


def test_collapsing_runs_is_refused_for_several_levels() -> None:
    toy = soundtok.load("toy-tiny")
    tokens = toy.encode(torch.randn(1, 1, 1600), toy.sample_rate)
    assert PromptAudio(max_seconds=0.05)(tokens).lengths.tolist() == [800]
    with pytest.raises(ValueError, match="one-level tokenizers"):
        PromptAudio(collapse_runs=True)(tokens)


@pytest.fixture(scope="module")
def curriculum_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LLMTrainConfig]:
    from soundtok.llm.dummies import save_tiny_llm

    root = tmp_path_factory.mktemp("curriculum")
    save_tiny_llm(root / "llm")
    Manifest(digit_items(20)).to_jsonl(root / "m.jsonl")
    cfg = LLMTrainConfig.model_validate({
        "llm": str(root / "llm"), "audio_tokenizer": "toy-tiny", "manifest": str(root / "m.jsonl"),
        "tasks": ["classify_digit", "classify_gender", "text_to_audio"], "question_style": "short",
        "validation_fraction": 0.3,
        "prompt_max_seconds": 0.05, "untie_head": True, "new_rows_lr": 1e-3, "lora": {"r": 2, "alpha": 4},
        "steps": 2, "batch_size": 2, "checkpoint_every": 1, "log_every": 1,
    })  # fmt: skip
    assert train_llm(cfg, root / "run") == root / "run" / MODEL_DIR
    return root / "run", cfg


def test_the_trained_model_reads_audio_as_in_training(curriculum_run: tuple[Path, LLMTrainConfig]) -> None:
    run, cfg = curriculum_run
    llm = load_audio_llm(run / MODEL_DIR)
    assert llm.prompt_audio == PromptAudio(max_seconds=0.05)
    long = llm.audio_tokens(torch.randn(1, 3200), 16000)
    assert int(llm.question_audio(long).lengths[0]) == 800
    splits = Counter(i.split for i in run_instructions(cfg, soundtok.llm.recipe.run_manifest(cfg)))
    assert splits["validation"] > 0 and splits["train"] > 0


def test_choice_likelihood_is_the_teacher_forced_answer(curriculum_run: tuple[Path, LLMTrainConfig]) -> None:
    run, _ = curriculum_run
    llm = load_audio_llm(run / MODEL_DIR)
    llm.model.eval()
    tokens = TokenStore(run / TOKENS_DIR).get("fsdd/7_s7_0")
    turn = user_turn(llm, "What number is spoken?", tokens)
    scores = choice_loglik(llm, turn, ["seven", "one"])
    for choice, score in zip(["seven", "one"], scores, strict=True):
        full = llm.fmt.render([turn, Turn.assistant(choice)])
        with torch.no_grad():
            logp = llm.model(full.input_ids[None]).logits[0, :-1].float().log_softmax(-1)
        picked = logp.gather(1, full.input_ids[1:, None])[:, 0][full.supervised[1:]]
        assert score == pytest.approx(float(picked.sum()), abs=1e-4)


def test_evaluate_task_scores_every_instruction_and_control(curriculum_run: tuple[Path, LLMTrainConfig]) -> None:
    run, cfg = curriculum_run
    llm = load_audio_llm(run / MODEL_DIR)
    data = [i for i in run_instructions(cfg, soundtok.llm.recipe.run_manifest(cfg)) if i.task == "classify_digit"]
    evaluated = [i for i in data if i.split == "test"]
    train = [i for i in data if i.split == "train"]
    partners = {i.id: train[0].item_id for i in evaluated}
    durations = {i.item_id: 0.5 for i in data}
    store = TokenStore(run / TOKENS_DIR)
    out = evaluate_task(llm, evaluated, train, store.get, partners=partners, durations=durations, references=3)
    for key in ("ll", "calibrated", "greedy", "no_audio", "swapped", "blind_prior", "bag_of_codes_reader"):
        assert out[key]["n"] == len(evaluated) and 0 <= out[key]["accuracy"] <= 1
    assert len(out["references"]) == 3 and set(out["scores"]) == {i.id for i in evaluated}
    assert all(len(s["own"]) == 10 for s in out["scores"].values())
    first = evaluated[0]  # the no-audio likelihoods, computed once per question, are those of the question alone
    alone = choice_loglik(llm, user_turn(llm, first.question, None), first.choices)
    assert out["scores"][first.id]["no_audio"] == pytest.approx(alone, abs=1e-5)


def test_summary_counts_what_each_scoring_got_right() -> None:
    def ins(n: int, answer: str) -> Instruction:
        return Instruction(f"i{n}", f"x{n}", "classify_gender", "test", "Which?", answer, True, (answer,),
                           ("female", "male"))  # fmt: skip

    # own audio: right for the three "female" clips, wrong for the "male" one; no audio: always "male"
    scored = [
        Scored(ins(n, a), "p", {"own": own, "no_audio": [-2.0, -1.0], "swapped": [-1.0, -2.0]}, greedy="male")
        for n, (a, own) in enumerate([("female", [-1.0, -2.0])] * 3 + [("male", [-0.5, -3.0])])
    ]
    prior = {"Which?": {"female": -0.2, "male": -3.0}}  # calibration turns every answer to "male"
    out = summarise(scored, prior, "male", {"reader": ["female"] * 4})
    assert (out["ll"]["right"], out["calibrated"]["right"], out["greedy"]["right"]) == (3, 1, 1)
    assert (out["no_audio"]["right"], out["swapped"]["right"], out["reader"]["right"]) == (1, 3, 3)
    assert out["blind_prior"]["right"] == 1 and out["chance"] == 0.5
    assert out["ll"]["mcnemar_p_vs_blind_prior"] == pytest.approx(0.625)  # 4 discordant pairs, 3 to 1


def test_the_benchmark_writes_its_report(
    curriculum_run: tuple[Path, LLMTrainConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("listening_bench", root / "benchmarks" / "listening.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run, _ = curriculum_run
    argv = ["listening.py", "--runs", str(run), "--split", "test", "--references", "2", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    report = json.loads((tmp_path / "listening_test.json").read_text())
    tasks = report["runs"]["run"]["tasks"]
    assert set(tasks) == {"classify_digit", "classify_gender"} and tasks["classify_digit"]["ll"]["n"] == 4
    assert "| LL |" in (tmp_path / "listening_test.md").read_text()
    assert bench.headline(report, "run")["digits"]["n"] == 4
    speaking = report["runs"]["run"]["speaking"]  # the 4 test prompts "Say the digit ...", read back
    assert speaking["probe"]["n"] == speaking["whisper"]["n"] == 4 and 0 < speaking["chance"] <= 0.5
    assert bench.headline(report, "run")["text_to_audio_digits"]["n"] == 4
