"""The LLM-Codec (UniAudio 1.5, arXiv 2406.10056): a multi-scale residual VQ whose codebooks are a frozen LLM's own
word embeddings, so every code *is* a word the LLM reads.

Architecture. The spectral encoder and Vocos-style decoder of the ``codec`` family (:mod:`soundtok.nn.spectral`;
a 50 Hz latent at 16 kHz, so the recipe can start from ``codec-16k``'s weights) around
:class:`WordQuantizer`: three levels by residual average pooling of the latent with strides 4, 2, 1 (12.5 + 25 +
50 codes per second). Level ``l``'s codebook is a fixed list of LLM token ids whose frozen input embeddings
``E_l [N_l, 576]`` go through one trainable linear map each, ``C_l = E_l W_l [N_l, D]``; the search is nearest
neighbour on L2-normalised vectors (cosine), the output the unnormalised ``C_l`` row, upsampled by repetition and
subtracted from the residual (straight-through gradients; commitment and codebook losses as in VQ-VAE). Level 1
holds common whole English words, levels 2 and 3 a larger set of word pieces (:func:`select_words`: for SmolLM2,
its first 3,000 space-prefixed lowercase tokens of three or more letters that are entries of the ``english-words``
web2 list, in id order, " the", " and", " for" ... " magic", a few of them prefixes that web2 lists as words, such
as " con" and " pro"; then its first 8,192 letter-only tokens). A code maps 1:1 to an LLM token id
(:meth:`LLMCodecTokenizer.token_ids`) and to text (:meth:`LLMCodecTokenizer.words`).

What the checkpoint stores: the encoder, the decoder, each level's token ids, ``W_l`` and the projected
codebook ``C_l`` (refreshed from ``E_l W_l`` after every training step, so encoding and decoding need no LLM).
The frozen embeddings themselves are attached only while training (:meth:`WordQuantizer.attach_embeddings`).

Training (the ``llm_codec`` recipe, :mod:`soundtok.train.gan`) adds two losses of the published design: a global
semantic loss on level 1 (the time-mean of its pre-quantisation latent against ``W_1`` applied to the mean LLM
embedding of the clip's label text: the direction that makes level-1 words the label's neighbours) and a
consistency loss on level 2 (a linear read-out of its quantised latent against the frozen Whisper-base encoder's
features of the same audio).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from soundtok.config import Config
from soundtok.errors import SoundtokError
from soundtok.nn.spectral import ISTFTDecoder, STFTEncoder
from soundtok.registry import register_family
from soundtok.tokenizers.base import AudioTokenizer
from soundtok.types import LevelSpec


@dataclass(frozen=True)
class LLMCodecConfig(Config):
    sample_rate: int = 16000
    hop_length: int = 320  # latent frames: 50 per second at 16 kHz
    latent_dim: int = 64
    # the spectral encoder / decoder of the codec family (sizes as codec-16k's, so its weights can start training)
    encoder_layers: int = 4
    decoder_dim: int = 256
    decoder_intermediate_dim: int = 768
    decoder_layers: int = 8
    istft_upsample: int = 2
    # one level per stride: average-pooling factors of the residual latent (4, 2, 1: 12.5 + 25 + 50 codes/s)
    strides: tuple[int, ...] = (4, 2, 1)
    # words per level (token ids of `llm` chosen by select_words; level 1 whole words, the others any word piece)
    level_sizes: tuple[int, ...] = (3000, 8192, 8192)
    llm: str = "smollm2-135m"  # whose input embeddings the codebooks are (an offline name or a local HF folder)
    # level-1 words: at least this many letters, and in the english-words "web2" list unless "none" (select_words)
    level1_min_letters: int = 3
    level1_dictionary: str = "web2"
    embedding_dim: int = 576  # that LLM's hidden size
    whisper_dim: int = 512  # the consistency target's width (Whisper-base encoder)

    def __post_init__(self) -> None:
        if not self.strides or min(self.strides) < 1 or len(self.strides) != len(self.level_sizes):
            raise ValueError(f"need one positive stride per level size, got {self.strides} and {self.level_sizes}")
        if min(self.level_sizes) < 2 or self.latent_dim < 1 or self.embedding_dim < 1 or self.hop_length < 1:
            raise ValueError(f"invalid llm_codec config {self}")
        if self.level1_dictionary not in ("web2", "none") or self.level1_min_letters < 1:
            raise ValueError(f"level1_dictionary must be 'web2' or 'none', level1_min_letters >= 1, got {self}")
        if self.hop_length % self.istft_upsample:
            raise ValueError(f"hop_length must be a multiple of istft_upsample, got {self}")
        if min(self.decoder_dim, self.decoder_intermediate_dim, self.decoder_layers, self.istft_upsample) < 1:
            raise ValueError(f"spectral network sizes must be positive, got {self}")


@dataclass
class WordQuantizerOutput:
    quantized: torch.Tensor  # [B, D, T] sum of the levels (straight-through)
    codes: list[torch.Tensor]  # per level [B, T / stride]
    commit_loss: torch.Tensor  # scalar, summed over levels
    codebook_loss: torch.Tensor
    pooled: list[torch.Tensor]  # per level, the residual it quantised [B, D, T / stride] (before quantisation)
    levels: list[torch.Tensor]  # per level, its quantised output [B, D, T / stride] (straight-through)


class WordLevel(nn.Module):
    """One level: ``N`` LLM token ids, their frozen embeddings (training only) and the trainable map ``W``."""

    words: torch.Tensor  # [N] int64 LLM token ids
    codebook: torch.Tensor  # [N, D] the projected embeddings E W (what encode/decode use)

    def __init__(self, size: int, embedding_dim: int, latent_dim: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.project = nn.Linear(embedding_dim, latent_dim, bias=False)  # W
        # placeholders until a recipe attaches the LLM's words (or a checkpoint is loaded): ids 0..N-1, random codes
        self.register_buffer("words", torch.arange(size))
        self.register_buffer("codebook", torch.randn(size, latent_dim))
        self.embeddings: torch.Tensor | None = None  # [N, E], frozen; not saved

    def vectors(self) -> torch.Tensor:
        """``[N, D]``: ``E W`` (differentiable) when the embeddings are attached, else the stored codebook."""
        return self.project(self.embeddings) if self.embeddings is not None else self.codebook

    def search(self, x: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Nearest code by cosine of each frame of ``x [B, D, T]``: ``[B, T]``."""
        rows = F.normalize(x.transpose(1, 2), dim=-1)  # [B, T, D]
        return (rows @ F.normalize(vectors, dim=-1).t()).argmax(dim=-1)  # [B, T]


class WordQuantizer(nn.Module):
    """Multi-scale residual VQ over LLM word embeddings (module docstring)."""

    def __init__(self, config: LLMCodecConfig) -> None:
        super().__init__()
        c = config
        # a typed view of the ModuleList's members
        self.levels: list[WordLevel] = nn.ModuleList(  # type: ignore[assignment]
            WordLevel(n, c.embedding_dim, c.latent_dim, s) for n, s in zip(c.level_sizes, c.strides, strict=True)
        )

    def attach_embeddings(self, words: Sequence[torch.Tensor], embeddings: torch.Tensor) -> None:
        """Set each level's token ids and attach the LLM's input-embedding table rows for them (training)."""
        for level, ids in zip(self.levels, words, strict=True):
            if ids.shape != level.words.shape:
                raise ValueError(f"a level of {level.words.numel()} words got {ids.numel()} token ids")
            level.words.copy_(ids)
            level.embeddings = embeddings[ids].detach().float().to(level.codebook.device)
        self.refresh_codebooks()

    @torch.no_grad()
    def refresh_codebooks(self) -> None:
        """Store ``E W`` as each level's codebook (after a training step), so encode/decode need no LLM."""
        for level in self.levels:
            if level.embeddings is not None:
                level.codebook.copy_(level.project(level.embeddings))

    @torch.no_grad()
    def match_scale(self, z: torch.Tensor) -> list[float]:
        """Before training: scale each level's ``W`` so that its codebook vectors have the RMS of the residual they
        quantise in ``z [B, D, T]`` (a batch of latents). Frozen LLM embeddings are small (SmolLM2: RMS ~0.05), so
        a random ``W`` starts orders of magnitude off the latent's scale. Returns the factors applied."""
        factors, residual = [], z
        for level in self.levels:
            x = F.avg_pool1d(residual, level.stride) if level.stride > 1 else residual
            vectors = level.vectors()
            factor = float(x.pow(2).mean().sqrt() / vectors.pow(2).mean().sqrt().clamp(min=1e-12))
            level.project.weight.mul_(factor)
            vectors = level.vectors()
            q = F.embedding(level.search(x, vectors), vectors).transpose(1, 2)
            residual = residual - (q.repeat_interleave(level.stride, dim=-1) if level.stride > 1 else q)
            factors.append(factor)
        self.refresh_codebooks()
        return factors

    def forward(self, z: torch.Tensor) -> WordQuantizerOutput:
        """Training pass on ``z [B, D, T]`` (T a multiple of every stride)."""
        residual, total = z, torch.zeros_like(z)
        codes, pooled, outs = [], [], []
        commit = codebook = z.new_zeros(())
        for level in self.levels:
            x = F.avg_pool1d(residual, level.stride) if level.stride > 1 else residual  # [B, D, T / s]
            vectors = level.vectors()
            idx = level.search(x.detach(), vectors)  # [B, T / s]
            q = F.embedding(idx, vectors).transpose(1, 2)  # [B, D, T / s]
            commit = commit + F.mse_loss(x, q.detach())
            codebook = codebook + F.mse_loss(q, x.detach())
            q_st = x + (q - x).detach()
            up = q_st.repeat_interleave(level.stride, dim=-1) if level.stride > 1 else q_st
            total = total + up
            residual = residual - up
            codes.append(idx)
            pooled.append(x)
            outs.append(q_st)
        return WordQuantizerOutput(total, codes, commit, codebook, pooled, outs)

    def encode(self, z: torch.Tensor) -> list[torch.Tensor]:
        """``z [B, D, T]`` (T a multiple of every stride) -> codes per level ``[B, T / stride]``."""
        residual, codes = z, []
        for level in self.levels:
            x = F.avg_pool1d(residual, level.stride) if level.stride > 1 else residual
            idx = level.search(x, level.codebook)
            q = F.embedding(idx, level.codebook).transpose(1, 2)
            residual = residual - (q.repeat_interleave(level.stride, dim=-1) if level.stride > 1 else q)
            codes.append(idx)
        return codes

    def decode(self, codes: Sequence[torch.Tensor]) -> torch.Tensor:
        """Codes per level -> the summed latent ``[B, D, T]``."""
        total: torch.Tensor | None = None
        for level, idx in zip(self.levels, codes, strict=True):
            q = F.embedding(idx, level.codebook).transpose(1, 2)
            q = q.repeat_interleave(level.stride, dim=-1) if level.stride > 1 else q
            total = q if total is None else total + q
        assert total is not None
        return total


@dataclass
class LLMCodecOutput:
    reconstruction: torch.Tensor  # [B, 1, T]
    quantized: WordQuantizerOutput
    consistency: torch.Tensor  # [B, T / stride_2, whisper_dim]: level 2's read-out for the consistency loss


@register_family("llm_codec", LLMCodecConfig)
class LLMCodecTokenizer(AudioTokenizer):
    """Spectral encoder -> multi-scale residual VQ over an LLM's word embeddings -> Vocos-style decoder."""

    config: LLMCodecConfig

    def __init__(self, config: LLMCodecConfig, name: str | None = None) -> None:
        super().__init__(config, name)
        c = config
        spectral: dict[str, Any] = {"dim": c.decoder_dim, "intermediate_dim": c.decoder_intermediate_dim}
        self.encoder = STFTEncoder(
            c.latent_dim, c.hop_length, num_layers=c.encoder_layers, downsample=c.istft_upsample, **spectral
        )
        self.quantizer = WordQuantizer(c)
        self.decoder = ISTFTDecoder(
            c.latent_dim, c.hop_length, num_layers=c.decoder_layers, upsample=c.istft_upsample, **spectral
        )
        # the consistency loss's linear read-out of level 2 (training only; tiny, so it stays in the checkpoint)
        self.consistency_head = nn.Linear(c.latent_dim, c.whisper_dim)
        reach = self.encoder.receptive_field()
        self.context_samples = max(reach.left, reach.right)
        # in frames of the coarsest level (hop x max stride): the decoder's reach in latent frames, rounded up
        self.decode_context_frames = -(-self.decoder.receptive_field_frames() // max(c.strides)) + 1

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def levels(self) -> tuple[LevelSpec, ...]:
        c = self.config
        return tuple(LevelSpec(c.hop_length * s, n) for s, n in zip(c.strides, c.level_sizes, strict=True))

    def _code_vectors(self, level: int) -> torch.Tensor:
        return self.quantizer.levels[level].codebook  # [N, D]

    def token_ids(self, level: int) -> torch.Tensor:
        """``[N]``: the LLM token id of each code of ``level`` (code ``i`` is the word ``token_ids(level)[i]``)."""
        return self.quantizer.levels[level].words

    def words(self, codes: torch.Tensor, level: int, tokenizer: Any) -> list[str]:
        """The words ``codes [T]`` of ``level`` spell, with ``tokenizer`` (the LLM's Hugging Face tokenizer)."""
        ids = self.token_ids(level)[codes.long()].tolist()
        return [tokenizer.decode([i]) for i in ids]

    def forward(self, wav: torch.Tensor) -> LLMCodecOutput:
        """Training pass on ``[B, 1, T]`` (T a multiple of :attr:`stride`)."""
        q = self.quantizer(self.encoder(wav))
        second = q.levels[1] if len(q.levels) > 1 else q.levels[0]
        return LLMCodecOutput(self.decoder(q.quantized), q, self.consistency_head(second.transpose(1, 2)))

    def _encode(self, wav: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        return self.quantizer.encode(self.encoder(wav, lengths))

    def _decode(self, codes: list[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.quantizer.decode(codes), lengths)


# ------------------------------------------------------------------------------------------------ word choice
_WORD_PIECE = re.compile(r"^ ?[A-Za-z]+$")  # letters, with or without the leading space: " Dog", "ing"


def select_words(
    tokenizer: Any, sizes: Sequence[int], dictionary: Collection[str] | None = None, min_letters: int = 2
) -> list[torch.Tensor]:
    """Token ids per level. Level 1: the first ``sizes[0]`` ids (in id order, which for a BPE vocabulary is merge
    order, i.e. roughly frequency) whose text is a space and ``min_letters`` or more lowercase letters and, given a
    ``dictionary``, an entry of it: common whole English words (word-level vocabularies without leading spaces
    also match without the space); the other levels: the first ``sizes[l]`` ids whose text is letters only (with
    or without the space), word pieces included. Raises ValueError when the vocabulary holds too few."""
    texts = [(i, tokenizer.decode([i])) for i in range(len(tokenizer))]

    def whole_word(text: str, spaced: bool) -> bool:
        word = text[1:] if spaced else text
        if (spaced and not text.startswith(" ")) or len(word) < min_letters or not (word.isascii() and word.isalpha()):
            return False
        return word.islower() and (dictionary is None or word in dictionary)

    whole = [i for i, t in texts if whole_word(t, True)] + [i for i, t in texts if whole_word(t, False)]
    pieces = [i for i, t in texts if _WORD_PIECE.match(t)]
    out = []
    for level, n in enumerate(sizes):
        pool = whole if level == 0 else pieces
        if len(pool) < n:
            raise ValueError(f"the LLM's vocabulary has {len(pool)} tokens of level {level + 1}'s kind, not {n}")
        out.append(torch.tensor(pool[:n], dtype=torch.long))
    return out


def english_words() -> set[str]:
    """The ``web2`` list of the ``english-words`` package (lowercase), the dictionary level-1 words are checked
    against (``soundtok[train]``)."""
    try:
        from english_words import get_english_words_set
    except ImportError:
        raise SoundtokError(
            "choosing level-1 words needs the english-words package: pip install 'soundtok[train]'"
        ) from None
    return set(get_english_words_set(["web2"], lower=True))


def label_embedding(text: str, tokenizer: Any, embeddings: torch.Tensor) -> torch.Tensor:
    """The mean LLM input embedding of ``text``'s tokens (``[E]``): the semantic loss's target direction."""
    ids = tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"no tokens in label text {text!r}")
    return embeddings[torch.tensor(ids)].float().mean(dim=0)


def bits_per_second(config: LLMCodecConfig) -> float:
    rate = config.sample_rate / config.hop_length
    return sum(rate / s * math.log2(n) for s, n in zip(config.strides, config.level_sizes, strict=True))
