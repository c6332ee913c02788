"""LoRA on the tiny Llama with audio tokens: the weighted loss by hand, which parameters train, merge and reload."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

import soundtok
import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny)
from soundtok.errors import OutputExistsError
from soundtok.llm import AudioVocab, Turn, extend_vocab, render
from soundtok.llm.dummies import tiny_causal_lm, tiny_chat_tokenizer
from soundtok.llm.lora import (
    LoRASettings,
    apply_lora,
    merge_and_save,
    supervised_mask,
    trainable_parameters,
    weighted_lm_loss,
)
from soundtok.types import Tokens

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

pytest.importorskip("peft")


def extended(tie: bool = True) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, AudioVocab]:
    """The tiny Llama and word tokenizer extended with toy-tiny's audio tokens (16 + 32 codes + 2 markers)."""
    tok = tiny_chat_tokenizer()
    model = tiny_causal_lm(len(tok), tie_word_embeddings=tie)
    vocab = extend_vocab(model, tok, soundtok.load("toy-tiny"))
    return model, tok, vocab


def example(tok: PreTrainedTokenizerBase, vocab: AudioVocab) -> tuple[torch.Tensor, torch.Tensor]:
    """One rendered conversation with a text answer and an audio answer: ``(input_ids [1, N], weights [1, N])``."""
    toy = soundtok.load("toy-tiny")
    audio = Tokens(
        (torch.tensor([[1, 2, 3, 4]]), torch.tensor([[30, 5]])), torch.tensor([640]), 16000, toy.levels, toy.identity
    )
    turns = [
        Turn.user("describe the audio"),
        Turn.assistant("a dog barks ."),
        Turn.user("say it"),
        Turn.assistant(audio),
    ]
    r = render(turns, tok, vocab)
    assert set(r.loss_weights.tolist()) == {0.0, 1.0, 10.0}
    return r.input_ids[None], r.loss_weights[None]


# ------------------------------------------------------------------------------------------------------------
# the loss
def test_supervised_logits_only_give_the_same_loss_and_gradients() -> None:
    """``logits_to_keep=supervised_mask(w)`` (the training loop's forward) changes cost, not the loss: a padded
    batch of two rows through the peft model gives the full-logits loss and gradients."""
    model, tok, vocab = extended()
    ids, weights = example(tok, vocab)  # [1, N]
    n = ids.shape[1]
    short = n - 5  # a second, shorter row: the first `short` ids, right-padded with weight 0 and mask 0
    batch_ids = torch.cat([ids, torch.cat([ids[:, :short], torch.zeros(1, 5, dtype=ids.dtype)], 1)])
    batch_w = torch.cat([weights, torch.cat([weights[:, :short], torch.zeros(1, 5)], 1)])
    mask = torch.ones_like(batch_ids)
    mask[1, short:] = 0
    peft_model = apply_lora(model, vocab, LoRASettings(r=4, alpha=8, dropout=0.0))
    params = [p for p in peft_model.parameters() if p.requires_grad]

    def loss_and_grads(**keep: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits = peft_model(input_ids=batch_ids, attention_mask=mask, **keep).logits
        total = weighted_lm_loss(logits, batch_ids, batch_w, z_loss=1e-2).total
        return total.detach(), list(torch.autograd.grad(total, params))

    keep = supervised_mask(batch_w)
    assert keep.shape == batch_ids.shape and not keep[:, -1].any()
    assert int(keep.sum()) == int((batch_w[:, 1:] > 0).sum())
    full, full_grads = loss_and_grads()
    kept, kept_grads = loss_and_grads(logits_to_keep=keep)
    assert peft_model(input_ids=batch_ids, attention_mask=mask, logits_to_keep=keep).logits.shape[0] == keep.sum()
    torch.testing.assert_close(kept, full)
    for a, b in zip(kept_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="supervised positions"):
        weighted_lm_loss(torch.zeros(3, 7), batch_ids, batch_w)


def test_loss_matches_hand_computation() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    ids = torch.tensor([[0, 1, 2, 3], [4, 0, 1, 2]])
    weights = torch.tensor([[0.0, 1.0, 0.0, 10.0], [0.0, 0.0, 10.0, 0.0]])  # weights of ids as targets
    parts = weighted_lm_loss(logits, ids, weights, z_loss=0.5)
    logp = logits.log_softmax(-1)
    # supervised: (b0, t0 -> id 1, w 1), (b0, t2 -> id 3, w 10), (b1, t1 -> id 1, w 10)
    nll = [(-logp[0, 0, 1], 1.0), (-logp[0, 2, 3], 10.0), (-logp[1, 1, 1], 10.0)]
    ce = sum(w * x for x, w in nll) / 21.0
    lse = torch.stack([logits[0, 0], logits[0, 2], logits[1, 1]]).logsumexp(-1)  # [3]
    z = 0.5 * lse.pow(2).mean()
    assert parts.tokens == 3
    torch.testing.assert_close(parts.ce, ce)
    torch.testing.assert_close(parts.z, z)
    torch.testing.assert_close(parts.total, ce + z)
    assert weighted_lm_loss(logits, ids, weights, z_loss=0.0).z.item() == 0.0


def test_weight_zero_positions_never_matter() -> None:
    torch.manual_seed(1)
    logits = torch.randn(1, 6, 7)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    weights = torch.tensor([[0.0, 0.0, 1.0, 0.0, 10.0, 0.0]])
    base = weighted_lm_loss(logits, ids, weights, z_loss=1e-2)
    other_ids = torch.tensor([[6, 0, 3, -100, 5, -100]])  # only unsupervised targets changed (even to -100)
    other_logits = logits.clone()
    other_logits[0, [0, 2, 4, 5]] = 100.0 * torch.randn(4, 7)  # logits predicting unsupervised targets
    again = weighted_lm_loss(other_logits, other_ids, weights, z_loss=1e-2)
    torch.testing.assert_close(again.total, base.total)
    assert base.tokens == again.tokens == 2


def test_no_supervised_position_gives_zero_that_backpropagates() -> None:
    logits = torch.randn(1, 3, 4, requires_grad=True)
    parts = weighted_lm_loss(logits, torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3), z_loss=1.0)
    parts.total.backward()
    assert parts.tokens == 0 and parts.total.item() == 0.0
    assert logits.grad is not None and not logits.grad.any()


def test_bad_loss_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        weighted_lm_loss(torch.zeros(1, 3, 4), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=">= 0"):
        weighted_lm_loss(torch.zeros(1, 3, 4), torch.zeros(1, 3, dtype=torch.long), -torch.ones(1, 3))


def test_settings_validate_and_round_trip() -> None:
    s = LoRASettings(r=8, alpha=16, target_modules=("q_proj", "v_proj"))
    assert LoRASettings.from_dict(s.to_dict()) == s
    assert (LoRASettings().r, LoRASettings().alpha, LoRASettings().audio_weight) == (64, 128, 10.0)
    with pytest.raises(ValueError, match="rank"):
        LoRASettings(r=0)
    with pytest.raises(ValueError, match="target_modules"):
        LoRASettings(target_modules=())


# ------------------------------------------------------------------------------------------------------------
# the adapter
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_only_lora_and_new_rows_train(tie: bool) -> None:
    model, _, vocab = extended(tie)
    old_ids = torch.arange(min(vocab.ids))  # every text token
    new_ids = torch.tensor(vocab.ids)
    head_before = model.get_output_embeddings().weight.detach().clone()
    peft_model = apply_lora(model, vocab, LoRASettings(r=4, alpha=8, dropout=0.0))

    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "trainable_tokens" in n for n in names), names
    lora_a = [m for n, m in peft_model.named_modules() if n.endswith("q_proj")][0]
    assert lora_a.lora_A["default"].weight.shape[0] == 4 and lora_a.scaling["default"] == 2.0
    trainable, total = trainable_parameters(peft_model)
    assert 0 < trainable < total

    embed = peft_model.get_input_embeddings()
    old_before, new_before = embed(old_ids).detach().clone(), embed(new_ids).detach().clone()
    opt = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0)
    ids = torch.cat([old_ids[:8], new_ids[:8]])[None]  # [1, 16]: text then audio, every target supervised
    out = peft_model(input_ids=ids)
    weighted_lm_loss(out.logits, ids, torch.ones_like(ids, dtype=torch.float)).total.backward()
    opt.step()

    with torch.no_grad():
        torch.testing.assert_close(embed(old_ids), old_before, rtol=0, atol=0)
        # every new row read at a supervised position moved (the last input predicts nothing)
        assert (embed(new_ids[:7]) - new_before[:7]).abs().amax(-1).min() > 0
        merged = peft_model.merge_and_unload()
        head = merged.get_output_embeddings().weight
    # the head's text rows never change; its audio rows move (tied: the same rows as the input's)
    torch.testing.assert_close(head[old_ids], head_before[old_ids], rtol=0, atol=0)
    assert not torch.equal(head[new_ids], head_before[new_ids])


def test_apply_lora_refuses_a_model_without_the_audio_rows() -> None:
    _, _, vocab = extended()
    small = tiny_causal_lm(10)
    with pytest.raises(ValueError, match="extend_vocab"):
        apply_lora(small, vocab)


def test_a_few_steps_reduce_the_loss() -> None:
    model, tok, vocab = extended()
    ids, weights = example(tok, vocab)  # [1, N] each
    peft_model = apply_lora(model, vocab, LoRASettings(r=8, alpha=16, dropout=0.0))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=3e-2)
    losses = []
    for _ in range(8):
        parts = weighted_lm_loss(peft_model(input_ids=ids).logits, ids, weights, z_loss=1e-4)
        opt.zero_grad()
        parts.total.backward()
        opt.step()
        losses.append(parts.total.item())
    assert parts.tokens == int((weights[:, 1:] > 0).sum())
    assert math.isfinite(losses[-1]) and losses[-1] < 0.8 * losses[0], losses


# ------------------------------------------------------------------------------------------------------------
# release
def test_merge_and_save_reloads_with_the_same_logits(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model, tok, vocab = extended()
    peft_model = apply_lora(model, vocab, LoRASettings(r=4, alpha=8, dropout=0.0))
    torch.manual_seed(0)
    with torch.no_grad():  # move the adapter away from its identity start, so merging has something to do
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    ids = torch.tensor([vocab.ids[:6] + [3, 4, 5]])  # [1, 9]: audio and text
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
    merge_and_save(peft_model, tmp_path / "out", tok, vocab)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", local_files_only=True).eval()
    with torch.no_grad():
        got = reloaded(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    assert AudioVocab.load(tmp_path / "out") == vocab
    with pytest.raises(OutputExistsError):
        merge_and_save(peft_model, tmp_path / "out")
