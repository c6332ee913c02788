"""Generation: text answers, and audio answers decoded under the audio vocabulary's grammar.

Definitions
-----------
Both start from the conversation rendered by :class:`~soundtok.llm.prompt.PromptFormat` with
``add_generation_prompt=True`` (the ids an answer follows) and run one causal-LM loop with a key/value cache.

*Text answers* (:func:`generate_text`): greedy by default (``temperature`` 0), or sampled. Audio ids (codes and
markers) and embedding rows beyond the tokenizer's vocabulary are masked out, so a text answer is always text. It
stops at the first *stop id* (the tokenizer's eos and the end-of-turn tokens ``<|im_end|>``, ``<end_of_turn>``,
``<|eot_id|>`` that its vocabulary holds), which is not part of the answer, or after ``max_new_tokens``.

*Audio answers* (:func:`generate_audio`): ``<|audio_start|>`` is appended (forced), then each position ``i``
may only take a code of the level the interleaving rule puts there
(:meth:`~soundtok.llm.vocab.AudioVocab.level_schedule`); ``<|audio_end|>`` is allowed only where the sequence so
far is a whole item, i.e. right after the last token of a group of frames that start at the same sample (for an
RVQ tokenizer: after the last level of a frame). Every sequence the loop can emit therefore maps back to
:class:`~soundtok.types.Tokens` (:meth:`AudioVocab.ids_to_tokens`), which the audio tokenizer decodes. At
``max_seconds`` the item is closed at that point (the end marker is then appended, not sampled). Codes are
sampled (``temperature``, optionally ``top_k``) from a ``torch.Generator`` seeded by ``seed``: the same seed gives
the same audio.

>>> import soundtok, soundtok.testing.dummies
>>> from soundtok.llm import Turn, extend_vocab
>>> from soundtok.llm.dummies import tiny_causal_lm, tiny_chat_tokenizer
>>> from soundtok.llm.prompt import PromptFormat
>>> toy = soundtok.load("toy-tiny")
>>> tok = tiny_chat_tokenizer(); model = tiny_causal_lm(len(tok))
>>> fmt = PromptFormat(tok, extend_vocab(model, tok, toy))
>>> out = generate_audio(model, fmt, [Turn.user("say hello")], max_seconds=0.05, seed=0)
>>> out.tokens.batch_size, out.seconds <= 0.05, int(out.ids[0]) == fmt.vocab.audio_start_id
(1, True, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from soundtok.errors import SoundtokError
from soundtok.llm.vocab import interleave_order
from soundtok.types import Tokens

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from soundtok.llm.prompt import PromptFormat, Turn
    from soundtok.llm.vocab import AudioVocab

#: end-of-turn tokens of common chat templates (ChatML, Gemma, Llama 3); those the vocabulary holds stop a text answer
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>")


class GenerationError(SoundtokError, ValueError):
    """Generation cannot start (no audio vocabulary for an audio answer, a bad setting)."""


@dataclass(frozen=True)
class TextAnswer:
    text: str
    ids: torch.Tensor  # [n] the generated ids, stop id excluded
    stopped: bool  # a stop id ended it (False: max_new_tokens ran out)


@dataclass(frozen=True)
class AudioAnswer:
    tokens: Tokens  # one item
    ids: torch.Tensor  # [n] the generated ids, both markers included
    ended: bool  # the model chose <|audio_end|> (False: max_seconds closed it)

    @property
    def seconds(self) -> float:
        return float(self.tokens.lengths[0]) / self.tokens.sample_rate


def stop_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids that end a text answer: eos plus the end-of-turn tokens of :data:`END_OF_TURN_TOKENS` the
    vocabulary holds."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
    return sorted(ids)


class _Decoder:
    """One causal-LM pass per new id, with the key/value cache: ``step(id) -> logits [V]`` of the next position."""

    def __init__(self, model: PreTrainedModel, prompt: torch.Tensor) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.past: Any = None
        self.logits = self._forward(prompt)

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids[None].to(self.device), past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        return out.logits[0, -1].float()  # [V]

    def step(self, token_id: int) -> torch.Tensor:
        self.logits = self._forward(torch.tensor([token_id]))
        return self.logits


def _pick(logits: torch.Tensor, temperature: float, top_k: int, gen: torch.Generator) -> int:
    """Greedy when ``temperature`` is 0, else a draw from ``softmax(logits / temperature)`` over the ``top_k``
    best (all when 0). ``logits`` are ``[V]`` with -inf where forbidden."""
    if temperature == 0:
        return int(logits.argmax())
    scaled = logits / temperature
    if top_k > 0:
        kth = torch.topk(scaled, min(top_k, int(torch.isfinite(scaled).sum()))).values[-1]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    probs = torch.softmax(scaled.cpu(), dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


def _check(temperature: float, top_k: int) -> None:
    if temperature < 0 or not math.isfinite(temperature):
        raise GenerationError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise GenerationError(f"top_k must be >= 0 (0 = no limit), got {top_k}")


def _start(
    model: PreTrainedModel,
    fmt: PromptFormat,
    turns: Sequence[Turn],
    temperature: float,
    top_k: int,
    seed: int,
    forced: Sequence[int] = (),
) -> tuple[_Decoder, torch.Generator]:
    """Check the sampling settings, run the prompt (plus ``forced`` ids) through the model, seed the sampler."""
    _check(temperature, top_k)
    prompt = fmt.render(turns, add_generation_prompt=True).input_ids
    ids = torch.cat([prompt, torch.tensor(list(forced), dtype=torch.long)])
    return _Decoder(model, ids), torch.Generator().manual_seed(seed)


@torch.no_grad()
def generate_text(
    model: PreTrainedModel,
    fmt: PromptFormat,
    turns: Sequence[Turn],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
) -> TextAnswer:
    """The model's text answer to ``turns`` (module docstring)."""
    decoder, gen = _start(model, fmt, turns, temperature, top_k, seed)
    banned = torch.tensor(fmt.vocab.ids if fmt.vocab is not None else [], dtype=torch.long)
    stops = set(stop_ids(fmt.tokenizer))
    out: list[int] = []
    logits = decoder.logits
    for _ in range(max_new_tokens):
        logits = logits.clone()
        logits[banned.to(logits.device)] = -math.inf
        logits[len(fmt.tokenizer) :] = -math.inf  # rows that pad the embedding beyond the vocabulary
        token = _pick(logits, temperature, top_k, gen)
        if token in stops:
            return _text_answer(fmt.tokenizer, out, stopped=True)
        out.append(token)
        logits = decoder.step(token)
    return _text_answer(fmt.tokenizer, out, stopped=False)


def _text_answer(tokenizer: PreTrainedTokenizerBase, ids: list[int], *, stopped: bool) -> TextAnswer:
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return TextAnswer(str(text).strip(), torch.tensor(ids, dtype=torch.long), stopped)


def _grammar(vocab: AudioVocab, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``level [n]`` of each audio position and ``can_end [n + 1]``: whether ``<|audio_end|>`` may follow ``i``
    codes (the frames so far form a whole item: position ``i`` starts a later sample than position ``i - 1``)."""
    per_period = sum(vocab.stride // s.hop_length for s in vocab.levels)
    periods = max(1, -(-(num_tokens + 1) // per_period))
    order = interleave_order(vocab.levels, periods * vocab.stride)
    hops = torch.tensor([s.hop_length for s in vocab.levels])
    start = order.frame * hops[order.level]  # [N] first sample of each position's frame
    can_end = torch.zeros(num_tokens + 1, dtype=torch.bool)
    can_end[1:] = start[1 : num_tokens + 1] != start[:num_tokens]
    return order.level[:num_tokens], can_end


@torch.no_grad()
def generate_audio(
    model: PreTrainedModel,
    fmt: PromptFormat,
    turns: Sequence[Turn],
    *,
    max_seconds: float = 5.0,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> AudioAnswer:
    """An audio answer to ``turns``, decoded under the interleaving grammar (module docstring)."""
    vocab = fmt.vocab
    if vocab is None:
        raise GenerationError("an audio answer needs the PromptFormat's audio vocabulary (PromptFormat(tok, vocab))")
    if not max_seconds > 0:
        raise GenerationError(f"max_seconds must be > 0, got {max_seconds}")
    # the most codes an item of max_seconds holds (frames starting before its end, every level)
    limit = len(interleave_order(vocab.levels, max(1, int(max_seconds * vocab.sample_rate))).level)
    levels, can_end = _grammar(vocab, limit)
    allowed = [torch.tensor(vocab.id_range(lv)) for lv in range(len(vocab.levels))]

    decoder, gen = _start(model, fmt, turns, temperature, top_k, seed, forced=[vocab.audio_start_id])
    codes: list[int] = []
    ended = False
    logits = decoder.logits
    while len(codes) < limit:
        i = len(codes)
        choices = allowed[int(levels[i])]
        if can_end[i]:
            choices = torch.cat([choices, torch.tensor([vocab.audio_end_id])])
        masked = torch.full_like(logits, -math.inf)
        index = choices.to(logits.device)
        masked[index] = logits[index]
        token = _pick(masked, temperature, top_k, gen)
        if token == vocab.audio_end_id:
            ended = True
            break
        codes.append(token)
        logits = decoder.step(token)
    if not ended:  # closed at max_seconds: keep the codes up to the last whole item
        keep = int(can_end[: len(codes) + 1].nonzero().max())
        codes = codes[:keep]
    ids = torch.tensor([vocab.audio_start_id, *codes, vocab.audio_end_id], dtype=torch.long)
    return AudioAnswer(vocab.ids_to_tokens(ids), ids, ended)


__all__ = [
    "END_OF_TURN_TOKENS",
    "AudioAnswer",
    "GenerationError",
    "TextAnswer",
    "generate_audio",
    "generate_text",
    "stop_ids",
]
