"""benchmarks/audio_llm.py: its statistics, selection, perplexity and log reading on tiny inputs; the whole
``--quick`` run on a tiny audio LLM trained on real corpus clips is a slow test."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from soundtok.llm import Instruction
from soundtok.llm.runs import select, selection_order

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audio_llm_bench", ROOT / "benchmarks" / "audio_llm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def instruction(item_id: str, task: str, split: str = "test") -> Instruction:
    choices = ("yes", "no") if task.startswith("classify_") else ()
    return Instruction(f"{item_id}/{task}/0", item_id, task, split, "q?", "yes", True, ("yes",), choices)


def test_accuracy_has_a_wilson_interval_and_none_without_items(bench: ModuleType) -> None:
    # the interval is soundtok.eval.stats.wilson; a task with no items has no accuracy and no interval (NaN)
    assert (bench.proportion(0, 3)["low"], bench.proportion(0, 3)["high"]) == pytest.approx((0.0, 0.5615), abs=1e-4)
    five = bench.proportion(5, 10)
    assert (five["accuracy"], five["low"], five["high"]) == pytest.approx((0.5, 0.2366, 0.7634), abs=1e-4)
    none = bench.proportion(0, 0)
    assert none["n"] == 0 and all(math.isnan(none[k]) for k in ("accuracy", "low", "high"))


def test_selection_is_round_robin_over_datasets() -> None:
    # the benchmark's selection is soundtok.llm.runs.select (benchmarks/audio_swap.py scores the same one)
    data = [instruction(f"esc50/{i}", "caption") for i in range(5)]
    data += [instruction("clotho/a", "caption"), instruction("fsdd/0_x_0", "caption")]
    data += [instruction("fsdd/1_x_0", "classify_digit"), instruction("fsdd/2_x_0", "caption", split="train")]
    chosen = select(data, 3, {})
    assert list(chosen) == ["caption", "classify_digit"]  # task order; train instructions never count
    first_esc50 = min((i for i in data if i.item_id.startswith("esc50")), key=selection_order).item_id
    assert [i.item_id for i in chosen["caption"]] == sorted(["clotho/a", first_esc50, "fsdd/0_x_0"])
    assert len(select(data, None, {})["caption"]) == 7
    # within a dataset the order is a hash of the id, not the id (ids often follow the classes)
    many = [instruction(f"fsdd/{d}_x_{k}", "classify_digit") for d in range(10) for k in range(20)]
    digits = {i.item_id[5] for i in select(many, 10, {})["classify_digit"]}
    assert len(digits) >= 5, digits


def test_matching_and_sentence_case(bench: ModuleType) -> None:
    assert bench.matches(" A Dog! ", ["cat", "a dog"]) and not bench.matches("a dog barks", ["a dog"])
    assert bench.sentence_case("HE SAID  HELLO") == "He said hello."


def test_perplexity_is_the_exponent_of_the_mean_nll(bench: ModuleType) -> None:
    from soundtok.llm.dummies import tiny_causal_lm

    model = tiny_causal_lm(40)
    seqs = [torch.tensor([3, 5, 7, 9]), torch.tensor([4, 4, 6])]
    out = bench.perplexity(model, seqs, masked=[30, 31, 32])
    nll = []
    for ids in seqs:
        with torch.no_grad():
            logp = model(input_ids=ids[None]).logits[0, :-1].log_softmax(-1)
        nll += [-float(logp[k, int(ids[k + 1])]) for k in range(len(ids) - 1)]
    assert out["scored_tokens"] == 5 and out["ppl"] == pytest.approx(math.exp(sum(nll) / 5), rel=1e-5)
    assert out["ppl_text_ids_only"] < out["ppl"]  # masking ids that are never targets only sharpens the rest


def test_training_speed_is_read_from_tensorboard(bench: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    # a resumed run: two event files; the first call also logged step 4, whose state a kill lost (not counted)
    for part, values in enumerate(([(1, 100.0), (2, 300.0), (4, 900.0)], [(3, 500.0)])):
        writer = SummaryWriter(str(tmp_path / "logs"), filename_suffix=f".{part}")
        for step, value in values:
            writer.add_scalar("train/tokens_per_second", value, step)
            writer.add_scalar("loss/total", 10.0 / step, step)
        writer.close()
    out = bench.train_speed(tmp_path, {"steps": 3, "train_tokens": 99})
    assert out["tokens_per_second"] == pytest.approx(300.0) and out["logged_steps"] == 3
    assert out["loss_first"] == {"step": 1, "loss": 10.0} and out["loss_last"]["step"] == 3
    assert bench.loss_change(out) == "1: 10.00 → 3: 3.33"
    assert out["steps"] == 3 and out["train_tokens"] == 99
    assert bench.train_speed(tmp_path / "nothing", {})["tokens_per_second"] is None


@pytest.mark.slow
def test_quick_benchmark_on_a_tiny_run(bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every section on a 2-step tiny Llama over real corpus clips (needs the shared corpus, Whisper base, DNSMOS,
    Java and pycocoevalcap; about 2-3 minutes on 2 CPU cores, most of it training the three probes once)."""
    pytest.importorskip("peft")
    import soundtok.testing.dummies  # noqa: F401  (toy-tiny)
    from soundtok.corpus import Manifest
    from soundtok.corpus.loaders import load_shared_corpus
    from soundtok.errors import CorpusError
    from soundtok.llm.dummies import tiny_causal_lm, tiny_chat_tokenizer
    from soundtok.llm.recipe import LLMTrainConfig, train_llm

    try:
        corpus = load_shared_corpus()
    except CorpusError as exc:
        pytest.skip(f"no shared corpus: {exc}")
    items = [
        item
        for ds in ("esc50", "fsdd", "librispeech", "instruments", "ravdess")
        for split in ("train", "test")
        for item in sorted(corpus.filter(dataset=ds, split=split), key=lambda it: (it.duration, it.id))[:2]
    ] + sorted(corpus.filter(dataset="clotho"), key=lambda it: it.id)[:1]
    Manifest(items).to_jsonl(tmp_path / "m.jsonl")
    tok = tiny_chat_tokenizer()
    tiny_causal_lm(len(tok)).save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    cfg = LLMTrainConfig.model_validate(
        {"llm": str(tmp_path / "llm"), "audio_tokenizer": "toy-tiny", "manifest": str(tmp_path / "m.jsonl"),
         "lora": {"r": 2, "alpha": 4}, "steps": 2, "batch_size": 2, "max_length": 8192, "log_every": 1}
    )  # fmt: skip
    train_llm(cfg, tmp_path / "run")

    out = tmp_path / "out"
    argv = ["audio_llm.py", "--runs", str(tmp_path / "run"), "--quick", "--threads", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--work", str(tmp_path / "work"), "--out", str(out)])
    bench.main()
    report = json.loads((out / "audio_llm.json").read_text())
    run = report["runs"]["run"]
    assert set(run["tasks"]) == {
        "caption", "classify_event", "classify_instrument", "classify_emotion", "classify_digit", "classify_gender",
        "asr", "open_question", "text_to_audio",
    }  # fmt: skip
    assert set(run["tasks"]["caption"]) >= {"clotho", "templated"}
    assert run["text_ability"]["base"]["same_tokens_as_run"] is True
    assert run["throughput"]["train"]["logged_steps"] == 2
    text = (out / "audio_llm.md").read_text()
    for section in ("Understanding", "Captioning", "Text to audio", "Text ability kept", "Throughput", "Context cost"):
        assert f"## {section}" in text


def test_resume_keeps_only_runs_whose_model_is_unchanged(bench: ModuleType, tmp_path: Path) -> None:
    def trained(name: str, steps: int, exported_at: str = "2026-01-01 00:00:00") -> Path:
        model = tmp_path / name / "model"
        model.mkdir(parents=True, exist_ok=True)
        meta = {"llm": "smollm2-135m", "audio_tokenizer": "msn-16k", "steps": steps, "train_tokens": 10 * steps,
                "exported_at": exported_at}  # fmt: skip
        (model / "soundtok_llm.json").write_text(json.dumps(meta))
        return tmp_path / name

    a, b, c, gone = trained("a", 50), trained("b", 50), trained("c", 50), trained("gone", 50)
    report = {"settings": {"limit": 4}, "threads": 1, "command": "python x", "runs": {}}
    old = {
        **report,
        "runs": {
            name: {
                "run": str(run),
                "date": "then",
                "model": bench.model_key(json.loads((run / "model/soundtok_llm.json").read_text())),
            }
            for name, run in (("a", a), ("b", b), ("c", c), ("gone", gone))
        },
    }
    out = tmp_path / "out"
    out.mkdir()
    (out / "audio_llm.json").write_text(json.dumps(old))
    trained("b", 100)  # b was trained further since: scored again
    trained("c", 50, exported_at="2026-02-01 00:00:00")  # c was trained again with the same settings: scored again
    shutil.rmtree(gone)  # scored on another machine: kept as recorded
    kept = bench.previous_runs(out, report, {"a": a, "b": b, "c": c})
    assert list(kept) == ["a", "gone"]
    assert kept["gone"] == old["runs"]["gone"]
    assert bench.previous_runs(tmp_path / "nothing", report, {"a": a}) == {}
    with pytest.raises(SystemExit, match="settings"):
        bench.previous_runs(out, {**report, "settings": {"limit": 8}}, {"a": a})
    assert bench.by_command({"command": "now", "runs": {"a": {"command": "then"}, "b": {}}}) == {
        "then": ["a"],
        "now": ["b"],
    }


def test_blind_prior_answers_the_train_majority_of_the_same_question(bench: ModuleType) -> None:
    def ins(i: int, question: str, answer: str, split: str) -> Instruction:
        return Instruction(f"x/{i}", f"x/{i}", "classify_gender", split, question, answer, True, (answer,), ("a", "b"))

    train = [ins(0, "q1", "a", "train"), ins(1, "q1", "a", "train"), ins(2, "q1", "b", "train")]
    train += [ins(3, "q2", "b", "train")]
    test = [ins(4, "q1", "a", "test"), ins(5, "q1", "b", "test"), ins(6, "q2", "b", "test"), ins(7, "q3", "a", "test")]
    out = bench.blind_prior(train + test, {"classify_gender": test, "asr": []})
    # q1 -> a (right once), q2 -> b (right), q3 unseen -> the task's majority a (right): 3 of 4
    assert list(out) == ["classify_gender"] and out["classify_gender"]["correct"] == 3
