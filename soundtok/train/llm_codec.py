"""The LLM-Codec's training recipe (``recipe: llm_codec``): the GAN recipe of :mod:`soundtok.train.gan` for
:class:`~soundtok.tokenizers.llm_codec.LLMCodecTokenizer`, plus the published design's two extra losses.

- **Words**: at set-up the LLM named by ``model.llm`` is loaded once, its input-embedding table kept and every
  level's token ids chosen (:func:`~soundtok.tokenizers.llm_codec.select_words`); each level's ``W`` is then scaled
  so its codebook has the RMS of the residual it quantises (``WordQuantizer.match_scale``).
- **Semantic loss** (level 1, weight ``loss.semantic``): the cosine distance between the time-mean of level 1's
  pre-quantisation latent and ``W_1`` applied to the mean LLM embedding of the crop's label text
  (:func:`label_text`, from the corpus labels of the crop's item; a training shard has no labels, so there it is off).
- **Consistency loss** (level 2, weight ``loss.consistency``): the cosine distance between a linear read-out of
  level 2's quantised latent and Whisper-base's last encoder layer on the same crop, average-pooled to level 2's rate.
- **Diversity loss** (every level, weight ``loss.diversity``, off by default; :func:`diversity_loss`): wav2vec 2.0's
  codebook-usage term, ``1 - H(p̄) / log N`` with ``p̄`` the batch mean of each frame's softmax over the cosines to
  the ``N`` words (temperature :data:`DIVERSITY_TEMPERATURE`), averaged over the levels. It is 0 when the batch
  spreads over all words evenly and 1 when it uses one; the shipped config's first run, without it, narrowed to 33
  of 3,000 level-1 words (docs/tokenizers.md).

``configs/llm-codec-smollm2-16k.yaml`` starts from ``codec-16k``'s encoder and decoder (``init_modules``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from soundtok.errors import SoundtokError
from soundtok.eval.signal import mel_distance
from soundtok.registry import RecipeEntry, register_recipe
from soundtok.tokenizers.llm_codec import (
    LLMCodecConfig,
    LLMCodecTokenizer,
    english_words,
    label_embedding,
    select_words,
)
from soundtok.train.config import load_config
from soundtok.train.data import CropSampler
from soundtok.train.gan import Clips, GanRecipe
from soundtok.train.loop import train
from soundtok.train.state import latest_state

if TYPE_CHECKING:
    from accelerate import Accelerator

log = logging.getLogger(__name__)


class LLMCodecRecipe(GanRecipe):
    """The codec's GAN recipe for the LLM-Codec, plus its semantic (level 1) and consistency (level 2) losses
    (:mod:`soundtok.tokenizers.llm_codec`). The frozen LLM embeddings are attached at set-up; the label texts come
    from the corpus labels of each crop's item (:func:`label_text`); a shard has none, so there the semantic loss
    is off. Whisper-base's last encoder layer on the same crops is the consistency target."""

    name = "llm_codec"
    whisper_layer = 6  # Whisper-base's last encoder layer

    def build(self) -> nn.Module:
        return LLMCodecTokenizer(LLMCodecConfig.from_dict(self.cfg.model), name=self.cfg.name)

    def build_trainable(self) -> nn.Module:
        from soundtok.llm.models import load_llm

        model = super().build_trainable()
        assert isinstance(model, LLMCodecTokenizer)
        c = model.config
        llm, self.tokenizer = load_llm(c.llm)
        table = cast(torch.Tensor, llm.get_input_embeddings().weight).detach().float()  # [V, E]
        if table.shape[1] != c.embedding_dim:
            raise SoundtokError(f"{c.llm} has {table.shape[1]}-d embeddings; set model.embedding_dim to that")
        dictionary = english_words() if c.level1_dictionary == "web2" else None
        words = select_words(self.tokenizer, c.level_sizes, dictionary, c.level1_min_letters)
        model.quantizer.attach_embeddings(words, table)
        self.table = table
        self.label_cache: dict[str, torch.Tensor] = {}
        del llm
        self.whisper = None
        if self.cfg.loss.consistency:
            from soundtok.encoders.whisper import WhisperFeatures

            self.whisper = WhisperFeatures("base", layers=self.whisper_layer)
        return model

    def setup(self, accelerator: Accelerator, run_dir: Path) -> None:
        super().setup(accelerator, run_dir)
        quantizer = self.generator.quantizer
        for level in quantizer.levels:  # plain tensors: prepare() did not move them
            level.embeddings = level.embeddings.to(accelerator.device)
        if self.whisper is not None:
            self.whisper.to(accelerator.device)
        self.targets: tuple[torch.Tensor, torch.Tensor] | None = None
        if latest_state(run_dir) is None:  # a resumed run restores the scaled W with its state
            real = self.sampler.batch(self.per_process, seed=self.cfg.seed, step=-1, rank=0)  # never trained on
            with torch.no_grad():
                latent = self.generator.encoder(real.to(accelerator.device))
            log.info(
                "codebook scales matched to the latent: W x %s", [f"{f:.3g}" for f in quantizer.match_scale(latent)]
            )

    def resumed(self, step: int) -> None:
        self.generator.quantizer.refresh_codebooks()  # the loaded W's products

    def batch(self, step: int) -> torch.Tensor:
        acc, cfg = self.accelerator, self.cfg
        if not cfg.loss.semantic or not isinstance(self.sampler, CropSampler):
            self.targets = None
            return super().batch(step)
        real, items = self.sampler.batch_items(self.per_process, seed=cfg.seed, step=step, rank=acc.process_index)
        texts = [label_text(item.labels) for item in items]
        for text in texts:
            if text is not None and text not in self.label_cache:
                self.label_cache[text] = label_embedding(text, self.tokenizer, self.table)
        zero = self.table.new_zeros(self.table.shape[1])
        target = torch.stack([self.label_cache[t] if t is not None else zero for t in texts])  # [B, E]
        mask = torch.tensor([t is not None for t in texts])
        self.targets = (target.to(acc.device), mask.to(acc.device))
        return real.to(acc.device)

    def generate(self, model: nn.Module, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = model(real)
        q = out.quantized
        losses = {"commitment": q.commit_loss, "codebook": q.codebook_loss}
        if self.targets is not None and bool(self.targets[1].any()):
            target, mask = self.targets
            direction = self.generator.quantizer.levels[0].project(target)  # [B, D]: W_1 t
            mismatch = 1 - F.cosine_similarity(q.pooled[0].mean(dim=-1), direction, dim=-1)  # [B]
            losses["semantic"] = mismatch[mask].mean()
        if self.cfg.loss.diversity:
            levels = self.generator.quantizer.levels
            losses["diversity"] = torch.stack(
                [diversity_loss(x, level.vectors()) for x, level in zip(q.pooled, levels, strict=True)]
            ).mean()
        if self.whisper is not None:
            with torch.no_grad():
                features = self.whisper.encode_windows(real[:, 0], (self.whisper_layer,))[0]  # [B, T / 320, 512]
            frames = out.consistency.shape[1]
            target = F.adaptive_avg_pool1d(features.transpose(1, 2), frames).transpose(1, 2)  # [B, frames, 512]
            losses["consistency"] = (1 - F.cosine_similarity(out.consistency, target, dim=-1)).mean()
        return out.reconstruction, losses

    def after_step(self, model: LLMCodecTokenizer, num_processes: int) -> None:
        model.quantizer.refresh_codebooks()

    def evaluate_model(self, model: LLMCodecTokenizer, clips: Clips) -> dict[str, float]:
        return evaluate_llm_codec(model, clips)


DIVERSITY_TEMPERATURE = 0.1  # on cosines in [-1, 1]


def diversity_loss(x: torch.Tensor, vectors: torch.Tensor, temperature: float = DIVERSITY_TEMPERATURE) -> torch.Tensor:
    """``1 - H(p̄) / log N`` for the frames of ``x [B, D, T]`` against the ``N`` code ``vectors [N, D]`` (module
    docstring): 0 for an even spread over the codes, 1 for one code.

    >>> codes = torch.eye(4)
    >>> spread, one = torch.eye(4)[None], torch.eye(4)[None, :, :1].repeat(1, 1, 4)  # [1, D=4, T=4] frames
    >>> round(float(diversity_loss(spread, codes, 0.01)), 3), round(float(diversity_loss(one, codes, 0.01)), 3)
    (0.0, 1.0)
    """
    rows = F.normalize(x.transpose(1, 2).reshape(-1, x.shape[1]), dim=-1)  # [B T, D]
    p = ((rows @ F.normalize(vectors, dim=-1).t()) / temperature).softmax(dim=-1).mean(dim=0)  # [N]
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return 1 - entropy / math.log(vectors.shape[0])


#: label text per corpus dataset, from its CSV columns: what the semantic loss pulls level 1 towards
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def label_text(labels: Mapping[str, str]) -> str | None:
    """The text a clip's level-1 words should mean: ESC-50 category, the FSDD digit word, the instrument, the
    RAVDESS emotion and speaker gender, a Clotho caption, or the LibriSpeech speaker's gender; None for none."""
    get = labels.get
    if get("category"):
        return str(get("category")).replace("_", " ")
    digit = str(get("digit", ""))
    if digit:
        return _DIGITS[int(digit)] if digit.isdigit() and len(digit) == 1 else digit
    if get("label"):
        return str(get("label")).replace("_", " ").lower()
    if get("emotion"):
        return f"{get('emotion')} {get('gender', '')} voice".replace("  ", " ")
    if get("caption_1"):
        return str(get("caption_1"))
    if get("gender"):
        return f"{get('gender')} voice"
    return None


register_recipe(RecipeEntry(LLMCodecRecipe.name, load_config, train, LLMCodecRecipe))


@torch.no_grad()
def evaluate_llm_codec(codec: LLMCodecTokenizer, clips: Clips) -> dict[str, float]:
    """Mean mel distance of held-out clips through the LLM-Codec, and the fraction of each level's words used."""
    was_training = codec.training
    codec.eval()
    dists, used = [], [set[int]() for _ in codec.levels]
    for _, wav in clips:
        tokens = codec.encode(wav[None], codec.sample_rate)
        dists.append(mel_distance(wav[0], codec.decode(tokens)[0, 0], codec.sample_rate))
        for level, codes in enumerate(tokens.codes):
            used[level].update(codes.flatten().tolist())
    codec.train(was_training)
    scores = {"mel_distance": sum(dists) / len(dists)}
    for level, (seen, spec) in enumerate(zip(used, codec.levels, strict=True)):
        scores[f"words_used_level{level + 1}"] = len(seen) / spec.codebook_size
    return scores
