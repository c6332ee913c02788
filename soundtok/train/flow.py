"""The flow recipes: ``recipe: msn`` trains the Make Some Noise tokenizer (encoder, VQ and its CFM or MSE
decoder); ``recipe: semantic`` trains the unit-to-latent decoder of a semantic tokenizer whose k-means centroids
are given (``init_weights``: a safetensors file holding ``centroids``; the encoder and centroids stay fixed).

``python -m soundtok.train.flow CONFIG.yaml RUN_DIR [key=value ...]`` (or ``soundtok train``; works under
``accelerate launch``). ``configs/msn-16k.yaml`` and ``configs/msn-mse-16k.yaml`` differ only in
``model.decoder`` (and the name), so the two are trained on the same batches with the same budget.

Before the first step, the per-channel mean and std of the frozen autoencoder's latents are measured on
:data:`STATS_BATCHES` training batches (drawn apart from the training batches) and stored in the model's buffers.

One step: crop ``data.batch_size`` clips of ``data.segment_seconds`` (a whole number of decoding blocks) from
the train split (:class:`~soundtok.train.data.CropSampler`); the frozen autoencoder turns them into latents
``[B, D, F]``; normalise; then, for msn, encoder -> VQ (straight-through) -> decoder, and the loss is

    objective (CFM velocity MSE, or latent MSE for decoder: mse; see soundtok.tokenizers.msn)
    + commit_loss + codebook_loss (already weighted by model.commitment and model.codebook_weight);

for semantic, the frozen encoder + centroids give the units of the same crops, and the loss is the objective.

AdamW with the ``optim`` settings, gradient clipping, exponential learning-rate decay. ``t``, ``x0`` and the
classifier-free-guidance dropout come from a generator seeded by (seed, step, rank) and the crops are a function
of the same, so a run killed and restarted continues exactly as if it had never stopped (the quantizer's k-means
init and dead-code restarts draw from torch's global generator, which the saved state restores).

Logs (TensorBoard, ``RUN_DIR/logs``): the losses, the gradient norm, the codebook perplexity (``exp`` of the
entropy of the quantizer's usage EMA, as a fraction of ``codebook_size``), entries restarted, throughput; every
``eval_every`` steps the latent reconstruction error of held-out clips
(:meth:`~soundtok.tokenizers.msn.MSNTokenizer.latent_error`, with the model's default sampling settings) and the
fraction of the codebook those clips use. States and the export work as in the GAN recipe
(:mod:`soundtok.train.gan`): ``RUN_DIR/state/step-XXXXXXX`` written atomically, ``RUN_DIR/export`` in
``export_dtype`` at the end.

The GAN-only fields of :class:`~soundtok.train.config.TrainConfig` (``discriminator``, ``loss``,
``adversarial_start``) must be left unset.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import torch
import yaml

from soundtok.errors import SoundtokError
from soundtok.tokenizers.msn import LatentFlowTokenizer, MSNConfig, MSNTokenizer
from soundtok.tokenizers.semantic import SemanticConfig, SemanticTokenizer
from soundtok.train.config import TrainConfig
from soundtok.train.data import CropSampler, training_data
from soundtok.train.shard import ShardSampler
from soundtok.train.state import (
    deadline,
    export_run,
    latest_state,
    load_init_weights,
    make_accelerator,
    recipe_main,
    resume,
    save_state,
    sync_quantizer,
)

log = logging.getLogger(__name__)

#: training batches whose latents set the normalisation statistics (drawn at steps -1, -2, ...: never trained on)
STATS_BATCHES = 16
_GAN_ONLY = ("discriminator", "loss", "adversarial_start")

Clips = list[tuple[str, torch.Tensor]]  # (id, [1, T]) held-out audio


#: recipe -> (config class, tokenizer class)
FAMILIES: dict[str, tuple[type[MSNConfig] | type[SemanticConfig], type[MSNTokenizer] | type[SemanticTokenizer]]] = {
    "msn": (MSNConfig, MSNTokenizer),
    "semantic": (SemanticConfig, SemanticTokenizer),
}


def build_untrained(cfg: TrainConfig) -> LatentFlowTokenizer:
    """The recipe's model as configured, before any ``init_weights``."""
    config_class, model_class = FAMILIES[cfg.recipe]
    try:
        config = config_class.from_dict(cfg.model)
    except (TypeError, ValueError) as exc:
        raise SoundtokError(f"invalid {cfg.recipe} model config: {exc}") from None
    return model_class(config, name=cfg.name)  # type: ignore[arg-type]


def build_model(cfg: TrainConfig) -> LatentFlowTokenizer:
    model = build_untrained(cfg)
    weights: dict[str, torch.Tensor] = {}
    if cfg.init_weights is not None:
        weights = load_init_weights(model, cfg.init_weights, cfg.recipe)
    if isinstance(model, SemanticTokenizer) and (cfg.init_weights is None or "centroids" not in weights):
        raise SoundtokError(
            "the semantic recipe trains the decoder of fitted units: set init_weights to a safetensors file "
            "holding 'centroids' (benchmarks/semantic_study.py --fit writes one)"
        )
    return model


def check_config(cfg: TrainConfig) -> None:
    if cfg.recipe not in FAMILIES:
        raise SoundtokError(f"soundtok.train.flow trains recipes {sorted(FAMILIES)}, the config says {cfg.recipe!r}")
    stray = [k for k in _GAN_ONLY if k in cfg.model_fields_set]
    if stray:
        raise SoundtokError(
            f"the {cfg.recipe} recipe has no adversarial losses: remove {stray} from the config "
            "(the quantizer's loss weights are model.commitment and model.codebook_weight)"
        )


@torch.no_grad()
def measure_latent_statistics(
    model: LatentFlowTokenizer, sampler: CropSampler | ShardSampler, cfg: TrainConfig
) -> None:
    """Set the model's per-channel latent mean and std from :data:`STATS_BATCHES` batches of training crops."""
    latents = []
    for i in range(STATS_BATCHES):
        wav = sampler.batch(cfg.data.batch_size, seed=cfg.seed, step=-1 - i, rank=0)  # [B, 1, T]
        latents.append(model.autoencoder.encode(wav[:, 0]))  # [B, D, F]
    model.set_latent_statistics(torch.cat(latents))


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The CPU generator of one step's ``t``, ``x0`` and guidance dropout: a function of (seed, step, rank)."""
    return torch.Generator().manual_seed(random.Random(f"flow:{seed}:{step}:{rank}").getrandbits(63))


def codebook_perplexity(model: MSNTokenizer) -> float:
    """``exp(entropy)`` of the quantizer's usage EMA over ``codebook_size``: 1 when every entry is used alike."""
    usage = model.quantizer.usage.float()
    if float(usage.sum()) <= 0:
        return 0.0
    p = usage / usage.sum()
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return float(entropy.exp()) / usage.numel()


@torch.no_grad()
def evaluate_flow(model: LatentFlowTokenizer, clips: Clips) -> dict[str, float]:
    """Mean latent reconstruction error of held-out clips, and the fraction of the (first) codebook their tokens
    use."""
    lengths = torch.tensor([wav.shape[-1] for _, wav in clips])
    batch = torch.zeros(len(clips), int(lengths.max()))
    for b, (_, wav) in enumerate(clips):
        batch[b, : wav.shape[-1]] = wav[0]
    device = next(model.parameters()).device
    result = model.reconstruct_latents(batch.to(device), lengths.to(device))
    valid = torch.arange(result.codes.shape[1], device=device)[None] < result.token_lengths[:, None]
    used = result.codes[valid].unique().numel()
    return {"latent_error": float(result.error.mean()), "codebook_used": used / model.codebook_sizes[0]}


def train_flow(cfg: TrainConfig, run_dir: str | Path, *, max_steps_this_run: int | None = None) -> Path | None:
    """Train (or resume) an msn or semantic tokenizer in ``run_dir``; returns the export folder once ``cfg.steps``
    are done.

    ``max_steps_this_run`` stops early (after a state is saved), e.g. to split training across sessions.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SoundtokError("training logs need TensorBoard: pip install 'soundtok[train]'") from None

    check_config(cfg)
    run_dir = Path(run_dir)
    accelerator = make_accelerator(cfg)
    torch.manual_seed(cfg.seed)  # identical initial weights on every process
    model = build_model(cfg)
    hop = model.block_samples
    segment = int(round(cfg.data.segment_seconds * model.sample_rate))
    if segment % hop:
        raise SoundtokError(
            f"{cfg.recipe} training needs crops of a whole number of decoding blocks ({hop} samples = "
            f"{hop / model.sample_rate:g} s); "
            f"data.segment_seconds={cfg.data.segment_seconds} gives {segment} samples, e.g. use "
            f"{max(1, segment // hop) * hop / model.sample_rate:g}"
        )
    sampler, held_out = training_data(cfg.data, model.sample_rate)

    resumed = latest_state(run_dir)
    if resumed is None:
        measure_latent_statistics(model, sampler, cfg)  # (a resumed run restores them with the weights)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, cfg.optim.lr_decay)
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    model = accelerator.unwrap_model(wrapped)

    log.info("process %d of %d on %s", accelerator.process_index, accelerator.num_processes, accelerator.device)
    step = resume(accelerator, run_dir)
    model.refresh_identity()  # the loaded weights (and latent statistics) change the tokenizer's fingerprint
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))
    writer = SummaryWriter(str(run_dir / "logs")) if accelerator.is_main_process else None
    per_process = max(1, cfg.data.batch_size // accelerator.num_processes)
    stop_at = cfg.steps if max_steps_this_run is None else min(cfg.steps, step + max_steps_this_run)
    objective = "flow" if model.flow.decoder == "cfm" else "mse"
    quantizer = model.quantizer if isinstance(model, MSNTokenizer) else None
    t0, steps_timed = time.perf_counter(), 0
    stop_time = deadline(cfg)

    while step < stop_at:
        rank = accelerator.process_index
        real = sampler.batch(per_process, seed=cfg.seed, step=step, rank=rank).to(accelerator.device)  # [B, 1, T]
        inputs = model.training_inputs(real)  # latents [B, D, F] normalised (+ semantic units), no gradient
        wrapped.train()
        out = wrapped(**inputs, generator=step_generator(cfg.seed, step, rank))
        loss = out.total
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(wrapped.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        if accelerator.num_processes > 1 and quantizer is not None:
            sync_quantizer(quantizer)
        step += 1
        steps_timed += 1

        if writer is not None and (step % cfg.log_every == 0 or step == stop_at):
            elapsed = time.perf_counter() - t0
            scalars = out.scalars()
            for key, value in scalars.items():
                writer.add_scalar(f"loss/{objective if key == 'objective' else key}", value, step)
            writer.add_scalar("loss/total", float(loss.detach()), step)
            writer.add_scalar("train/grad_norm", float(grad_norm), step)
            if quantizer is not None:
                writer.add_scalar("train/codebook_perplexity", codebook_perplexity(model), step)
                writer.add_scalar("train/codes_restarted", float(quantizer.num_replaced), step)
            writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
            writer.add_scalar(
                "train/audio_seconds_per_second",
                steps_timed * cfg.data.batch_size * cfg.data.segment_seconds / elapsed,
                step,
            )
            log.info(
                "step %d  %s  (%.2f s/step)",
                step,
                "  ".join(f"{objective if k == 'objective' else k} {v:.4f}" for k, v in scalars.items()),
                elapsed / steps_timed,
            )
            t0, steps_timed = time.perf_counter(), 0
        if writer is not None and held_out and (step % cfg.eval_every == 0 or step == cfg.steps):  # main only
            scores = evaluate_flow(model, held_out)
            for k, v in scores.items():
                writer.add_scalar(f"eval/{k}", v, step)
            log.info("step %d eval %s", step, {k: round(v, 4) for k, v in scores.items()})
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
    return export_run(accelerator, model, run_dir, cfg, step)


def main(argv: list[str] | None = None) -> int:
    """``python -m soundtok.train.flow CONFIG.yaml RUN_DIR [key=value ...]`` (works under ``accelerate launch``)."""
    return recipe_main(train_flow, argv, main.__doc__ or "")


if __name__ == "__main__":
    raise SystemExit(main())
