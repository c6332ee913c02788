"""Generation on the tiny Llama: text answers never hold audio ids, audio answers always follow the grammar."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

import soundtok
import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny and codec-tiny)
from soundtok.llm import Turn, extend_vocab
from soundtok.llm.dummies import tiny_causal_lm, tiny_chat_tokenizer
from soundtok.llm.generate import GenerationError, _grammar, generate_audio, generate_text, stop_ids
from soundtok.llm.prompt import PromptFormat
from soundtok.llm.vocab import interleave_order


class Biased(nn.Module):
    """The tiny Llama with ``bias [V]`` added to every logit: pushes generation toward chosen ids."""

    def __init__(self, model: nn.Module, bias: torch.Tensor) -> None:
        super().__init__()
        self.model, self.bias = model, bias

    def forward(self, **kwargs: Any) -> Any:
        out = self.model(**kwargs)
        return SimpleNamespace(logits=out.logits + self.bias, past_key_values=out.past_key_values)


def setup(tokenizer: str = "toy-tiny") -> tuple[nn.Module, PromptFormat]:
    tok = tiny_chat_tokenizer()
    model = tiny_causal_lm(len(tok))
    vocab = extend_vocab(model, tok, soundtok.load(tokenizer))
    return model, PromptFormat(tok, vocab)


def bias_toward(model: nn.Module, ids: list[int], amount: float = 50.0) -> Biased:
    bias = torch.zeros(model.config.vocab_size)
    bias[ids] = amount
    return Biased(model, bias)


PROMPT = [Turn.user("say hello")]


# ------------------------------------------------------------------------------------------------------------
# audio answers
@pytest.mark.parametrize("name", ["toy-tiny", "codec-tiny"])
def test_every_sampled_audio_answer_is_a_valid_item(name: str) -> None:
    model, fmt = setup(name)
    assert fmt.vocab is not None
    for seed in range(6):
        out = generate_audio(model, fmt, PROMPT, max_seconds=0.1, temperature=1.5, seed=seed)
        # ids_to_tokens inside generate_audio already refused malformed sequences; check the grammar directly too
        codes = out.ids[1:-1]
        assert int(out.ids[0]) == fmt.vocab.audio_start_id and int(out.ids[-1]) == fmt.vocab.audio_end_id
        level, _ = fmt.vocab.split_ids(codes)
        want = interleave_order(fmt.vocab.levels, int(out.tokens.lengths[0])).level
        assert torch.equal(level, want)
        assert out.seconds <= 0.1 + 1e-9


def test_text_ids_are_never_chosen_inside_audio() -> None:
    model, fmt = setup()
    text_ids = list(range(len(fmt.tokenizer) - fmt.vocab.num_tokens))  # type: ignore[union-attr]
    biased = bias_toward(model, text_ids)
    biased.bias[fmt.vocab.audio_end_id] = -50.0  # type: ignore[union-attr]
    out = generate_audio(biased, fmt, PROMPT, max_seconds=0.05, temperature=1.0)
    assert bool(fmt.vocab.is_audio(out.ids).all())  # type: ignore[union-attr]
    assert not out.ended  # the end marker was never likely: max_seconds closed the item
    assert out.seconds == pytest.approx(0.05)


def test_end_marker_only_where_an_item_is_whole() -> None:
    model, fmt = setup("codec-tiny")  # 3 levels at one rate: the end may only follow a frame's last level
    assert fmt.vocab is not None
    out = generate_audio(bias_toward(model, [fmt.vocab.audio_end_id]), fmt, PROMPT, max_seconds=1.0)
    assert out.ended
    assert len(out.ids) == 2 + 3  # start, one frame of 3 levels (the earliest whole item), end
    level, can_end = _grammar(fmt.vocab, 9)
    assert level.tolist() == [0, 1, 2] * 3
    assert can_end.tolist() == [False] + [False, False, True] * 3  # after 0, 1, .., 9 codes


def test_audio_sampling_is_seeded() -> None:
    model, fmt = setup()
    a = generate_audio(model, fmt, PROMPT, max_seconds=0.1, seed=3)
    b = generate_audio(model, fmt, PROMPT, max_seconds=0.1, seed=3)
    c = generate_audio(model, fmt, PROMPT, max_seconds=0.1, seed=4)
    assert torch.equal(a.ids, b.ids)
    assert not torch.equal(a.ids, c.ids)


def test_audio_answer_needs_a_vocab() -> None:
    tok = tiny_chat_tokenizer()
    with pytest.raises(GenerationError, match="audio vocabulary"):
        generate_audio(tiny_causal_lm(len(tok)), PromptFormat(tok), PROMPT)


# ------------------------------------------------------------------------------------------------------------
# text answers
def test_text_answer_never_holds_audio_ids() -> None:
    model, fmt = setup()
    assert fmt.vocab is not None
    out = generate_text(bias_toward(model, fmt.vocab.ids), fmt, PROMPT, max_new_tokens=8)
    assert out.ids.numel() == 8 and not bool(fmt.vocab.is_audio(out.ids).any())


def test_text_answer_stops_at_end_of_turn() -> None:
    model, fmt = setup()
    dog = fmt.tokenizer.convert_tokens_to_ids("dog")
    end = fmt.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end in stop_ids(fmt.tokenizer)
    biased = bias_toward(model, [dog], 20.0)
    biased.bias[end] = 30.0  # end of turn first
    out = generate_text(biased, fmt, PROMPT)
    assert out.stopped and out.text == "" and out.ids.numel() == 0
    biased.bias[end] = 0.0
    out = generate_text(biased, fmt, PROMPT, max_new_tokens=3)
    assert out.text == "dogdogdog" and not out.stopped


def test_greedy_with_cache_equals_greedy_without() -> None:
    """The key/value-cached loop picks what full forward passes over the growing sequence pick."""
    model, fmt = setup()
    out = generate_text(model, fmt, PROMPT, max_new_tokens=6)
    ids = fmt.render(PROMPT, add_generation_prompt=True).input_ids
    banned = torch.tensor(fmt.vocab.ids)  # type: ignore[union-attr]
    expected = []
    with torch.no_grad():
        for _ in range(out.ids.numel()):
            logits = model(input_ids=ids[None]).logits[0, -1]
            logits[banned] = -float("inf")
            nxt = int(logits.argmax())
            expected.append(nxt)
            ids = torch.cat([ids, torch.tensor([nxt])])
    assert out.ids.tolist() == expected


def test_bad_settings_are_refused() -> None:
    model, fmt = setup()
    with pytest.raises(GenerationError, match="temperature"):
        generate_text(model, fmt, PROMPT, temperature=-1)
    with pytest.raises(GenerationError, match="max_seconds"):
        generate_audio(model, fmt, PROMPT, max_seconds=0)
