"""benchmarks/llm_probe.py: the pooled hidden states and the two readers, on the toy tokenizer and the tiny Llama."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import soundtok
import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny)

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("sklearn")


def load_bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("llm_probe_bench", ROOT / "benchmarks" / "llm_probe.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    return bench


def test_pooled_states_bag_of_codes_and_a_reader_that_can_fail() -> None:
    from soundtok.llm import extend_vocab
    from soundtok.llm.dummies import tiny_causal_lm, tiny_chat_tokenizer

    bench = load_bench()
    tok = soundtok.load("toy-tiny")
    hf = tiny_chat_tokenizer()
    model = tiny_causal_lm(len(hf))
    vocab = extend_vocab(model, hf, tok)
    codes = [c[0] for c in tok.encode(torch.randn(1, 1, 640) * 0.3, tok.sample_rate).codes]
    states = bench.pooled_states(model, vocab, tok, codes, collapse=False)
    assert states.shape == (3, 16)  # embeddings + 2 layers, hidden size 16
    bag = bench.bag_of_codes(codes, tok.codebook_sizes)
    assert bag.shape == (sum(tok.codebook_sizes),) and np.isclose(bag.sum(), 1.0)
    torch.testing.assert_close(
        torch.tensor([1, 1, 2, 3, 3]).unique_consecutive(), bench.dedup(torch.tensor([1, 1, 2, 3, 3]))
    )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4))
    labels = ["a" if v > 0 else "b" for v in x[:, 0]]
    assert bench.fit_score(x[:60], labels[:60], x[60:], labels[60:])["accuracy"] > 0.9  # a readable feature
    noise = rng.normal(size=(80, 4))
    assert bench.fit_score(noise[:60], labels[:60], noise[60:], labels[60:])["accuracy"] < 0.9  # an unreadable one
