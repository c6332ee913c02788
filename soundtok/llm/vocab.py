"""Audio tokens in a language model's vocabulary: one new token per (level, code), two markers, and the mapping back.

Definitions
-----------
*Audio vocabulary.* For a soundtok tokenizer with levels ``l = 0..L-1`` of codebook sizes ``N_l``, the LLM's text
tokenizer gets ``2 + sum_l N_l`` new special tokens, added in this order so their ids are contiguous:

    <|audio_start|>, <|audio_end|>, <|audio_0_0|> .. <|audio_0_{N_0-1}|>, <|audio_1_0|> .. , <|audio_{L-1}_{N_{L-1}-1}|>

so code ``c`` of level ``l`` has id ``first_id[l] + c``. :class:`AudioVocab` records the tokenizer that made the
codes (family, name, fingerprint), its sample rate and levels, ``first_id`` per level and the two marker ids; it is
saved as ``audio_vocab.json`` beside the extended HF tokenizer and refuses tokens of any other tokenizer
(:class:`~soundtok.errors.TokenizerMismatchError`).

*Interleaving* (how the levels of one item become one flat sequence). Frame ``f`` of level ``l`` covers the
samples ``[f * hop_l, (f + 1) * hop_l)``; it is in the sequence iff it starts inside the item
(``f * hop_l < length``, i.e. ``f < ceil(length / hop_l)``, exactly the frames :class:`~soundtok.types.Tokens`
holds). The frames are ordered by **start sample, then level index**::

    key(l, f) = (f * hop_l, l)        sequence = frames sorted by key, ascending

Same-rate levels (RVQ) give frame-major order ``t0: l0 l1 .. l7, t1: l0 .. l7``; the two-rate ``toy-tiny`` (hops
160, 320) gives ``l0 l1 l0 | l0 l1 l0 | ..``; a 3-scale SNAC-like tokenizer (hops 4h, 2h, h) gives the coarse
token first, then its finer children depth-first: ``c0 m0 f0 f1 m1 f2 f3`` (the order Orpheus-style LMs use).
The sequence of one item is a prefix of one infinite periodic schedule (period: the LCM of the hops), so a
generator always knows the level of the next token (:meth:`AudioVocab.level_schedule`). Inversion: each id names
its level, so level ``l``'s codes are its ids in order; the frame counts ``n_l`` give back the length
``min_l n_l * hop_l`` (the original length rounded up to the next frame start; pass ``length`` for the exact one),
and a sequence whose level order differs from the rule for that length is refused.

*Initialisation of the new embedding rows.* ``mu`` and ``sigma`` are the per-dimension mean and standard deviation of
the existing rows, ``z ~ N(0, I)``. The two markers, padding rows, and the new rows of an output head that is not
tied to the input embeddings are ``mu + noise_scale * sigma * z`` (Hewitt 2021, "Initializing new word embeddings
for pretrained language models"; ``noise_scale`` 0.1): every new token's logit is then about the average logit, so
the new tokens take almost no probability mass and the model's text predictions barely move. The audio codes' input
rows follow ``init``:

* ``mean``: the same ``mu + noise_scale * sigma * z``. The rows are nearly one vector: on SmolLM2-135M with msn-16k
  their mean pairwise cosine is 0.988 (text rows: 0.44), and still 0.981 after the 1000-step LoRA run, which did not
  use the audio (``benchmarks/audio_swap.py``).
* ``random``: ``mu + sigma * z``, rows as far apart as words are (cosine 0.449), unrelated to what the codes mean.
* ``codebook``: ``mu + sigma * x``, ``x`` the tokenizer's code vectors (:meth:`AudioTokenizer.code_vectors`: the
  codebook entry as the decoder receives it, a k-means centroid) centred, through a random Gaussian projection to the
  embedding width and standardised per dimension. As far apart as words (cosine 0.488), and codes that are close in
  the tokenizer start close: 73% of the msn-16k codes keep their nearest neighbour. A level without code vectors
  falls back to ``random``.

:func:`extend_vocab` and the recipe use ``codebook`` by default. In a 200-step pilot on the same batches (SmolLM2,
msn-16k, audio loss weight 1), it lowered the held-out loss of text-to-audio answers from 9.71 (``mean``) to 7.20
nats per audio id (a uniform guess over 8,192 codes: 9.01), and left the text answers' loss about where it was;
neither run used the audio yet (``benchmarks/results/audio_swap_init_pilot.md``).

With tied embeddings (SmolLM2) the input rows are also the output rows, so before training ``random`` and
``codebook`` rows take 0.42 and 0.51 of the next-token probability at the positions of a short chat (``mean``:
1.4e-4; 0.34 with ``noise_scale`` 1 on all 8,192 rows, KL 1.3 nats). ``generate_text`` masks audio ids, but
training does not remove the leak: after the 1000-step run with ``codebook`` rows, audio ids still hold about 44% of
the probability on plain held-out text (``benchmarks/results/audio_llm.md``). ``untie=True``
(:func:`untie_output_embeddings`) gives such a model its own output head first, a copy of the embedding (for
SmolLM2-135M, 28M more parameters): the audio rows of the input then follow ``init`` while those of the head get the
mean init above, so text predictions stay where they were, as for a model whose head was never tied (Vicuna, the
paper's LLM). On SmolLM2-135M with msn-16k ``codebook`` rows, the audio ids' share of the next-token probability over
a plain English sentence is 0.76 tied and 1.6e-4 untied, with the same input rows (cosine 0.48).

>>> from soundtok.types import LevelSpec
>>> order = interleave_order((LevelSpec(160, 16), LevelSpec(320, 32)), length=640)
>>> order.level.tolist(), order.frame.tolist()
([0, 1, 0, 0, 1, 0], [0, 0, 1, 2, 1, 3])
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from soundtok.errors import CheckpointError, SoundtokError
from soundtok.fileio import atomic_write
from soundtok.types import LevelSpec, TokenizerId, Tokens, frames_for

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

AUDIO_START = "<|audio_start|>"
AUDIO_END = "<|audio_end|>"
#: the text of code ``code`` of level ``level``
AUDIO_TOKEN_FORMAT = "<|audio_{level}_{code}|>"
VOCAB_FILE = "audio_vocab.json"
_FORMAT = "soundtok-audio-vocab"
_VERSION = 1


class AudioTokenError(SoundtokError, ValueError):
    """A flat id sequence is not valid audio for this vocabulary (a text id inside, wrong level order, ...)."""


def audio_token(level: int, code: int) -> str:
    """The token string of ``code`` at ``level``: ``<|audio_{level}_{code}|>``."""
    return AUDIO_TOKEN_FORMAT.format(level=level, code=code)


class _AudioSource(Protocol):
    """What the vocabulary needs to know about a tokenizer (an ``AudioTokenizer`` has all three)."""

    @property
    def identity(self) -> TokenizerId: ...

    @property
    def sample_rate(self) -> int: ...

    @property
    def levels(self) -> tuple[LevelSpec, ...]: ...


@dataclass(frozen=True)
class Interleaving:
    """Where each position of a flat sequence comes from: ``level[i]``, ``frame[i]`` (both ``[N]`` int64)."""

    level: torch.Tensor
    frame: torch.Tensor


def interleave_order(levels: Sequence[LevelSpec], length: int) -> Interleaving:
    """The interleaving rule (module docstring) for an item of ``length`` samples: frames with
    ``f * hop_l < length``, sorted by ``(f * hop_l, l)``."""
    if length < 1:
        raise ValueError(f"an item needs at least one sample, got length {length}")
    starts, lvls, frames = [], [], []
    for level, spec in enumerate(levels):
        f = torch.arange(int(frames_for(length, spec.hop_length)))  # [n_l]
        starts.append(f * spec.hop_length)
        lvls.append(torch.full_like(f, level))
        frames.append(f)
    start, level_of, frame_of = torch.cat(starts), torch.cat(lvls), torch.cat(frames)  # each [N]
    order = torch.argsort(start * len(levels) + level_of)  # keys are unique: one frame per (start, level)
    return Interleaving(level=level_of[order], frame=frame_of[order])


@dataclass(frozen=True)
class AudioCode:
    """What an audio token id stands for."""

    level: int
    code: int


@dataclass(frozen=True)
class AudioVocab:
    """The mapping between one soundtok tokenizer's codes and an LLM's token ids (see the module docstring).

    ``first_ids[l]`` is the id of code 0 of level ``l``; level ``l`` owns ``first_ids[l] .. first_ids[l] + N_l - 1``.
    """

    tokenizer: TokenizerId
    sample_rate: int
    levels: tuple[LevelSpec, ...]
    first_ids: tuple[int, ...]
    audio_start_id: int
    audio_end_id: int

    def __post_init__(self) -> None:
        if not self.levels or len(self.first_ids) != len(self.levels):
            raise ValueError(f"need one first id per level, got {len(self.first_ids)} for {len(self.levels)} levels")
        spans = sorted([(i, i + s.codebook_size) for i, s in zip(self.first_ids, self.levels, strict=True)])
        spans += [(self.audio_start_id, self.audio_start_id + 1), (self.audio_end_id, self.audio_end_id + 1)]
        spans.sort()
        if spans[0][0] < 0 or any(a[1] > b[0] for a, b in zip(spans, spans[1:], strict=False)):
            raise ValueError(f"audio token id ranges overlap or are negative: {spans}")

    # ----------------------------------------------------------------------------------------------------
    # facts
    @property
    def num_tokens(self) -> int:
        """New tokens: every code of every level plus the two markers."""
        return sum(s.codebook_size for s in self.levels) + 2

    @property
    def ids(self) -> list[int]:
        """Every id this vocabulary owns (markers, then codes level by level)."""
        out = [self.audio_start_id, self.audio_end_id]
        for first, spec in zip(self.first_ids, self.levels, strict=True):
            out.extend(range(first, first + spec.codebook_size))
        return out

    @property
    def stride(self) -> int:
        """Samples per period of the interleaving schedule (LCM of the hops)."""
        return math.lcm(*(s.hop_length for s in self.levels))

    @property
    def tokens_per_second(self) -> float:
        """Audio tokens per second of audio (markers excluded): the context cost."""
        return sum(self.sample_rate / s.hop_length for s in self.levels)

    def id_range(self, level: int) -> range:
        """The ids of level ``level`` (for constrained decoding)."""
        return range(self.first_ids[level], self.first_ids[level] + self.levels[level].codebook_size)

    def token_id(self, level: int, code: int) -> int:
        if not 0 <= level < len(self.levels) or not 0 <= code < self.levels[level].codebook_size:
            raise AudioTokenError(f"no audio token for level {level}, code {code} in this vocabulary")
        return self.first_ids[level] + code

    def token_strings(self) -> list[str]:
        """The token texts in id order of :attr:`ids`."""
        return [AUDIO_START, AUDIO_END] + [
            audio_token(level, code) for level, spec in enumerate(self.levels) for code in range(spec.codebook_size)
        ]

    # ----------------------------------------------------------------------------------------------------
    # id -> (level, code)
    def split_ids(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(level, code)`` for each id of ``ids [...]``; both -1 where the id is not an audio code."""
        level = torch.full_like(ids, -1)
        code = torch.full_like(ids, -1)
        for lv, first in enumerate(self.first_ids):
            inside = (ids >= first) & (ids < first + self.levels[lv].codebook_size)
            level[inside] = lv
            code[inside] = ids[inside] - first
        return level, code

    def is_audio(self, ids: torch.Tensor) -> torch.Tensor:
        """``[...]`` bool: the id is an audio code or a marker."""
        level, _ = self.split_ids(ids)
        return (level >= 0) | (ids == self.audio_start_id) | (ids == self.audio_end_id)

    def lookup(self, token_id: int) -> AudioCode:
        """The (level, code) of one id; :class:`AudioTokenError` for markers and text ids."""
        level, code = self.split_ids(torch.tensor([token_id]))
        if int(level[0]) < 0:
            raise AudioTokenError(f"token id {token_id} is not an audio code of {self.tokenizer}")
        return AudioCode(int(level[0]), int(code[0]))

    # ----------------------------------------------------------------------------------------------------
    # Tokens <-> flat ids
    def level_schedule(self, num_tokens: int) -> torch.Tensor:
        """``[num_tokens]`` the level of each of the first ``num_tokens`` audio positions after ``<|audio_start|>``
        (the interleaving rule is periodic, so a generator can constrain position ``i`` to ``id_range(level[i])``)."""
        per_stride = sum(self.stride // s.hop_length for s in self.levels)
        periods = max(1, -(-num_tokens // per_stride))
        return interleave_order(self.levels, periods * self.stride).level[:num_tokens]

    def tokens_to_ids(self, tokens: Tokens, *, markers: bool = True) -> list[torch.Tensor]:
        """One flat ``[N_b]`` int64 sequence per item of ``tokens``, interleaved by the rule in the module docstring,
        framed by ``<|audio_start|>`` ... ``<|audio_end|>`` when ``markers``.

        Refuses tokens of another tokenizer (:class:`~soundtok.errors.TokenizerMismatchError`).
        """
        self.tokenizer.check_same(tokens.tokenizer)
        if tuple(tokens.levels) != self.levels:
            raise AudioTokenError(f"these tokens have levels {tokens.levels}, this vocabulary {self.levels}")
        out = []
        for b in range(tokens.batch_size):
            length = int(tokens.lengths[b])
            per_level = []  # level l: [n_l] ids
            for level, (codes, spec) in enumerate(zip(tokens.codes, self.levels, strict=True)):
                c = codes[b, : int(frames_for(length, spec.hop_length))].cpu().long()
                if c.numel() and (int(c.min()) < 0 or int(c.max()) >= spec.codebook_size):
                    raise AudioTokenError(f"level {level} holds codes outside [0, {spec.codebook_size})")
                per_level.append(c + self.first_ids[level])
            order = interleave_order(self.levels, length)
            starts = torch.tensor([0] + [len(p) for p in per_level]).cumsum(0)  # [L + 1] offsets into flat
            flat = torch.cat(per_level)[starts[order.level] + order.frame]  # [N]
            if markers:
                flat = torch.cat([torch.tensor([self.audio_start_id]), flat, torch.tensor([self.audio_end_id])])
            out.append(flat)
        return out

    def ids_to_tokens(self, ids: torch.Tensor | Sequence[int], length: int | None = None) -> Tokens:
        """One item's :class:`~soundtok.types.Tokens` from its flat ids (with or without the two markers).

        ``length`` (samples) defaults to ``min_l n_l * hop_l``, the largest length the frame counts allow;
        the decoded audio then has the original length rounded up to the next frame start.
        """
        flat = torch.as_tensor(ids, dtype=torch.long).flatten().cpu()
        if flat.numel() >= 2 and int(flat[0]) == self.audio_start_id and int(flat[-1]) == self.audio_end_id:
            flat = flat[1:-1]
        level, code = self.split_ids(flat)
        bad = (level < 0).nonzero()
        if bad.numel():
            i = int(bad[0])
            raise AudioTokenError(
                f"position {i} holds id {int(flat[i])}, which is not an audio code of {self.tokenizer} "
                "(markers belong only at the two ends)"
            )
        counts = torch.bincount(level, minlength=len(self.levels))  # [L]
        if int(counts.min()) == 0:
            raise AudioTokenError(f"every level needs at least one frame; frames per level: {counts.tolist()}")
        hops = torch.tensor([s.hop_length for s in self.levels])
        natural = int((counts * hops).min())
        if length is None:
            length = natural
        expected = torch.stack([frames_for(length, s.hop_length) for s in self.levels])
        if not torch.equal(expected, counts):
            raise AudioTokenError(
                f"frames per level {counts.tolist()} do not fit one item of {length} samples "
                f"(that needs {expected.tolist()}); the sequence is truncated or malformed"
            )
        want = interleave_order(self.levels, length).level
        wrong = (want != level).nonzero()
        if wrong.numel():
            i = int(wrong[0])
            raise AudioTokenError(
                f"position {i} holds a level-{int(level[i])} token where the interleaving rule puts "
                f"level {int(want[i])}"
            )
        codes = tuple(code[level == lv][None] for lv in range(len(self.levels)))  # each [1, n_l]
        return Tokens(codes, torch.tensor([length]), self.sample_rate, self.levels, self.tokenizer)

    # ----------------------------------------------------------------------------------------------------
    # persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "tokenizer": self.tokenizer.to_dict(),
            "sample_rate": self.sample_rate,
            "levels": [
                {"hop_length": s.hop_length, "codebook_size": s.codebook_size, "first_id": i}
                for s, i in zip(self.levels, self.first_ids, strict=True)
            ],
            "audio_start_id": self.audio_start_id,
            "audio_end_id": self.audio_end_id,
            "token_format": AUDIO_TOKEN_FORMAT,
            "interleaving": "frames with start < length, sorted by (start sample, level)",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioVocab:
        if d.get("format") != _FORMAT or int(d.get("version", -1)) > _VERSION:
            raise ValueError(f"not a {_FORMAT} v{_VERSION} mapping (format {d.get('format')!r}, v{d.get('version')})")
        levels = d["levels"]
        return cls(
            tokenizer=TokenizerId.from_dict(d["tokenizer"]),
            sample_rate=int(d["sample_rate"]),
            levels=tuple(LevelSpec(int(x["hop_length"]), int(x["codebook_size"])) for x in levels),
            first_ids=tuple(int(x["first_id"]) for x in levels),
            audio_start_id=int(d["audio_start_id"]),
            audio_end_id=int(d["audio_end_id"]),
        )

    def save(self, folder: str | os.PathLike[str], *, force: bool = False) -> Path:
        """Write ``folder/audio_vocab.json`` atomically (beside the extended tokenizer's files)."""
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        return atomic_write(Path(folder) / VOCAB_FILE, lambda p: p.write_text(text), force=force)

    @classmethod
    def load(cls, path: str | os.PathLike[str], tokenizer: PreTrainedTokenizerBase | None = None) -> AudioVocab:
        """Read ``audio_vocab.json`` (or the folder holding it); with ``tokenizer``, also check it matches."""
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        if not path.is_file():
            raise CheckpointError(f"{path} does not exist; an extended LLM folder holds {VOCAB_FILE} (AudioVocab.save)")
        try:
            vocab = cls.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path} is not a valid audio vocabulary ({e}); write it again with save()") from e
        if tokenizer is not None:
            vocab.check_tokenizer(tokenizer)
        return vocab

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Raise :class:`~soundtok.errors.CheckpointError` unless ``tokenizer`` holds every audio token at its id."""
        got = tokenizer.convert_tokens_to_ids(self.token_strings())
        got = [got] if isinstance(got, int) else got
        for want, text, have in zip(self.ids, self.token_strings(), got, strict=True):
            if want != have:
                raise CheckpointError(
                    f"this HF tokenizer maps {text} to {have}, the audio vocabulary expects {want}; "
                    "load the tokenizer saved with this audio_vocab.json (or extend this one with extend_vocab)"
                )


# --------------------------------------------------------------------------------------------------------
# extending a tokenizer and a model
def add_audio_tokens(tokenizer: PreTrainedTokenizerBase, source: _AudioSource) -> AudioVocab:
    """Add the audio tokens of ``source`` (an ``AudioTokenizer``) to an HF tokenizer, in place.

    The new ids are contiguous, starting at ``len(tokenizer)``. Refuses a tokenizer that already holds any of them
    (load the saved :class:`AudioVocab` instead of extending twice).
    """
    from tokenizers import AddedToken

    levels = tuple(source.levels)
    fake = AudioVocab(source.identity, source.sample_rate, levels, _first_ids(levels, 2), 0, 1)
    strings = fake.token_strings()
    vocab = tokenizer.get_vocab()
    clash = [s for s in strings if s in vocab]
    if clash:
        raise CheckpointError(
            f"this HF tokenizer already holds audio tokens ({clash[0]}, ...); load its audio_vocab.json with "
            "AudioVocab.load(folder, tokenizer) instead of extending it again"
        )
    tokenizer.add_tokens([AddedToken(s, special=True, normalized=False) for s in strings], special_tokens=True)
    first = tokenizer.convert_tokens_to_ids(AUDIO_START)
    assert isinstance(first, int)
    result = AudioVocab(source.identity, source.sample_rate, levels, _first_ids(levels, first + 2), first, first + 1)
    got = tokenizer.convert_tokens_to_ids(strings)
    got = [got] if isinstance(got, int) else got
    if got != result.ids:  # the layout promised in the module docstring
        raise SoundtokError(
            f"{type(tokenizer).__name__} gave the {len(strings)} audio tokens non-contiguous ids "
            f"({got[:3]}...); soundtok.llm needs a tokenizer that appends added tokens at the end of its vocabulary"
        )
    return result


def _first_ids(levels: tuple[LevelSpec, ...], start: int) -> tuple[int, ...]:
    sizes = [s.codebook_size for s in levels]
    return tuple(start + sum(sizes[:i]) for i in range(len(sizes)))


#: how :func:`resize_embeddings` initialises the audio codes' rows (module docstring)
AUDIO_INITS = ("mean", "random", "codebook")


@torch.no_grad()
def resize_embeddings(
    model: PreTrainedModel,
    vocab: AudioVocab,
    *,
    init: str = "mean",
    code_vectors: Sequence[torch.Tensor | None] | None = None,
    noise_scale: float = 0.1,
    seed: int = 0,
    pad_to_multiple_of: int | None = None,
) -> None:
    """Grow the model's input embeddings (and untied output head) to hold ``vocab``'s ids and initialise the new rows
    (module docstring): the audio codes' input rows by ``init`` (``mean``, ``random`` or ``codebook``, which reads
    ``code_vectors[l]``, ``[N_l, d_l]``, for each level ``l``; a level whose entry is None falls back to ``random``);
    every other new row, and an untied output head's new rows, as ``mean + noise_scale * std * z``.

    Rows the model had but the text tokenizer did not use (a padded vocabulary) are initialised the same way when
    audio ids land on them.
    """
    if init not in AUDIO_INITS:
        raise ValueError(f"init must be one of {AUDIO_INITS}, got {init!r}")
    if init == "codebook" and (code_vectors is None or len(code_vectors) != len(vocab.levels)):
        raise ValueError(f"init='codebook' needs code_vectors: one entry per level ({len(vocab.levels)})")
    emb = _weight(model.get_input_embeddings())
    old_rows = int(emb.shape[0])
    known = min(min(vocab.ids), old_rows)  # rows of tokens that existed before the audio tokens
    need = max(old_rows, max(vocab.ids) + 1)
    fresh = sorted(set(range(old_rows, need)) | set(vocab.ids))  # rows to initialise
    head = model.get_output_embeddings()
    tied = head is not None and _weight(head) is emb
    model.resize_token_embeddings(need, pad_to_multiple_of=pad_to_multiple_of, mean_resizing=False)
    emb = _weight(model.get_input_embeddings())
    head = model.get_output_embeddings()
    if head is not None and (_weight(head) is emb) != tied:
        raise RuntimeError(f"resizing {'untied' if tied else 'tied'} the output head and the input embeddings")
    fresh += list(range(need, int(emb.shape[0])))  # padding rows, if any
    gen = torch.Generator().manual_seed(seed)
    _init_rows(emb, known, fresh, noise_scale, gen)
    if init != "mean":
        for level, spec in enumerate(vocab.levels):
            rows = list(range(vocab.first_ids[level], vocab.first_ids[level] + spec.codebook_size))
            vectors = code_vectors[level] if code_vectors is not None else None
            if vectors is not None and (vectors.ndim != 2 or vectors.shape[0] != spec.codebook_size):
                raise ValueError(f"code_vectors[{level}] must be [{spec.codebook_size}, d], got {tuple(vectors.shape)}")
            _init_rows(emb, known, rows, 1.0, gen, None if vectors is None else _spread(vectors, emb.shape[1], gen))
    if head is not None and not tied:
        _init_rows(_weight(head), known, fresh, noise_scale, gen)
        bias = getattr(head, "bias", None)
        if bias is not None:
            bias[fresh] = bias[:known].float().mean().to(bias.dtype)


def _weight(module: object) -> torch.Tensor:
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise TypeError(f"expected an embedding or linear layer with a [V, D] weight, got {type(module).__name__}")
    return weight


def _spread(vectors: torch.Tensor, dim: int, gen: torch.Generator) -> torch.Tensor:
    """``[N, d]`` code vectors -> ``[N, dim]``, every column of mean 0 and standard deviation 1 over the codes: centred,
    through a random Gaussian ``[d, dim]`` projection (which keeps distances up to a common scale)."""
    x = vectors.float()
    x = x - x.mean(dim=0)  # [N, d]
    x = x @ torch.randn(x.shape[1], dim, generator=gen)  # [N, dim]
    return x / x.std(dim=0).clamp_min(1e-8)


def _init_rows(
    weight: torch.Tensor,
    known: int,
    fresh: list[int],
    noise_scale: float,
    gen: torch.Generator,
    z: torch.Tensor | None = None,
) -> None:
    """``weight [V, D]``: rows ``fresh`` <- mean + noise_scale * std * z, statistics over rows ``[0, known)``;
    ``z [len(fresh), D]`` defaults to ``N(0, 1)`` draws."""
    old = weight[:known].float()  # [V_old, D]
    mean, std = old.mean(dim=0), old.std(dim=0)  # [D] each
    if z is None:
        z = torch.randn(len(fresh), weight.shape[1], generator=gen)  # [V_new, D]
    weight[fresh] = (mean + noise_scale * std * z).to(weight.dtype)


@torch.no_grad()
def untie_output_embeddings(model: PreTrainedModel) -> bool:
    """Give a model whose output head shares the input embedding's weight a head of its own, a copy of that weight
    (so the model computes exactly what it did), and mark its config untied so that resizing and saving keep the two
    apart. Returns whether the head was tied; an untied model is left as it is."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    if head is None or _weight(head) is not _weight(embedding):
        return False
    head.weight = torch.nn.Parameter(_weight(embedding).detach().clone())
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.tie_word_embeddings = False  # resize_embeddings refuses a model that ties them again
    return True


def extend_vocab(
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    source: _AudioSource,
    *,
    init: str = "codebook",
    untie: bool = False,
    noise_scale: float = 0.1,
    seed: int = 0,
    pad_to_multiple_of: int | None = None,
) -> AudioVocab:
    """Add ``source``'s audio tokens to ``tokenizer`` and (unless ``model`` is None) grow and initialise the model's
    embeddings for them (``init``: :func:`resize_embeddings`; ``codebook`` reads ``source.code_vectors(level)``;
    ``untie``: first give a tied model its own output head, :func:`untie_output_embeddings`).
    Save the result with ``model.save_pretrained(d)``, ``tokenizer.save_pretrained(d)``, ``vocab.save(d)``; reload
    with :func:`soundtok.llm.load_llm` and ``AudioVocab.load(d, tokenizer)``."""
    vocab = add_audio_tokens(tokenizer, source)
    if model is not None:
        if untie and untie_output_embeddings(model):
            log.info("untied %s's output head from its input embeddings", type(model).__name__)
        vectors = None
        if init == "codebook":
            table = getattr(source, "code_vectors", None)
            vectors = [table(level) if table is not None else None for level in range(len(vocab.levels))]
        resize_embeddings(
            model, vocab, init=init, code_vectors=vectors, noise_scale=noise_scale, seed=seed,
            pad_to_multiple_of=pad_to_multiple_of,
        )  # fmt: skip
    log.info(
        "added %d audio tokens for %s (ids %d..%d, init %s)",
        vocab.num_tokens, source.identity, min(vocab.ids), max(vocab.ids), init if model is not None else "-",
    )  # fmt: skip
    return vocab


@dataclass(frozen=True)
class PromptAudio:
    """How an item's tokens are shown to the LLM when the audio is *read* (in a question), not written.

    ``max_seconds`` keeps the first seconds of a longer clip (a gender or emotion question needs no more, and a
    10 s LibriSpeech clip of deduplicated Whisper units is ~330 ids); ``collapse_runs`` writes a run of one repeated
    code once (Whisper units at 50 Hz repeat ~1.5 times on average: 33 ids/s instead of 50), for one-level
    tokenizers only. The result is a :class:`~soundtok.types.Tokens` whose length is its frame count times the hop:
    a view for the LLM, not audio to decode. The default changes nothing.

    >>> from soundtok.types import LevelSpec, TokenizerId
    >>> t = Tokens((torch.tensor([[4, 4, 4, 7, 7, 4]]),), torch.tensor([6 * 320]), 16000, (LevelSpec(320, 8),),
    ...            TokenizerId("toy", "toy", "0"))
    >>> PromptAudio(collapse_runs=True)(t).codes[0].tolist()
    [[4, 7, 4]]
    >>> PromptAudio(max_seconds=0.06)(t).codes[0].tolist()
    [[4, 4, 4]]
    """

    max_seconds: float | None = None
    collapse_runs: bool = False

    def __post_init__(self) -> None:
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 (or None: the whole clip), got {self.max_seconds}")

    def __call__(self, tokens: Tokens) -> Tokens:
        if self.max_seconds is None and not self.collapse_runs:
            return tokens
        if tokens.batch_size != 1:
            raise ValueError(f"PromptAudio takes one item's tokens, got a batch of {tokens.batch_size}")
        if self.collapse_runs and tokens.num_levels != 1:
            raise ValueError(
                f"collapse_runs is for one-level tokenizers (runs are a per-level notion and the levels would no "
                f"longer line up); {tokens.tokenizer.name} has {tokens.num_levels} levels"
            )
        length = int(tokens.lengths[0])
        if self.max_seconds is not None:
            length = min(length, max(1, round(self.max_seconds * tokens.sample_rate)))
        levels = []
        for codes, spec in zip(tokens.codes, tokens.levels, strict=True):
            kept = codes[0, : int(frames_for(length, spec.hop_length))]
            if self.collapse_runs:
                kept = torch.unique_consecutive(kept)
            levels.append(kept)
        if self.collapse_runs:  # the view's length: its frames times the hop
            length = max(len(levels[0]), 1) * tokens.levels[0].hop_length
        return Tokens(
            tuple(c[None] for c in levels), torch.tensor([length]), tokens.sample_rate, tokens.levels, tokens.tokenizer
        )

    def to_dict(self) -> dict[str, Any]:
        return {"max_seconds": self.max_seconds, "collapse_runs": self.collapse_runs}
