"""benchmarks/audio_swap.py: partner choice, the summary statistics, and a whole run on a tiny trained audio LLM."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from soundtok.llm import Instruction

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audio_swap_bench", ROOT / "benchmarks" / "audio_swap.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def ins(item_id: str, answer: str, task: str = "asr", split: str = "test") -> Instruction:
    return Instruction(f"{item_id}/{task}/0", item_id, task, split, "which?", answer, True, (answer,), ())


def test_partner_has_another_answer_the_same_dataset_and_the_nearest_length(bench: ModuleType) -> None:
    pool = [ins("a/1", "one"), ins("a/2", "two"), ins("a/3", "two"), ins("a/4", "One!"), ins("b/5", "three")]
    lengths = {"a/1": 100, "a/2": 400, "a/3": 180, "a/4": 110, "b/5": 101}
    datasets = {i: i[0] for i in lengths}
    # a/4 says "one" too (after normalisation) and b/5 is another dataset: a/3 is the nearest that qualifies
    assert bench.partner_of(pool[0], pool, lengths, datasets).item_id == "a/3"
    # no other answer within the dataset: another dataset's item is taken
    assert bench.partner_of(pool[0], [pool[0], pool[3], pool[4]], lengths, datasets).item_id == "b/5"
    assert bench.partner_of(pool[0], [pool[0], pool[3]], lengths, datasets) is None

    # text_to_audio answers are empty (the audio is the answer): the references decide
    t2a = [Instruction(f"x/{d}/t", f"x/{d}", "text_to_audio", "test", f"say {d}", "", False, (d,)) for d in "112"]
    one = dict.fromkeys(["x/1", "x/2"], 1)
    pairs, unpaired = bench.pairs_of({"text_to_audio": t2a}, t2a, "test", one, dict.fromkeys(one, "x"))
    assert [p.partner.item_id for p in pairs["text_to_audio"]] == ["x/2", "x/2", "x/1"] and not unpaired


def test_summary_counts_ties_as_half_a_win(bench: ModuleType) -> None:
    out = bench.summarise([1.0, 2.0, 3.0, 1.0], [2.0, 2.0, 1.0, 1.5])
    assert out["n"] == 4 and out["own_wins"] == pytest.approx(2.5 / 4)
    assert out["gap"] == pytest.approx((1.0 + 0.0 - 2.0 + 0.5) / 4)
    assert out["gap_low"] <= out["gap"] <= out["gap_high"]
    assert out["wins_low"] <= out["own_wins"] <= out["wins_high"]


def test_swap_test_on_a_tiny_run(bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("peft")
    import soundtok.testing.dummies  # noqa: F401  (toy-tiny)
    from soundtok.corpus import AudioItem, Manifest
    from soundtok.corpus.loaders import load_shared_corpus
    from soundtok.errors import CorpusError
    from soundtok.llm.dummies import tiny_causal_lm, tiny_chat_tokenizer
    from soundtok.llm.instructions import from_jsonl, instruction_turns
    from soundtok.llm.recipe import INSTRUCTIONS_FILE, TOKENS_DIR, LLMTrainConfig, load_audio_llm, train_llm
    from soundtok.store import TokenStore
    from soundtok.testing import fixture_path

    try:
        load_shared_corpus()
    except CorpusError as exc:
        pytest.skip(f"no shared corpus: {exc}")
    tok = tiny_chat_tokenizer()
    tiny_causal_lm(len(tok)).save_pretrained(tmp_path / "llm")
    tok.save_pretrained(tmp_path / "llm")
    items = [
        AudioItem("fsdd/7_x_0", fixture_path("digit"), 1.0, {"digit": "7", "gender": "male"}, "train", "fsdd"),
        AudioItem("fsdd/7_x_1", fixture_path("digit"), 1.0, {"digit": "7", "gender": "male"}, "test", "fsdd"),
        AudioItem("fsdd/3_y_1", fixture_path("speech"), 1.0, {"digit": "3", "gender": "female"}, "test", "fsdd"),
    ]
    Manifest(items).to_jsonl(tmp_path / "m.jsonl")
    cfg = LLMTrainConfig.model_validate(
        {"llm": str(tmp_path / "llm"), "audio_tokenizer": "toy-tiny", "manifest": str(tmp_path / "m.jsonl"),
         "tasks": ["classify_digit", "text_to_audio"], "lora": {"r": 2, "alpha": 4}, "steps": 1, "batch_size": 2,
         "max_length": 4096, "log_every": 1}
    )  # fmt: skip
    run = tmp_path / "run"
    train_llm(cfg, run)

    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["audio_swap.py", "--runs", str(run), "--threads", "1", "--out", str(out)])
    bench.main()
    report = json.loads((out / "audio_swap.json").read_text())
    tasks = report["runs"]["run"]["tasks"]
    assert set(tasks) == {"classify_digit", "text_to_audio"}
    pairs = tasks["classify_digit"]["pairs"]
    assert tasks["classify_digit"]["n"] == 2
    assert {p["partner"].split("/")[1] for p in pairs.values()} == {"7_x_1", "3_y_1"}  # each other
    assert "| classify_digit | 2 |" in (out / "audio_swap.md").read_text()

    # --resume keeps a run whose model is unchanged (with the command that scored it), scores it again otherwise
    again = ["audio_swap.py", "--runs", str(run), "--threads", "1", "--out", str(out), "--resume"]
    monkeypatch.setattr(sys, "argv", again)
    bench.main()
    kept = json.loads((out / "audio_swap.json").read_text())
    assert kept["runs"]["run"]["tasks"] == tasks
    assert kept["runs"]["run"]["command"] == report["command"] != kept["command"]
    meta_path = run / "model" / "soundtok_llm.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"steps": 2}))
    bench.main()
    rescored = json.loads((out / "audio_swap.json").read_text())
    assert rescored["runs"]["run"]["command"].endswith("--resume")
    # a run scored on another machine (its folder is not here) is kept as recorded
    gone = rescored["runs"]["run"] | {"run": str(tmp_path / "elsewhere")}
    (out / "audio_swap.json").write_text(json.dumps(rescored | {"runs": rescored["runs"] | {"gone": gone}}))
    bench.main()
    assert json.loads((out / "audio_swap.json").read_text())["runs"]["gone"]["tasks"] == gone["tasks"]
    monkeypatch.setattr(sys, "argv", [*again, "--limit", "1"])
    with pytest.raises(SystemExit, match="limit"):
        bench.main()

    # the own score is the training loss of the instruction, unweighted: HF's mean NLL over its labels
    llm = load_audio_llm(run / "model")
    first = next(i for i in from_jsonl(run / INSTRUCTIONS_FILE) if i.id in pairs)
    rendered = llm.fmt.render(instruction_turns(first, TokenStore(run / TOKENS_DIR).get(first.item_id)))
    with torch.no_grad():
        loss = llm.model(input_ids=rendered.input_ids[None], labels=rendered.labels[None]).loss
    assert pairs[first.id]["own"] == pytest.approx(float(loss), rel=1e-4)
