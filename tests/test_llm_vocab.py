"""Audio vocabulary: the interleaving rule, Tokens <-> flat ids, refusals, embedding growth and its initialisation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import soundtok
import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny)
from soundtok.errors import CheckpointError, OutputExistsError, TokenizerMismatchError
from soundtok.llm import AUDIO_END, AUDIO_START, AudioTokenError, AudioVocab, extend_vocab, interleave_order
from soundtok.llm.dummies import tiny_causal_lm, tiny_chat_tokenizer
from soundtok.registry import build
from soundtok.testing import noise_batch
from soundtok.testing.dummies import ToyConfig
from soundtok.tokenizers.base import AudioTokenizer
from soundtok.types import LevelSpec, Tokens

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def toy() -> AudioTokenizer:
    return soundtok.load("toy-tiny")  # levels: hop 160 (16 codes, 100 Hz), hop 320 (32 codes, 50 Hz)


@pytest.fixture()
def vocab(toy: AudioTokenizer) -> AudioVocab:
    return extend_vocab(None, tiny_chat_tokenizer(), toy)


def encode(tok: AudioTokenizer, lengths: list[int], seed: int = 0) -> Tokens:
    wav, lens = noise_batch(lengths, seed=seed)
    return tok.encode(wav, tok.sample_rate, lens)


# ------------------------------------------------------------------------------------------------------------
# the interleaving rule
def test_interleaving_rule_two_rates() -> None:
    levels = (LevelSpec(160, 16), LevelSpec(320, 32))
    whole = interleave_order(levels, 960)  # 3 strides of 320 samples
    assert whole.level.tolist() == [0, 1, 0, 0, 1, 0, 0, 1, 0]
    assert whole.frame.tolist() == [0, 0, 1, 2, 1, 3, 4, 2, 5]
    # a partial stride keeps exactly the frames that start inside the item: ceil(length / hop) per level
    assert interleave_order(levels, 161).level.tolist() == [0, 1, 0]
    assert interleave_order(levels, 321).level.tolist() == [0, 1, 0, 0, 1]
    assert interleave_order(levels, 1).level.tolist() == [0, 1]


def test_interleaving_rule_other_layouts() -> None:
    # same-rate levels (RVQ): frame-major
    rvq = interleave_order((LevelSpec(320, 8),) * 3, 640)
    assert rvq.level.tolist() == [0, 1, 2, 0, 1, 2] and rvq.frame.tolist() == [0, 0, 0, 1, 1, 1]
    # 3 scales, coarse first (SNAC-like): c0 m0 f0 f1 m1 f2 f3
    snac = interleave_order((LevelSpec(4, 8), LevelSpec(2, 8), LevelSpec(1, 8)), 4)
    assert snac.level.tolist() == [0, 1, 2, 2, 1, 2, 2] and snac.frame.tolist() == [0, 0, 0, 1, 1, 2, 3]
    # the level index breaks ties, whatever the rates: a slow level listed first comes first
    assert interleave_order((LevelSpec(320, 8), LevelSpec(160, 8)), 640).level.tolist() == [0, 1, 1, 0, 1, 1]


def test_level_schedule_is_the_rule_repeated(vocab: AudioVocab) -> None:
    assert vocab.level_schedule(7).tolist() == [0, 1, 0, 0, 1, 0, 0]
    for length in (1, 200, 320, 1000, 1601):
        order = interleave_order(vocab.levels, length).level
        assert torch.equal(vocab.level_schedule(len(order)), order)  # every item is a prefix of the schedule


# ------------------------------------------------------------------------------------------------------------
# Tokens <-> ids
def test_ids_layout_and_lookup(vocab: AudioVocab) -> None:
    base = len(tiny_chat_tokenizer())
    assert (vocab.audio_start_id, vocab.audio_end_id) == (base, base + 1)
    assert vocab.first_ids == (base + 2, base + 2 + 16)
    assert vocab.num_tokens == 2 + 16 + 32 and vocab.ids == list(range(base, base + 50))
    assert vocab.lookup(base + 2 + 16 + 31) == soundtok.llm.AudioCode(level=1, code=31)
    assert vocab.token_id(0, 5) == base + 7 and list(vocab.id_range(1)) == list(range(base + 18, base + 50))
    with pytest.raises(AudioTokenError):
        vocab.lookup(vocab.audio_start_id)  # a marker is not a code
    with pytest.raises(AudioTokenError):
        vocab.token_id(0, 16)
    assert vocab.tokens_per_second == 150.0


def test_round_trip_multi_rate(toy: AudioTokenizer, vocab: AudioVocab) -> None:
    lengths = [640, 2137, 161, 1]  # whole strides, a ragged end, just over one frame, a single sample
    tokens = encode(toy, lengths)
    flat = vocab.tokens_to_ids(tokens)
    for b, (ids, n) in enumerate(zip(flat, lengths, strict=True)):
        item = tokens.item(b)
        assert int(ids[0]) == vocab.audio_start_id and int(ids[-1]) == vocab.audio_end_id
        order = interleave_order(vocab.levels, n)
        assert len(ids) == len(order.level) + 2
        # every position holds the code of the frame the rule names
        level, code = vocab.split_ids(ids[1:-1])
        assert torch.equal(level, order.level)
        expected = torch.stack([item.codes[int(lv)][0, int(f)] for lv, f in zip(order.level, order.frame, strict=True)])
        assert torch.equal(code, expected)
        # exact inverse with the length; without it, the length rounds up to the next frame start
        assert vocab.ids_to_tokens(ids, length=n).equal(item)
        back = vocab.ids_to_tokens(ids[1:-1])  # markers are optional
        assert int(back.lengths[0]) == min(-(-n // h) * h for h in (160, 320)) >= n
        assert all(torch.equal(a, c) for a, c in zip(back.codes, item.codes, strict=True))
        assert toy.decode(back).shape[-1] == int(back.lengths[0])  # decodes with the tokenizer that made them
    # a batch goes back with Tokens.stack
    again = Tokens.stack([vocab.ids_to_tokens(ids, length=n) for ids, n in zip(flat, lengths, strict=True)])
    assert again.equal(tokens)


def test_refuses_tokens_of_another_tokenizer(vocab: AudioVocab) -> None:
    other = build("toy", ToyConfig(seed=1), name="toy-other")  # same levels, other weights -> other fingerprint
    with pytest.raises(TokenizerMismatchError, match="toy-other"):
        vocab.tokens_to_ids(encode(other, [640]))
    with pytest.raises(TokenizerMismatchError):
        vocab.tokens_to_ids(encode(soundtok.load("mulaw-8bit-8k"), [640]))


def test_refuses_malformed_sequences(toy: AudioTokenizer, vocab: AudioVocab) -> None:
    ids = vocab.tokens_to_ids(encode(toy, [960]))[0]  # <start> l0 l1 l0 l0 l1 l0 l0 l1 l0 <end>
    swapped = ids.clone()
    swapped[[1, 2]] = swapped[[2, 1]]
    with pytest.raises(AudioTokenError, match="position 0 holds a level-1 token"):
        vocab.ids_to_tokens(swapped)
    with pytest.raises(AudioTokenError, match="not an audio code"):
        vocab.ids_to_tokens(torch.cat([ids[:4], torch.tensor([7]), ids[4:]]))  # a text id inside
    with pytest.raises(AudioTokenError, match="not an audio code"):
        vocab.ids_to_tokens(ids[:-1])  # start marker without its end marker
    with pytest.raises(AudioTokenError, match="do not fit"):
        vocab.ids_to_tokens(ids[1:-1], length=320)  # 9 frames cannot be 320 samples
    with pytest.raises(AudioTokenError, match="do not fit"):
        vocab.ids_to_tokens(ids[1:3].tolist() + ids[4:6].tolist())  # l0 l1 l0 l1: a frame is missing
    with pytest.raises(AudioTokenError, match="at least one frame"):
        vocab.ids_to_tokens(ids[1:2])
    bad = encode(toy, [320])
    bad.codes[1][0, 0] = 32
    with pytest.raises(AudioTokenError, match="outside"):
        vocab.tokens_to_ids(bad)


# ------------------------------------------------------------------------------------------------------------
# the HF side: tokenizer, embeddings, saved mapping
def test_tokenizer_holds_the_audio_tokens(toy: AudioTokenizer) -> None:
    tok = tiny_chat_tokenizer()
    vocab = extend_vocab(None, tok, toy)
    assert tok.convert_ids_to_tokens([vocab.audio_start_id, vocab.audio_end_id, vocab.token_id(1, 3)]) == [
        AUDIO_START,
        AUDIO_END,
        "<|audio_1_3|>",
    ]
    # a string of audio tokens is matched whole, never split into text pieces
    assert tok("<|audio_0_15|><|audio_1_0|>", add_special_tokens=False)["input_ids"] == [
        vocab.token_id(0, 15),
        vocab.token_id(1, 0),
    ]
    with pytest.raises(CheckpointError, match="already holds audio tokens"):
        extend_vocab(None, tok, toy)


@pytest.mark.parametrize("tied", [True, False])
def test_embedding_rows_initialised_at_the_mean(toy: AudioTokenizer, tied: bool) -> None:
    tok = tiny_chat_tokenizer()
    old_rows = len(tok)
    model = tiny_causal_lm(old_rows, tie_word_embeddings=tied)
    if not tied:  # make the head's statistics differ from the embeddings'
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(3.0).add_(1.0)
    before_in = model.get_input_embeddings().weight.detach().clone()
    before_out = model.get_output_embeddings().weight.detach().clone()
    text = torch.tensor([[1, 7, 3, 11, 4, 18, 2]])
    with torch.no_grad():
        logits_before = model(text).logits

    vocab = extend_vocab(model, tok, toy, init="mean", noise_scale=0.1, seed=0)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert emb.shape[0] == head.shape[0] == len(tok) == old_rows + 50
    assert (head is emb) == tied
    new = vocab.ids
    for after, before in ((emb, before_in), (head, before_out)):
        assert torch.equal(after[:old_rows], before)  # old rows untouched
        mean, std = before.mean(0), before.std(0)
        z = (after[new] - mean) / (0.1 * std)  # should be standard normal noise
        assert z.mean().abs() < 0.1 and 0.9 < z.std() < 1.1
        assert torch.unique(after[new], dim=0).shape[0] == len(new)  # rows are distinct
    with torch.no_grad():
        logits_after = model(text).logits
    assert torch.allclose(logits_after[..., :old_rows], logits_before, atol=1e-6)  # text logits unchanged
    # every new token's logit is close to the average old logit, so none takes over the next-token distribution
    spread = (logits_after[..., new] - logits_before.mean(-1, keepdim=True)).abs().amax(-1)  # [1, T]
    assert (spread < 0.5 * logits_before.std(-1)).all()


@pytest.mark.parametrize("init", ["random", "codebook"])
def test_audio_rows_spread_like_text_rows(toy: AudioTokenizer, init: str) -> None:
    """``random`` and ``codebook`` give audio-code rows the old rows' per-dimension mean and spread (so they differ
    as much as words do); ``codebook`` also keeps the codes' geometry; markers keep the mean init."""
    tok = tiny_chat_tokenizer()
    model = tiny_causal_lm(len(tok))
    before = model.get_input_embeddings().weight.detach().clone()
    vocab = extend_vocab(model, tok, toy, init=init, seed=0)
    emb = model.get_input_embeddings().weight.detach()
    assert torch.equal(emb[: len(before)], before)
    mean, std = before.mean(0), before.std(0)
    for level, size in enumerate(toy.codebook_sizes):
        rows = emb[vocab.first_ids[level] : vocab.first_ids[level] + size]  # [N, D]
        z = (rows - mean) / std
        assert z.mean().abs() < 0.3 and 0.7 < z.std() < 1.3, (level, float(z.mean()), float(z.std()))
        # distances between codes: kept by codebook (up to the per-dimension scales), unrelated for random
        codes = toy.code_vectors(level)
        assert codes is not None
        pairs = torch.triu_indices(size, size, offset=1)
        d_code = torch.cdist(codes, codes)[pairs[0], pairs[1]]
        d_row = torch.cdist(rows, rows)[pairs[0], pairs[1]]
        r = torch.corrcoef(torch.stack([d_code, d_row]))[0, 1]
        assert (r > 0.6) if init == "codebook" else (abs(r) < 0.3), (level, float(r))
    markers = emb[[vocab.audio_start_id, vocab.audio_end_id]]
    assert ((markers - mean).abs() < 0.6 * std).all()  # mean + 0.1 std noise
    # the same seed gives the same rows (a resumed run or an adapter rebuilds them)
    again = tiny_causal_lm(len(before))
    again.get_input_embeddings().weight.data.copy_(before)
    extend_vocab(again, tiny_chat_tokenizer(), toy, init=init, seed=0)
    assert torch.equal(again.get_input_embeddings().weight.detach(), emb)


def test_untie_keeps_text_predictions_with_codebook_rows(tmp_path: Path, toy: AudioTokenizer) -> None:
    """``untie=True``: a tied model gets its own head (a copy), the input's audio rows follow ``init`` while the
    head's get the mean init, so text logits are unchanged and every audio id's logit stays near the average one;
    saved and reloaded, the two stay apart. Without it the same codebook rows stray far from it (the leak it fixes)."""
    from transformers import AutoModelForCausalLM

    from soundtok.llm import untie_output_embeddings

    text = torch.tensor([[1, 7, 3, 11, 4, 18, 2]])

    def audio_spread(model: torch.nn.Module, vocab: AudioVocab) -> float:
        """How far the audio ids' logits stray from the mean text logit, in text-logit standard deviations."""
        with torch.no_grad():
            logits = model(text).logits  # [1, T, V]
        old = logits[..., : min(vocab.ids)]
        return float(((logits[..., vocab.ids] - old.mean(-1, keepdim=True)).abs().amax(-1) / old.std(-1)).max())

    tok = tiny_chat_tokenizer()
    model = tiny_causal_lm(len(tok))
    before = model.get_input_embeddings().weight.detach().clone()
    with torch.no_grad():
        logits_before = model(text).logits
    vocab = extend_vocab(model, tok, toy, init="codebook", untie=True, seed=0)
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert head is not emb and not model.config.tie_word_embeddings
    assert torch.equal(head[: len(before)], before) and torch.equal(emb[: len(before)], before)
    mean, std = before.mean(0), before.std(0)
    assert ((head[vocab.ids] - mean).abs() < 0.6 * std).all()  # the head's new rows: mean + 0.1 std noise
    assert ((emb[vocab.ids[2:]] - mean) / std).std() > 0.7  # the input's code rows: spread like words
    with torch.no_grad():
        logits_after = model(text).logits
    assert torch.allclose(logits_after[..., : len(before)], logits_before, atol=1e-6)
    tied = tiny_causal_lm(len(before))
    tied_vocab = extend_vocab(tied, tiny_chat_tokenizer(), toy, init="codebook", seed=0)
    spread, tied_spread = audio_spread(model, vocab), audio_spread(tied, tied_vocab)
    assert spread < 0.5 < tied_spread, (spread, tied_spread)

    model.save_pretrained(tmp_path / "m")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "m", local_files_only=True)
    assert again.get_output_embeddings().weight is not again.get_input_embeddings().weight
    assert torch.equal(again.get_output_embeddings().weight, head)
    assert torch.equal(again.get_input_embeddings().weight, emb)
    assert untie_output_embeddings(again) is False  # already untied: left as it is


def test_bad_init_is_named(toy: AudioTokenizer) -> None:
    from soundtok.llm.vocab import resize_embeddings

    tok = tiny_chat_tokenizer()
    with pytest.raises(ValueError, match="init must be one of"):
        extend_vocab(tiny_causal_lm(len(tok)), tok, toy, init="zeros")
    vocab = extend_vocab(None, tiny_chat_tokenizer(), toy)
    model = tiny_causal_lm(len(tok))
    with pytest.raises(ValueError, match="one entry per level"):
        resize_embeddings(model, vocab, init="codebook")
    with pytest.raises(ValueError, match=r"code_vectors\[0\] must be \[16, d\]"):
        resize_embeddings(model, vocab, init="codebook", code_vectors=[torch.zeros(3, 4), None])


def test_padded_embedding_matrix(toy: AudioTokenizer) -> None:
    """A model with more rows than its tokenizer has tokens (padded vocab): ids start at len(tokenizer)."""
    tok = tiny_chat_tokenizer()
    model = tiny_causal_lm(len(tok) + 20)
    before = model.get_input_embeddings().weight.detach().clone()
    vocab = extend_vocab(model, tok, toy, init="mean", pad_to_multiple_of=64)
    emb = model.get_input_embeddings().weight
    assert vocab.audio_start_id == len(tok) - 50 and emb.shape[0] % 64 == 0 and emb.shape[0] >= len(tok)
    assert torch.equal(emb[: vocab.audio_start_id], before[: vocab.audio_start_id])
    mean = before[: vocab.audio_start_id].mean(0)
    assert (emb[vocab.ids] - mean).abs().max() < 1.0 * before[: vocab.audio_start_id].std(0).max()


def test_vocab_saved_and_loaded(tmp_path: Path, toy: AudioTokenizer) -> None:
    tok = tiny_chat_tokenizer()
    vocab = extend_vocab(None, tok, toy)
    tok.save_pretrained(tmp_path)
    vocab.save(tmp_path)
    with pytest.raises(OutputExistsError):
        vocab.save(tmp_path)
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert AudioVocab.load(tmp_path, reloaded) == vocab
    with pytest.raises(CheckpointError, match="expects"):
        AudioVocab.load(tmp_path, tiny_chat_tokenizer())  # a tokenizer without the audio tokens
    (tmp_path / "audio_vocab.json").write_text('{"format": "soundtok-audio-vocab", "version": 1}')
    with pytest.raises(CheckpointError, match="not a valid audio vocabulary"):
        AudioVocab.load(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        AudioVocab.load(tmp_path / "nowhere")
