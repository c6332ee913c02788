"""The GAN recipe for waveform generators: the RVQ codec (``recipe: codec``) and the mel vocoder
(``recipe: vocoder``).

One step: crop a batch of real audio, rebuild it through the generator (the codec: encoder -> RVQ with quantizer
dropout -> decoder; the vocoder: log-mel -> waveform), update the discriminators on real vs rebuilt (least-squares
GAN), then update the generator on multi-scale mel L1 + adversarial + feature-matching losses, plus the codec's
commitment/codebook losses (DAC's recipe and weights by default). What differs between generators is a
:class:`GeneratorRecipe` in :data:`RECIPES`; the loop, the discriminators, the checkpoints and the logs are
shared. ``accelerate`` runs it on one CPU process, several (``ACCELERATE_USE_CPU=true accelerate launch
--multi_gpu --num_processes 2``) or GPUs unchanged.

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
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
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
from soundtok.tokenizers.codec import CodecConfig, CodecTokenizer
from soundtok.train.config import TrainConfig
from soundtok.train.data import training_data
from soundtok.train.state import (
    deadline,
    export_run,
    load_init_weights,
    make_accelerator,
    recipe_main,
    resume,
    save_state,
    sync_quantizer,
)
from soundtok.vocoder import Vocoder, VocoderConfig

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


Clips = list[tuple[str, torch.Tensor]]  # (id, [1, T]) held-out audio


class GeneratorRecipe:
    """What one generator needs from the shared GAN loop."""

    def build(self, cfg: TrainConfig) -> nn.Module:
        raise NotImplementedError

    def sample_rate(self, model: Any) -> int:
        return int(model.sample_rate)

    def generate(self, model: nn.Module, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``real [B, 1, T]`` -> (rebuilt ``[B, 1, T]``, the generator's own losses by name)."""
        raise NotImplementedError

    def after_step(self, model: Any, num_processes: int) -> None:
        """Called on the unwrapped model after every optimizer step."""

    def evaluate(self, model: Any, clips: Clips) -> dict[str, float]:
        raise NotImplementedError


class CodecRecipe(GeneratorRecipe):
    def build(self, cfg: TrainConfig) -> nn.Module:
        return CodecTokenizer(CodecConfig.from_dict(cfg.model), name=cfg.name)

    def generate(self, model: nn.Module, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = model(real)  # through the (possibly DDP-wrapped) module, so gradients are synchronised
        return out.reconstruction, {"commitment": out.quantized.commit_loss, "codebook": out.quantized.codebook_loss}

    def after_step(self, model: CodecTokenizer, num_processes: int) -> None:
        if num_processes > 1:
            sync_quantizer(model.quantizer)

    def evaluate(self, model: CodecTokenizer, clips: Clips) -> dict[str, float]:
        return evaluate_codec(model, clips)


class VocoderRecipe(GeneratorRecipe):
    def build(self, cfg: TrainConfig) -> nn.Module:
        return Vocoder(VocoderConfig.from_dict(cfg.model), name=cfg.name)

    def generate(self, model: nn.Module, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mel_config = _unwrap(model).config.mel
        if real.shape[-1] % mel_config.hop_length:
            raise SoundtokError(
                f"vocoder training needs crops of a whole number of hops ({mel_config.hop_length} samples); "
                "set data.segment_seconds accordingly (e.g. 1.024 s at 16 kHz, hop 256)"
            )
        return model(log_mel(real[:, 0], mel_config)), {}

    def evaluate(self, model: Vocoder, clips: Clips) -> dict[str, float]:
        return evaluate_vocoder(model, clips)


RECIPES: dict[str, GeneratorRecipe] = {"codec": CodecRecipe(), "vocoder": VocoderRecipe()}


def train_gan(cfg: TrainConfig, run_dir: str | Path, *, max_steps_this_run: int | None = None) -> Path | None:
    """Train (or resume) ``cfg.recipe`` in ``run_dir``; returns the export folder once ``cfg.steps`` are done.

    ``max_steps_this_run`` stops early (after a state is saved), e.g. to split training across sessions.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SoundtokError("training logs need TensorBoard: pip install 'soundtok[train]'") from None

    if cfg.recipe not in RECIPES:
        raise SoundtokError(f"unknown GAN recipe {cfg.recipe!r}; known: {', '.join(RECIPES)}")
    recipe = RECIPES[cfg.recipe]
    run_dir = Path(run_dir)
    accelerator = make_accelerator(cfg)
    torch.manual_seed(cfg.seed)  # identical initial weights on every process

    model = recipe.build(cfg)
    if cfg.init_weights is not None:  # fine-tuning, e.g. the adversarial phase from a shipped checkpoint
        load_init_weights(model, cfg.init_weights, cfg.recipe)
    disc = build_discriminator(DiscriminatorConfig.from_dict(cfg.discriminator))
    mel_loss, stft_loss = MultiScaleMelLoss(), MultiResolutionSTFTLoss()
    opt_g = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
    )
    opt_d = torch.optim.AdamW(
        disc.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
    )
    sched_g = torch.optim.lr_scheduler.ExponentialLR(opt_g, cfg.optim.lr_decay)
    sched_d = torch.optim.lr_scheduler.ExponentialLR(opt_d, cfg.optim.lr_decay)
    model, disc, opt_g, opt_d = accelerator.prepare(model, disc, opt_g, opt_d)
    mel_loss, stft_loss = mel_loss.to(accelerator.device), stft_loss.to(accelerator.device)
    accelerator.register_for_checkpointing(sched_g, sched_d)
    generator = accelerator.unwrap_model(model)
    sample_rate = recipe.sample_rate(generator)

    sampler, held_out = training_data(cfg.data, sample_rate)

    log.info("process %d of %d on %s", accelerator.process_index, accelerator.num_processes, accelerator.device)
    step = resume(accelerator, run_dir)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))
    writer = SummaryWriter(str(run_dir / "logs")) if accelerator.is_main_process else None
    per_process = max(1, cfg.data.batch_size // accelerator.num_processes)
    stop_at = cfg.steps if max_steps_this_run is None else min(cfg.steps, step + max_steps_this_run)
    w = cfg.loss
    t0, steps_timed = time.perf_counter(), 0
    running: dict[str, float] = {}  # loss sums since the last log line: logged values are interval means
    stop_time = deadline(cfg)

    while step < stop_at:
        real = sampler.batch(per_process, seed=cfg.seed, step=step, rank=accelerator.process_index)
        real = real.to(accelerator.device)  # [B, 1, T]
        model.train()
        fake, own_losses = recipe.generate(model, real)  # [B, 1, T]
        adversarial = step >= cfg.adversarial_start

        if adversarial:  # discriminator step: real and fake in one pass (one forward per backward under DDP)
            real_out, fake_out = _halves(disc(torch.cat([real, fake.detach()])))
            d_loss = discriminator_loss(real_out, fake_out)
            opt_d.zero_grad(set_to_none=True)
            accelerator.backward(d_loss)
            accelerator.clip_grad_norm_(disc.parameters(), cfg.optim.grad_clip)
            opt_d.step()
            sched_d.step()

        losses = {"mel": mel_loss(fake, real), **own_losses}
        if w.stft:
            losses["stft"] = stft_loss(fake, real)
        if adversarial:
            real_out, fake_out = _halves(disc(torch.cat([real, fake])))
            losses["adversarial"] = generator_adversarial_loss(fake_out)
            losses["feature_matching"] = feature_matching_loss(real_out, fake_out)
        g_loss = sum(getattr(w, k) * v for k, v in losses.items())
        opt_g.zero_grad(set_to_none=True)
        accelerator.backward(g_loss)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt_g.step()
        sched_g.step()
        recipe.after_step(generator, accelerator.num_processes)
        step += 1
        steps_timed += 1
        logged = {**losses, "generator": g_loss, "grad_norm": grad_norm}
        if adversarial:
            logged["discriminator"] = d_loss
        for k, v in logged.items():
            running[k] = running.get(k, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v)

        if writer is not None and (step % cfg.log_every == 0 or step == stop_at):
            elapsed = time.perf_counter() - t0
            means = {k: v / steps_timed for k, v in running.items()}
            for k, v in means.items():
                writer.add_scalar(f"train/{k}" if k == "grad_norm" else f"loss/{k}", v, step)
            writer.add_scalar(
                "train/audio_seconds_per_second",
                steps_timed * cfg.data.batch_size * cfg.data.segment_seconds / elapsed,
                step,
            )
            log.info(
                "step %d  g %.3f  mel %.3f  (%.2f s/step)",
                step,
                means["generator"],
                means["mel"],
                elapsed / steps_timed,
            )
        if step % cfg.log_every == 0 or step == stop_at:
            t0, steps_timed, running = time.perf_counter(), 0, {}
        if writer is not None and held_out and (step % cfg.eval_every == 0 or step == cfg.steps):  # main only
            scores = recipe.evaluate(generator, held_out)
            for k, v in scores.items():
                writer.add_scalar(f"eval/{k}", v, step)
            log.info("step %d eval %s", step, {k: round(v, 3) for k, v in scores.items()})
        out_of_time = step < stop_at and time.monotonic() >= stop_time
        if step % cfg.checkpoint_every == 0 or step == stop_at or out_of_time:
            save_state(accelerator, run_dir, step, cfg.keep_checkpoints)
        if out_of_time:
            log.info("step %d: max_minutes=%g reached; rerun the same command to continue", step, cfg.max_minutes)
            break

    if writer is not None:
        writer.close()
    if step < cfg.steps:
        return None
    return export_run(accelerator, generator, run_dir, cfg, step)


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


def main(argv: list[str] | None = None) -> int:
    """``python -m soundtok.train.gan CONFIG.yaml RUN_DIR [key=value ...]`` (works under ``accelerate launch``)."""
    return recipe_main(train_gan, argv, main.__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
