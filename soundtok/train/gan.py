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

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
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
from soundtok.train.config import TrainConfig, load_config
from soundtok.train.data import training_data
from soundtok.train.loop import ConfigRecipe, StepOutput, train
from soundtok.train.state import export_run, sync_quantizer
from soundtok.vocoder import Vocoder, VocoderConfig

if TYPE_CHECKING:
    from accelerate import Accelerator

log = logging.getLogger(__name__)


Clips = list[tuple[str, torch.Tensor]]  # (id, [1, T]) held-out audio


class GanRecipe(ConfigRecipe):
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
    def setup(self, accelerator: Accelerator, run_dir: Path) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        model = self.build_trainable()
        disc = build_discriminator(DiscriminatorConfig.from_dict(cfg.discriminator))
        opt_g, self.sched_g = self.adamw(model.parameters())
        opt_d, self.sched_d = self.adamw(disc.parameters())
        self.model, self.disc, self.opt_g, self.opt_d = accelerator.prepare(model, disc, opt_g, opt_d)
        self.mel_loss = MultiScaleMelLoss().to(accelerator.device)
        self.stft_loss = MultiResolutionSTFTLoss().to(accelerator.device)
        accelerator.register_for_checkpointing(self.sched_g, self.sched_d)
        self.generator = accelerator.unwrap_model(self.model)
        self.sampler, self.held_out = training_data(cfg.data, int(self.generator.sample_rate))
        self.accelerator = accelerator
        self.per_process = max(1, cfg.data.batch_size // accelerator.num_processes)

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


for _recipe in (CodecRecipe, VocoderRecipe):
    register_recipe(RecipeEntry(_recipe.name, load_config, train, _recipe))


def train_gan(cfg: TrainConfig, run_dir: str | Path, *, max_steps_this_run: int | None = None) -> Path | None:
    """Train (or resume) a GAN recipe (``cfg.recipe``: codec or vocoder) in ``run_dir``: :func:`loop.train
    <soundtok.train.loop.train>`, refusing configs of other recipes."""
    entry = get_recipe(cfg.recipe)
    if entry.recipe is None or not issubclass(entry.recipe, GanRecipe):
        raise SoundtokError(f"unknown GAN recipe {cfg.recipe!r}; the GAN recipes are codec, vocoder and llm_codec")
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
