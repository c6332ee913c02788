"""The llm_codec family and recipe: word codebooks, the semantic and consistency losses, training and resuming
on a tiny LLM (the contract row is in tests/test_contract.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import soundtok
from soundtok.corpus import AudioItem, Manifest
from soundtok.llm.dummies import tiny_causal_lm, tiny_chat_tokenizer
from soundtok.testing import fixture_path
from soundtok.tokenizers.llm_codec import LLMCodecConfig, LLMCodecTokenizer, select_words
from soundtok.train.config import TrainConfig
from soundtok.train.gan import train_gan
from soundtok.train.llm_codec import LLMCodecRecipe, label_text

pytest.importorskip("transformers")

TINY = {
    "latent_dim": 8, "encoder_layers": 1, "decoder_dim": 16, "decoder_intermediate_dim": 32, "decoder_layers": 1,
    "level_sizes": [4, 8, 8], "embedding_dim": 16, "whisper_dim": 512, "level1_dictionary": "none",
    "level1_min_letters": 2,
}  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("llm-codec")
    tok = tiny_chat_tokenizer()
    tok.save_pretrained(root / "llm")
    tiny_causal_lm(len(tok)).save_pretrained(root / "llm")
    labels = {"speech": {"gender": "male"}, "digit": {"digit": "7"}, "sneeze": {"category": "sneezing"}}
    items = [
        AudioItem(id=f"{name}-{split}", path=fixture_path(name), duration=1.0, split=split, dataset=name, labels=lab)
        for name, lab in labels.items()
        for split in ("train", "test")
    ]
    Manifest(items).to_jsonl(root / "m.jsonl")
    return root / "llm", root / "m.jsonl"


def config(setup: tuple[Path, Path], steps: int, **extra: object) -> TrainConfig:
    llm, manifest = setup
    return TrainConfig.model_validate({
        "recipe": "llm_codec", "name": "llm-codec-test", "model": {**TINY, "llm": str(llm)},
        "discriminator": {"width": 0.05, "periods": [2, 3], "stft_resolutions": [[256, 64]]},
        "data": {"manifest": str(manifest), "batch_size": 2, "segment_seconds": 0.16, "eval_items": 2,
                 "eval_seconds": 0.32},
        "steps": steps, "log_every": 1, "eval_every": 2, "checkpoint_every": 2, "adversarial_start": 1, **extra,
    })  # fmt: skip


def test_words_are_the_llms_tokens() -> None:
    tok = tiny_chat_tokenizer()
    words = select_words(tok, [4, 8, 8])
    texts = [tok.decode([i]) for i in words[0].tolist()]
    assert all(t.isalpha() and t.islower() and len(t) >= 2 for t in texts)
    assert "speech" not in [tok.decode([i]) for i in select_words(tok, [4, 8, 8], {"dog", "cat", "say", "now"})[0]]
    with pytest.raises(ValueError, match="vocabulary has"):
        select_words(tok, [1000, 8, 8])


def test_label_texts() -> None:
    assert label_text({"category": "crying_baby"}) == "crying baby"
    assert label_text({"digit": "7", "gender": "male"}) == "seven"
    assert label_text({"emotion": "angry", "gender": "female"}) == "angry female voice"
    assert label_text({"label": "Acoustic_guitar"}) == "acoustic guitar"
    assert label_text({"transcript": "HELLO", "gender": "male"}) == "male voice"
    assert label_text({}) is None


def test_codes_are_words_and_decode_from_the_stored_codebook() -> None:
    model = LLMCodecTokenizer(LLMCodecConfig.from_dict(TINY))
    tok = tiny_chat_tokenizer()
    table = torch.randn(len(tok), 16)
    model.quantizer.attach_embeddings(select_words(tok, [4, 8, 8]), table)
    level = model.quantizer.levels[0]
    torch.testing.assert_close(level.codebook, level.project(level.embeddings))  # E W, stored
    wav = torch.randn(1, 1, 2560) * 0.1
    tokens = model.encode(wav, 16000)
    assert [c.shape[-1] for c in tokens.codes] == [2, 4, 8]  # 12.5, 25, 50 codes/s at 16 kHz
    words = model.words(tokens.codes[0][0], 0, tok)
    assert all(w in [tok.decode([i]) for i in model.token_ids(0).tolist()] for w in words)
    for level in model.quantizer.levels:  # no LLM at inference: the stored codebooks alone
        level.embeddings = None
    assert torch.equal(model.encode(wav, 16000).codes[2], tokens.codes[2])


def test_recipe_trains_with_both_losses_exports_and_loads(setup: tuple[Path, Path], tmp_path: Path) -> None:
    export = train_gan(config(setup, 3, loss={"diversity": 0.1}), tmp_path / "run")
    assert export is not None
    model = soundtok.load(export)
    assert model.family == "llm_codec" and model.num_levels == 3
    words = model.token_ids(0).tolist()
    tok = tiny_chat_tokenizer()
    assert words == select_words(tok, [4, 8, 8], None, 2)[0].tolist()  # the codes name the LLM's words
    events = list((tmp_path / "run" / "logs").glob("events.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"loss/semantic", "loss/consistency", "loss/diversity", "loss/mel", "eval/mel_distance"} <= set(tags)
    diversity = [e.value for e in acc.Scalars("loss/diversity")]
    assert all(0 <= d <= 1 for d in diversity)


def test_resume_continues_exactly(setup: tuple[Path, Path], tmp_path: Path) -> None:
    cfg = config(setup, 4)
    straight = train_gan(cfg, tmp_path / "a")
    assert train_gan(cfg, tmp_path / "b", max_steps_this_run=2) is None
    resumed = train_gan(cfg, tmp_path / "b")
    assert straight is not None and resumed is not None
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after resuming")


def test_init_modules_loads_only_the_named_parts(setup: tuple[Path, Path], tmp_path: Path) -> None:
    first = train_gan(config(setup, 1), tmp_path / "a")
    assert first is not None
    cfg = config(setup, 1, init_weights=str(first), init_modules=["encoder."], adversarial_start=5)
    model = LLMCodecRecipe(cfg).build_trainable()
    saved = load_file(first / "model.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[k], saved[k].float()) for k in saved if k.startswith("encoder."))
    assert not torch.equal(state["decoder.head.weight"], saved["decoder.head.weight"].float())
