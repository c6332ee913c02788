"""The lora recipe end to end on the tiny Llama and toy-tiny tokens: data, training, export, chat, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny)
from soundtok.cli.main import main
from soundtok.corpus import AudioItem, Manifest
from soundtok.errors import SoundtokError
from soundtok.launch import run_accelerate
from soundtok.llm.dummies import save_tiny_llm, tiny_causal_lm, tiny_chat_tokenizer
from soundtok.llm.recipe import (
    BASE_FILE,
    INSTRUCTIONS_FILE,
    MODEL_DIR,
    LLMTrainConfig,
    load_audio_llm,
    load_llm_config,
    train_llm,
)
from soundtok.testing import fixture_path, load_fixture

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny LLM folder and a manifest of the bundled clips with corpus-style labels."""
    root = tmp_path_factory.mktemp("recipe")
    save_tiny_llm(root / "llm")
    items = [
        AudioItem("esc50/1-1-A-0", fixture_path("sneeze"), 1.0, {"category": "sneezing"}, "train", "esc50"),
        AudioItem("esc50/5-1-A-0", fixture_path("sneeze"), 1.0, {"category": "sneezing"}, "test", "esc50"),
        AudioItem("fsdd/7_jackson_9", fixture_path("digit"), 1.0, {"digit": "7", "gender": "male"}, "train", "fsdd"),
    ]
    Manifest(items).to_jsonl(root / "m.jsonl")
    return root / "llm", root / "m.jsonl"


def config(inputs: tuple[Path, Path], **kw: object) -> LLMTrainConfig:
    llm, manifest = inputs
    base = {
        "llm": str(llm), "audio_tokenizer": "toy-tiny", "manifest": str(manifest),
        "tasks": ["classify_event", "classify_digit", "text_to_audio"], "lora": {"r": 2, "alpha": 4},
        "steps": 2, "batch_size": 2, "max_length": 4096, "checkpoint_every": 1, "log_every": 1,
    }  # fmt: skip
    return LLMTrainConfig.model_validate({**base, **kw})


def test_recipe_trains_exports_and_chats(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = train_llm(config(inputs), run)
    assert out == run / MODEL_DIR and (out / "audio_vocab.json").exists()
    assert (run / INSTRUCTIONS_FILE).exists() and (run / "tokens" / "store.json").exists()

    llm = load_audio_llm(out)
    wav, sr = load_fixture("sneeze")
    answer = llm.ask("what is this ?", wav, sr, max_new_tokens=4)
    assert isinstance(answer, str)
    audio = llm.speak("say hello", max_seconds=0.05)
    assert audio.shape[:2] == (1, 1) and 0 < audio.shape[-1] <= 800

    # resuming a finished run trains nothing more and exports the same model
    before = {k: v.clone() for k, v in llm.model.state_dict().items()}
    assert train_llm(config(inputs), run) == out
    after = load_audio_llm(out).model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_on_another_base_is_refused(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_llm(config(inputs, steps=1, audio_init="codebook"), run)
    assert json.loads((run / BASE_FILE).read_text())["audio_init"] == "codebook"
    with pytest.raises(SoundtokError, match="audio_init: 'codebook' in the run, 'random' now"):
        train_llm(config(inputs, steps=2, audio_init="random"), run)
    assert train_llm(config(inputs, steps=2, audio_init="codebook"), run) == run / MODEL_DIR  # same base: resumes
    # a base.json from before untie_head was written by a tied run
    base = json.loads((run / BASE_FILE).read_text())
    del base["untie_head"]
    (run / BASE_FILE).write_text(json.dumps(base))
    with pytest.raises(SoundtokError, match="untie_head: False in the run, True now"):
        train_llm(config(inputs, steps=3, audio_init="codebook", untie_head=True), run)
    # a run folder from before base.json was built with the mean init
    (run / BASE_FILE).unlink()
    with pytest.raises(SoundtokError, match="audio_init: 'mean' in the run, 'codebook' now"):
        train_llm(config(inputs, steps=3, audio_init="codebook"), run)


def test_untied_head_trains_exports_and_answers(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    """``untie_head: true`` on the tied tiny LLM: the exported model keeps a head of its own and loads for chat."""
    run = tmp_path / "run"
    out = train_llm(config(inputs, steps=2, untie_head=True), run)
    assert out == run / MODEL_DIR and json.loads((run / BASE_FILE).read_text())["untie_head"] is True
    llm = load_audio_llm(out)
    assert llm.model.get_output_embeddings().weight is not llm.model.get_input_embeddings().weight
    assert isinstance(llm.ask("what is this?", torch.randn(1, 1600), 16000, max_new_tokens=3), str)


def test_changed_data_needs_a_new_run(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_llm(config(inputs, steps=1), run)
    with pytest.raises(SoundtokError, match="new run folder"):
        train_llm(config(inputs, steps=1, seed=1), run)


def test_cli_train_and_chat(inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    llm, manifest = inputs
    yaml_path = tmp_path / "lora.yaml"
    yaml_path.write_text(
        f"recipe: lora\nllm: {llm}\naudio_tokenizer: toy-tiny\nmanifest: {manifest}\ntasks: [classify_event]\n"
        "lora: {r: 2, alpha: 4}\nsteps: 1\nbatch_size: 1\nmax_length: 4096\n"
    )
    assert load_llm_config(yaml_path, ["steps=3"]).steps == 3
    run = tmp_path / "run"
    assert main(["train", str(yaml_path), str(run)]) == 0
    capsys.readouterr()
    assert main(["chat", str(run / MODEL_DIR), str(fixture_path("sneeze")), "-q", "what is it ?"]) == 0
    assert capsys.readouterr().out.count("\n") == 1  # one answer line
    wav_out = tmp_path / "gen.wav"
    args = ["chat", str(run / MODEL_DIR), "--speak", "say hello", "-o", str(wav_out), "--max-seconds", "0.05"]
    assert main(args) == 0 and wav_out.exists()
    assert main(args) == 3  # exists: refused without --force
    assert main(["chat", str(tmp_path), "-q", "x"]) == 3  # not an audio LLM folder: a clear error


def test_bad_lora_settings_are_named(inputs: tuple[Path, Path]) -> None:
    with pytest.raises(SoundtokError, match="lora settings"):
        config(inputs, lora={"r": 0}).lora_settings()


def test_shipped_config_has_the_papers_settings() -> None:
    cfg = load_llm_config(Path(__file__).parents[1] / "configs" / "lora-smollm2-msn.yaml")
    lora = cfg.lora_settings()
    assert (lora.r, lora.alpha, lora.target_modules, lora.audio_weight) == (64, 128, "all-linear", 10.0)
    assert lora.z_loss > 0 and cfg.audio_tokenizer == "msn-16k"


def test_two_cpu_processes_train_and_export(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    """The shipped multi-GPU accelerate config with 2 processes on the CPU (gloo): each process trains its half of
    every batch in micro-batches (gradients synchronised once per step, after the last one); one exports the model."""
    llm, manifest = inputs
    yaml_path = tmp_path / "lora.yaml"
    yaml_path.write_text(
        f"recipe: lora\nllm: {llm}\naudio_tokenizer: toy-tiny\nmanifest: {manifest}\n"
        "tasks: [classify_event, classify_digit, text_to_audio]\nlora: {r: 2, alpha: 4}\nsteps: 2\nbatch_size: 4\n"
        "max_length: 4096\nmicro_batch_ids: 1\n"
    )
    run = tmp_path / "run"
    # what `soundtok train CONFIG RUN --accelerate-config configs/accelerate/multi-gpu.yaml --num-processes 2` runs
    # (bf16 autocast, DDP), with a module that registers the toy tokenizer, on the CPU
    shipped = Path(__file__).parents[1] / "configs" / "accelerate" / "multi-gpu.yaml"
    argv = [str(yaml_path), str(run)]
    assert run_accelerate("soundtok.testing.toy_recipe", argv, 2, cpu=True, config_file=shipped) == 0
    trained = load_audio_llm(run / MODEL_DIR).model.state_dict()
    tok = tiny_chat_tokenizer()
    base = tiny_causal_lm(len(tok)).state_dict()  # the same seeded init the run started from
    same_shape = [k for k in base if k in trained and trained[k].shape == base[k].shape]
    assert all(torch.equal(trained[k], base[k]) for k in same_shape if "norm" in k)  # frozen, not LoRA-wrapped
    assert any(not torch.equal(trained[k], base[k]) for k in same_shape if "proj" in k)  # LoRA merged in
