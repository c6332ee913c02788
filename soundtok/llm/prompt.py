"""The prompt format, in one place: chat turns of text and audio -> ``input_ids`` and per-token ``loss_weights``.

Definitions
-----------
A conversation is a list of :class:`Turn` (``role``, ``parts``); a part is text (:class:`TextPart`) or one item of
audio tokens (:class:`AudioPart`). Turns whose role is in ``answer_roles`` (default: ``"assistant"``) are
*answers*; everything else is *prompt*.

Rendering, for any HF tokenizer with a chat template:

1. Each turn's content is its parts joined, every audio part replaced by a placeholder of private-use characters
   that no text holds; the HF chat template renders the conversation to one string.
2. An answer's span is what the template adds for it: ``template(turns[:k+1])`` minus
   ``template(turns[:k], add_generation_prompt=True)``, i.e. its content followed by the template's end of turn
   (``<|im_end|>\\n`` for ChatML). The span without its trailing whitespace is supervised; the trailing whitespace
   (the newline after ``<|im_end|>``) is not, since generation stops at the end-of-turn token. Templates whose
   renderings are not prefixes of each other (ones that rewrite earlier turns) are refused.
3. The string is cut at every placeholder and span boundary; each text piece is tokenized on its own
   (``add_special_tokens=False``; special-token strings of the template, such as ``<|im_start|>``, become their
   ids), and each placeholder is replaced by the audio ids of :meth:`AudioVocab.tokens_to_ids`
   (``<|audio_start|>``, interleaved codes, ``<|audio_end|>``). The text tokenizer never sees an audio token
   string, and text that would tokenize to an audio id is refused. Cutting at the answer's start tokenizes the
   prompt exactly as it is tokenized at generation time.

Each id gets a :class:`TokenKind` and its weight from :class:`LossWeights`:

============= ============================================================================ ============
kind          which ids                                                                    default
============= ============================================================================ ============
PROMPT        template scaffolding, system/user text, role headers, whitespace after an     0
              answer's end of turn
PROMPT_AUDIO  audio in a prompt turn, markers included                                      0 (prompt)
ANSWER_TEXT   an answer's text and its end-of-turn token (e.g. ``<|im_end|>``)              1
ANSWER_AUDIO  an answer's audio ids, its ``<|audio_start|>`` / ``<|audio_end|>`` included    10
============= ============================================================================ ============

``loss_weights[i]`` weighs ``input_ids[i]`` as a *target* (predicted from positions ``< i``); shift by one as for
HF ``labels`` (:attr:`Rendered.labels` gives ``-100`` where the weight is 0).

>>> from soundtok.llm.dummies import tiny_chat_tokenizer
>>> r = render([Turn.user("what is this ?"), Turn.assistant("a dog .")], tiny_chat_tokenizer())
>>> [(t, w) for t, w in zip(r.tokens(tiny_chat_tokenizer()), r.loss_weights.tolist()) if w > 0]
[('a', 1.0), (' ', 1.0), ('dog', 1.0), (' ', 1.0), ('.', 1.0), ('<|im_end|>', 1.0)]
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from soundtok.errors import SoundtokError
from soundtok.types import Tokens

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from soundtok.llm.vocab import AudioVocab

#: a ChatML template (SmolLM2's without its default system prompt), for tokenizers that have no template
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_PH_OPEN, _PH_CLOSE = "\ue000", "\ue001"  # Unicode private-use characters delimit audio placeholders


class PromptFormatError(SoundtokError, ValueError):
    """A conversation cannot be rendered (no chat template, a template that rewrites turns, audio strings in text)."""


class TokenKind(enum.IntEnum):
    """What one rendered id is (module docstring)."""

    PROMPT = 0
    PROMPT_AUDIO = 1
    ANSWER_TEXT = 2
    ANSWER_AUDIO = 3


@dataclass(frozen=True)
class LossWeights:
    """Per-token loss weight of each :class:`TokenKind`; prompt audio is prompt."""

    prompt: float = 0.0
    text: float = 1.0
    audio: float = 10.0

    def of(self, kind: TokenKind) -> float:
        return {
            TokenKind.PROMPT: self.prompt,
            TokenKind.PROMPT_AUDIO: self.prompt,
            TokenKind.ANSWER_TEXT: self.text,
            TokenKind.ANSWER_AUDIO: self.audio,
        }[kind]


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class AudioPart:
    """One item of audio tokens (``tokens.batch_size == 1``)."""

    tokens: Tokens

    def __post_init__(self) -> None:
        if self.tokens.batch_size != 1:
            raise ValueError(f"an audio part holds one item, got a batch of {self.tokens.batch_size}; use .item(i)")


Part = TextPart | AudioPart


@dataclass(frozen=True)
class Turn:
    """One chat message. ``parts`` may also be given as ``str`` / ``Tokens`` (converted to parts).

    ``supervise`` overrides whether this turn is an answer (default: its role is one of the format's answer roles),
    e.g. ``False`` for in-context examples that should not be trained on.
    """

    role: str
    parts: tuple[Part, ...]
    supervise: bool | None = None

    def __post_init__(self) -> None:
        raw: Sequence[object] = (
            (self.parts,) if isinstance(self.parts, str | Tokens | TextPart | AudioPart) else self.parts
        )
        parts: list[Part] = []
        for p in raw:
            if isinstance(p, str):
                parts.append(TextPart(p))
            elif isinstance(p, Tokens):
                parts.append(AudioPart(p))
            elif isinstance(p, TextPart | AudioPart):
                parts.append(p)
            else:
                raise TypeError(f"a turn's parts are str, Tokens, TextPart or AudioPart, got {type(p).__name__}")
        object.__setattr__(self, "parts", tuple(parts))

    @classmethod
    def of(cls, role: str, *parts: str | Tokens | Part, supervise: bool | None = None) -> Turn:
        return cls(role, tuple(TextPart(p) if isinstance(p, str) else _audio(p) for p in parts), supervise)

    @classmethod
    def system(cls, *parts: str | Tokens | Part) -> Turn:
        return cls.of("system", *parts)

    @classmethod
    def user(cls, *parts: str | Tokens | Part) -> Turn:
        return cls.of("user", *parts)

    @classmethod
    def assistant(cls, *parts: str | Tokens | Part, supervise: bool | None = None) -> Turn:
        return cls.of("assistant", *parts, supervise=supervise)


def _audio(p: Tokens | Part) -> Part:
    return AudioPart(p) if isinstance(p, Tokens) else p


@dataclass(frozen=True)
class Rendered:
    """One rendered conversation. ``input_ids``, ``loss_weights``, ``kinds`` are ``[N]`` (int64, float32, int8)."""

    input_ids: torch.Tensor
    loss_weights: torch.Tensor  # weight of input_ids[i] as a target
    kinds: torch.Tensor  # TokenKind per id
    text: str = field(repr=False)  # the template's string, each audio part shown as <audio: n ids>

    @property
    def supervised(self) -> torch.Tensor:
        """``[N]`` bool: the id is a target with non-zero weight."""
        return self.loss_weights > 0

    @property
    def labels(self) -> torch.Tensor:
        """``[N]`` HF-style labels: the id where supervised, ``-100`` elsewhere."""
        return torch.where(self.supervised, self.input_ids, torch.full_like(self.input_ids, -100))

    def tokens(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        """The token string of every id (for reading and tests)."""
        return list(tokenizer.convert_ids_to_tokens(self.input_ids.tolist()))


class PromptFormat:
    """Renders conversations for one HF tokenizer (+ audio vocabulary): see the module docstring.

    ``chat_template`` overrides the tokenizer's template (e.g. :data:`CHATML_TEMPLATE` for a base model that has
    none).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        vocab: AudioVocab | None = None,
        *,
        weights: LossWeights | None = None,
        answer_roles: Sequence[str] = ("assistant",),
        chat_template: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.weights = weights or LossWeights()
        self.answer_roles = tuple(answer_roles)
        self.chat_template = chat_template
        if chat_template is None and not getattr(tokenizer, "chat_template", None):
            raise PromptFormatError(
                "this tokenizer has no chat template; pass chat_template= (soundtok.llm.prompt.CHATML_TEMPLATE is a "
                "plain ChatML one)"
            )
        if vocab is not None:
            vocab.check_tokenizer(tokenizer)
        self._audio_ids = torch.tensor(vocab.ids) if vocab is not None else torch.empty(0, dtype=torch.long)

    def is_answer(self, turn: Turn) -> bool:
        return turn.supervise if turn.supervise is not None else turn.role in self.answer_roles

    def render(self, turns: Sequence[Turn], *, add_generation_prompt: bool = False) -> Rendered:
        """``input_ids`` and ``loss_weights`` of ``turns``; ``add_generation_prompt`` ends with the header an
        answer follows (for generation; every weight is then 0 unless earlier turns are answers)."""
        if not turns:
            raise PromptFormatError("nothing to render: the conversation has no turns")
        if add_generation_prompt and self.is_answer(turns[-1]):
            raise PromptFormatError("add_generation_prompt=True asks for an answer, but the last turn already is one")
        messages, audio = self._messages(turns)
        full = self._template(messages, add_generation_prompt)

        spans = []  # [start, end) in `full` of each answer's supervised text
        for k, turn in enumerate(turns):
            if not self.is_answer(turn):
                continue
            before = self._template(messages[:k], True)
            through = self._template(messages[: k + 1], False)
            if not through.startswith(before) or not full.startswith(through):
                raise PromptFormatError(
                    f"the chat template renders turn {k} differently once later turns follow it (or its generation "
                    "prompt is not the start of the answer), so answers cannot be located; pass a chat_template "
                    "that renders each turn independently"
                )
            spans.append((len(before), len(before) + len(through[len(before) :].rstrip())))

        cuts = {0, len(full)}
        for start, end in spans:
            cuts |= {start, end}
        where: dict[int, int] = {}  # placeholder start -> audio part index
        for i in range(len(audio)):
            ph = _placeholder(i)
            if full.count(ph) != 1:
                raise PromptFormatError(f"the chat template dropped or repeated audio part {i}")
            start = full.index(ph)
            where[start] = i
            cuts |= {start, start + len(ph)}

        ids: list[torch.Tensor] = []
        kinds: list[TokenKind] = []
        text = full
        bounds = sorted(cuts)
        for a, b in zip(bounds, bounds[1:], strict=False):
            answer = any(s <= a and b <= e for s, e in spans)
            if a in where:
                piece = audio[where[a]]
                ids.append(piece)
                kinds += [TokenKind.ANSWER_AUDIO if answer else TokenKind.PROMPT_AUDIO] * len(piece)
                text = text.replace(_placeholder(where[a]), f"<audio: {len(piece)} ids>")
                continue
            piece = torch.tensor(self.tokenizer(full[a:b], add_special_tokens=False)["input_ids"], dtype=torch.long)
            if self._audio_ids.numel() and bool(torch.isin(piece, self._audio_ids).any()):
                raise PromptFormatError(
                    f"text {full[a:b]!r} holds audio token strings; audio must come as AudioPart (Tokens), not text"
                )
            ids.append(piece)
            kinds += [TokenKind.ANSWER_TEXT if answer else TokenKind.PROMPT] * len(piece)
        weight_of = torch.tensor([self.weights.of(k) for k in TokenKind], dtype=torch.float32)
        kind_t = torch.tensor([int(k) for k in kinds], dtype=torch.int8)
        return Rendered(torch.cat(ids), weight_of[kind_t.long()], kind_t, text)

    def _messages(self, turns: Sequence[Turn]) -> tuple[list[dict[str, str]], list[torch.Tensor]]:
        """Chat-template messages with audio placeholders, and the flat ids ``[n_i]`` of each audio part."""
        messages: list[dict[str, str]] = []
        audio: list[torch.Tensor] = []
        for turn in turns:
            content = []
            for part in turn.parts:
                if isinstance(part, TextPart):
                    if _PH_OPEN in part.text or _PH_CLOSE in part.text:
                        raise PromptFormatError("text parts must not hold the characters U+E000 / U+E001")
                    content.append(part.text)
                else:
                    if self.vocab is None:
                        raise PromptFormatError("this conversation holds audio; build the PromptFormat with its vocab")
                    content.append(_placeholder(len(audio)))
                    audio.append(self.vocab.tokens_to_ids(part.tokens)[0])
            messages.append({"role": turn.role, "content": "".join(content)})
        return messages, audio

    def _template(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        out = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=self.chat_template
        )
        if not isinstance(out, str):
            raise PromptFormatError(f"the chat template gave {type(out).__name__}, not text")
        return out


def _placeholder(index: int) -> str:
    return f"{_PH_OPEN}soundtok-audio-{index}{_PH_CLOSE}"


def render(
    turns: Sequence[Turn],
    tokenizer: PreTrainedTokenizerBase,
    vocab: AudioVocab | None = None,
    *,
    weights: LossWeights | None = None,
    add_generation_prompt: bool = False,
) -> Rendered:
    """Shorthand for ``PromptFormat(tokenizer, vocab, weights=weights).render(turns, ...)``."""
    return PromptFormat(tokenizer, vocab, weights=weights).render(turns, add_generation_prompt=add_generation_prompt)
