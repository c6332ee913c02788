"""The GAN recipe for waveform generators: the RVQ codec (``recipe: codec``) and the mel vocoder
(``recipe: vocoder``).

One step: crop a batch of real audio, rebuild it through the generator (the codec: encoder -> RVQ with quantizer
dropout -> decoder; the vocoder: log-mel -> waveform), update the discriminators on real vs rebuilt (least-squares
GAN), then update the generator on multi-scale mel L1 + adversarial + feature-matching losses, plus the codec's
commitment/codebook losses (DAC's recipe and weights by default). What differs between generators is a
:class:`GanRecipe` subclass, registered in :mod:`soundtok.registry`; the loop, the checkpoints and the logs are
:mod:`soundtok.train.loop`'s. ``accelerate`` runs it on one CPU process, several (``ACCELERATE_USE_CPU=true
accelerate launch --multi_gpu --num_processes 2``) or GPUs unchanged.

A run folder holds ``config.yaml``, TensorBoard logs in ``logs/``, resumable states ``state/step-XXXXXXX/`` (the
newest ``keep_checkpoints``; each written under a temporary name and renamed, so a kill never leaves half of
one) and, at the end, the exported soundtok checkpoint in ``export/``. ``init_weights`` (a checkpoint folder or a
safetensors file) starts the generator from trained weights, with fresh optimisers and discriminators: e.g.
``init_weights=soundtok/checkpoints/codec-16k adversarial_start=0`` adds the adversarial phase to a shipped codec.
Rerunning the same command after a kill resumes from the newest state: the batches are a function of (seed, step,
rank), so the run continues exactly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from soundtok.audio.mel import log_mel
from soundtok.errors import SoundtokError
from soundtok.eval.signal import mel_distance
from soundtok.nn.discriminators import DiscriminatorConfig, DiscriminatorOutput, build_discriminator
from soundtok.nn.losses import (
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from soundtok.registry import RecipeEntry, get_recipe, register_recipe
from soundtok.tokenizers.codec import CodecConfig, CodecTokenizer
from soundtok.tokenizers.llm_codec import (
    LLMCodecConfig,
    LLMCodecTokenizer,
    english_words,
    label_embedding,
    select_words,
)
from soundtok.train.config import TrainConfig, load_config
from soundtok.train.data import CropSampler, training_data
from soundtok.train.loop import Recipe, StepOutput, train
from soundtok.train.state import export_run, latest_state, load_init_weights, make_accelerator, sync_quantizer
from soundtok.vocoder import Vocoder, VocoderConfig

if TYPE_CHECKING:
    from accelerate import Accelerator

log = logging.getLogger(__name__)


Clips = list[tuple[str, torch.Tensor]]  # (id, [1, T]) held-out audio


class GanRecipe(Recipe):
    """The shared GAN step (module docstring); a subclass says what its generator is."""

    loss_tag = "loss/generator"
    console_tags = ("loss/generator", "loss/mel")
    cfg: TrainConfig

    def generate(self, model: nn.Module, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``real [B, 1, T]`` -> (rebuilt ``[B, 1, T]``, the generator's own losses by name)."""
        raise NotImplementedError

    def after_step(self, model: Any, num_processes: int) -> None:
        """Called on the unwrapped model after every optimizer step."""

    def evaluate_model(self, model: Any, clips: Clips) -> dict[str, float]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------ the Recipe interface
    def make_accelerator(self) -> Accelerator:
        return make_accelerator(self.cfg)

    def config_text(self) -> str:
        return yaml.safe_dump(json.loads(self.cfg.model_dump_json()), sort_keys=False)

    def setup(self, accelerator: Accelerator, run_dir: Path) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        model = self.build_trainable()
        disc = build_discriminator(DiscriminatorConfig.from_dict(cfg.discriminator))
        o = cfg.optim
        opt_g = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(opt_g, o.lr_decay)
        self.sched_d = torch.optim.lr_scheduler.ExponentialLR(opt_d, o.lr_decay)
        self.model, self.disc, self.opt_g, self.opt_d = accelerator.prepare(model, disc, opt_g, opt_d)
        self.mel_loss = MultiScaleMelLoss().to(accelerator.device)
        self.stft_loss = MultiResolutionSTFTLoss().to(accelerator.device)
        accelerator.register_for_checkpointing(self.sched_g, self.sched_d)
        self.generator = accelerator.unwrap_model(self.model)
        self.sampler, self.held_out = training_data(cfg.data, int(self.generator.sample_rate))
        self.accelerator = accelerator
        self.per_process = max(1, cfg.data.batch_size // accelerator.num_processes)

    def build_trainable(self) -> nn.Module:
        """:meth:`build`, then ``init_weights`` (fine-tuning, e.g. the adversarial phase from a shipped checkpoint)."""
        model = self.build()
        if self.cfg.init_weights is not None:
            load_init_weights(model, self.cfg.init_weights, self.cfg.recipe, self.cfg.init_modules)
        return model

    def batch(self, step: int) -> torch.Tensor:
        """This process's crops of ``step``: ``[B, 1, T]`` on the device."""
        acc = self.accelerator
        real = self.sampler.batch(self.per_process, seed=self.cfg.seed, step=step, rank=acc.process_index)
        return real.to(acc.device)

    def step(self, step: int) -> StepOutput:
        cfg, acc, w = self.cfg, self.accelerator, self.cfg.loss
        real = self.batch(step)  # [B, 1, T]
        self.model.train()
        fake, own_losses = self.generate(self.model, real)  # [B, 1, T]
        adversarial = step >= cfg.adversarial_start

        scalars: dict[str, float] = {}
        if adversarial:  # discriminator step: real and fake in one pass (one forward per backward under DDP)
            real_out, fake_out = _halves(self.disc(torch.cat([real, fake.detach()])))
            d_loss = discriminator_loss(real_out, fake_out)
            self.opt_d.zero_grad(set_to_none=True)
            acc.backward(d_loss)
            acc.clip_grad_norm_(self.disc.parameters(), cfg.optim.grad_clip)
            self.opt_d.step()
            self.sched_d.step()
            scalars["loss/discriminator"] = float(d_loss.detach())

        losses = {"mel": self.mel_loss(fake, real), **own_losses}
        if w.stft:
            losses["stft"] = self.stft_loss(fake, real)
        if adversarial:
            real_out, fake_out = _halves(self.disc(torch.cat([real, fake])))
            losses["adversarial"] = generator_adversarial_loss(fake_out)
            losses["feature_matching"] = feature_matching_loss(real_out, fake_out)
        g_loss = sum(getattr(w, k) * v for k, v in losses.items())
        self.opt_g.zero_grad(set_to_none=True)
        acc.backward(g_loss)
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.opt_g.step()
        self.sched_g.step()
        self.after_step(self.generator, acc.num_processes)
        scalars.update({f"loss/{k}": float(v.detach()) for k, v in losses.items()})
        scalars["loss/generator"] = float(g_loss.detach())  # type: ignore[union-attr]
        scalars["train/grad_norm"] = float(grad_norm)
        return StepOutput(scalars, work=self.per_process * cfg.data.segment_seconds)

    def evaluate(self) -> dict[str, float]:
        return self.evaluate_model(self.generator, self.held_out) if self.held_out else {}

    def export(self, accelerator: Accelerator, run_dir: Path, step: int) -> Path:
        return export_run(accelerator, self.generator, run_dir, self.cfg, step)


class CodecRecipe(GanRecipe):
    name = "codec"

    def build(self) -> nn.Module:
        return CodecTokenizer(CodecConfig.from_dict(self.cfg.model), name=self.cfg.name)

    def generate(self, model: nn.Module, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = model(real)  # through the (possibly DDP-wrapped) module, so gradients are synchronised
        return out.reconstruction, {"commitment": out.quantized.commit_loss, "codebook": out.quantized.codebook_loss}

    def after_step(self, model: CodecTokenizer, num_processes: int) -> None:
        if num_processes > 1:
            sync_quantizer(model.quantizer)

    def evaluate_model(self, model: CodecTokenizer, clips: Clips) -> dict[str, float]:
        return evaluate_codec(model, clips)


class VocoderRecipe(GanRecipe):
    name = "vocoder"

    def build(self) -> nn.Module:
        return Vocoder(VocoderConfig.from_dict(self.cfg.model), name=self.cfg.name)

    def generate(self, model: nn.Module, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mel_config = _unwrap(model).config.mel
        if real.shape[-1] % mel_config.hop_length:
            raise SoundtokError(
                f"vocoder training needs crops of a whole number of hops ({mel_config.hop_length} samples); "
                "set data.segment_seconds accordingly (e.g. 1.024 s at 16 kHz, hop 256)"
            )
        return model(log_mel(real[:, 0], mel_config)), {}

    def evaluate_model(self, model: Vocoder, clips: Clips) -> dict[str, float]:
        return evaluate_vocoder(model, clips)


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


for _recipe in (CodecRecipe, VocoderRecipe, LLMCodecRecipe):
    register_recipe(RecipeEntry(_recipe.name, load_config, train, _recipe))


def train_gan(cfg: TrainConfig, run_dir: str | Path, *, max_steps_this_run: int | None = None) -> Path | None:
    """Train (or resume) a GAN recipe (``cfg.recipe``: codec or vocoder) in ``run_dir``: :func:`loop.train
    <soundtok.train.loop.train>`, refusing configs of other recipes."""
    entry = get_recipe(cfg.recipe)
    if entry.recipe is None or not issubclass(entry.recipe, GanRecipe):
        raise SoundtokError(f"unknown GAN recipe {cfg.recipe!r}; the GAN recipes are codec and vocoder")
    return train(cfg, run_dir, max_steps_this_run=max_steps_this_run)


@torch.no_grad()
def evaluate_codec(codec: CodecTokenizer, clips: list[tuple[str, torch.Tensor]]) -> dict[str, float]:
    """Mean mel distance of held-out clips through the codec at several numbers of codebooks."""
    was_training, before = codec.training, codec.num_codebooks
    codec.eval()
    scores: dict[str, float] = {}
    levels = sorted({n for n in (1, 2, 4, 8, codec.config.num_quantizers) if n <= codec.config.num_quantizers})
    for n in levels:
        codec.set_num_codebooks(n)
        dists = []
        for _, wav in clips:
            decoded = codec.decode(codec.encode(wav[None], codec.sample_rate))
            dists.append(mel_distance(wav[0], decoded[0, 0], codec.sample_rate))
        scores[f"mel_distance@{codec.bitrate / 1000:g}kbps"] = sum(dists) / len(dists)
    codec.set_num_codebooks(before)
    codec.train(was_training)
    return scores


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


@torch.no_grad()
def evaluate_vocoder(vocoder: Vocoder, clips: Clips) -> dict[str, float]:
    """Mean mel distance of held-out clips rebuilt from their own log-mel."""
    was_training = vocoder.training
    hop = vocoder.config.mel.hop_length
    device = next(vocoder.parameters()).device
    dists = []
    for _, wav in clips:
        wav = wav[..., : wav.shape[-1] // hop * hop].to(device)
        rebuilt = vocoder.synthesize(vocoder.mel(wav))  # [1, 1, T]
        dists.append(mel_distance(wav[0].cpu(), rebuilt[0, 0].float().cpu(), vocoder.sample_rate))
    vocoder.train(was_training)
    return {"mel_distance": sum(dists) / len(dists)}


def _unwrap(model: nn.Module) -> Any:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _halves(outputs: list[DiscriminatorOutput]) -> tuple[list[DiscriminatorOutput], list[DiscriminatorOutput]]:
    """Split the outputs of a discriminator pass over ``cat([a, b])`` into those of ``a`` and of ``b``."""
    first, second = [], []
    for o in outputs:
        n = o.logits.shape[0] // 2
        first.append(DiscriminatorOutput(o.logits[:n], [f[:n] for f in o.features]))
        second.append(DiscriminatorOutput(o.logits[n:], [f[n:] for f in o.features]))
    return first, second
