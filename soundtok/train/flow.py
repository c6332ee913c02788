"""The flow recipes: ``recipe: msn`` trains the Make Some Noise tokenizer (encoder, VQ and its CFM or MSE
decoder); ``recipe: semantic`` trains the unit-to-latent decoder of a semantic tokenizer whose k-means centroids
are given (``init_weights``: a safetensors file holding ``centroids``; the encoder and centroids stay fixed).

``soundtok train CONFIG.yaml RUN_DIR [key=value ...]`` (or ``python -m soundtok.train ...``; works under
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

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from soundtok.errors import SoundtokError
from soundtok.nn.quantize import VectorQuantizer
from soundtok.registry import RecipeEntry, get_recipe, register_recipe
from soundtok.tokenizers.msn import LatentFlowTokenizer, MSNConfig, MSNTokenizer
from soundtok.tokenizers.semantic import SemanticConfig, SemanticTokenizer
from soundtok.train.config import TrainConfig, load_config
from soundtok.train.data import CropSampler, training_data
from soundtok.train.loop import ConfigRecipe, StepOutput, train
from soundtok.train.shard import ShardSampler
from soundtok.train.state import export_run, latest_state, load_init_weights, sync_quantizer

if TYPE_CHECKING:
    from accelerate import Accelerator

log = logging.getLogger(__name__)

#: training batches whose latents set the normalisation statistics (drawn at steps -1, -2, ...: never trained on)
STATS_BATCHES = 16
_GAN_ONLY = ("discriminator", "loss", "adversarial_start")

Clips = list[tuple[str, torch.Tensor]]  # (id, [1, T]) held-out audio


def check_config(cfg: TrainConfig) -> None:
    entry = get_recipe(cfg.recipe)
    if entry.recipe is None or not issubclass(entry.recipe, FlowRecipe):
        raise SoundtokError(f"soundtok.train.flow trains the msn and semantic recipes, the config says {cfg.recipe!r}")
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


class FlowRecipe(ConfigRecipe):
    """The shared flow step (module docstring); :class:`MSNRecipe` and :class:`SemanticRecipe` say what model."""

    cfg: TrainConfig
    config_class: type[MSNConfig] | type[SemanticConfig]
    model_class: type[MSNTokenizer] | type[SemanticTokenizer]

    def build(self) -> LatentFlowTokenizer:
        """The model as configured, before any ``init_weights``."""
        try:
            config = self.config_class.from_dict(self.cfg.model)
        except (TypeError, ValueError) as exc:
            raise SoundtokError(f"invalid {self.name} model config: {exc}") from None
        return self.model_class(config, name=self.cfg.name)  # type: ignore[arg-type]

    def quantizer(self, model: LatentFlowTokenizer) -> VectorQuantizer | None:
        return None

    def setup(self, accelerator: Accelerator, run_dir: Path) -> None:
        cfg = self.cfg
        check_config(cfg)
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        model = cast(LatentFlowTokenizer, self.build_trainable())
        hop = model.block_samples
        segment = int(round(cfg.data.segment_seconds * model.sample_rate))
        if segment % hop:
            raise SoundtokError(
                f"{cfg.recipe} training needs crops of a whole number of decoding blocks ({hop} samples = "
                f"{hop / model.sample_rate:g} s); "
                f"data.segment_seconds={cfg.data.segment_seconds} gives {segment} samples, e.g. use "
                f"{max(1, segment // hop) * hop / model.sample_rate:g}"
            )
        self.sampler, self.held_out = training_data(cfg.data, model.sample_rate)
        if latest_state(run_dir) is None:
            measure_latent_statistics(model, self.sampler, cfg)  # (a resumed run restores them with the weights)
        optimizer, self.scheduler = self.adamw(model.parameters())
        self.wrapped, self.optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(self.scheduler)
        self.model = accelerator.unwrap_model(self.wrapped)
        self.accelerator = accelerator
        self.per_process = max(1, cfg.data.batch_size // accelerator.num_processes)
        objective = "flow" if self.model.flow.objective == "cfm" else "mse"
        self.loss_tag = f"loss/{objective}"
        self.console_tags = ("loss/total",)

    def resumed(self, step: int) -> None:
        self.model.refresh_identity()  # the loaded weights (and latent statistics) change the fingerprint

    def step(self, step: int) -> StepOutput:
        cfg, acc = self.cfg, self.accelerator
        rank = acc.process_index
        real = self.sampler.batch(self.per_process, seed=cfg.seed, step=step, rank=rank).to(acc.device)  # [B,1,T]
        inputs = self.model.training_inputs(real)  # latents [B, D, F] normalised (+ semantic units), no gradient
        self.wrapped.train()
        out = self.wrapped(**inputs, generator=step_generator(cfg.seed, step, rank))
        loss = out.total
        self.optimizer.zero_grad(set_to_none=True)
        acc.backward(loss)
        grad_norm = acc.clip_grad_norm_(self.wrapped.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        quantizer = self.quantizer(self.model)
        if acc.num_processes > 1 and quantizer is not None:
            sync_quantizer(quantizer)
        scalars = {self.loss_tag if k == "objective" else f"loss/{k}": v for k, v in out.scalars().items()}
        scalars["loss/total"] = float(loss.detach())
        scalars["train/grad_norm"] = float(grad_norm)
        return StepOutput(scalars, work=self.per_process * cfg.data.segment_seconds)

    def scalars(self) -> dict[str, float]:
        values: dict[str, float] = {"train/lr": float(self.scheduler.get_last_lr()[0])}
        quantizer = self.quantizer(self.model)
        if quantizer is not None:
            values["train/codebook_perplexity"] = codebook_perplexity(self.model)  # type: ignore[arg-type]
            values["train/codes_restarted"] = float(quantizer.num_replaced)
        return values

    def evaluate(self) -> dict[str, float]:
        return evaluate_flow(self.model, self.held_out) if self.held_out else {}

    def export(self, accelerator: Accelerator, run_dir: Path, step: int) -> Path:
        return export_run(accelerator, self.model, run_dir, self.cfg, step)


class MSNRecipe(FlowRecipe):
    name = "msn"
    config_class = MSNConfig
    model_class = MSNTokenizer

    def quantizer(self, model: LatentFlowTokenizer) -> VectorQuantizer | None:
        return cast(MSNTokenizer, model).quantizer


class SemanticRecipe(FlowRecipe):
    name = "semantic"
    config_class = SemanticConfig
    model_class = SemanticTokenizer

    def build_trainable(self) -> LatentFlowTokenizer:
        model = self.build()
        weights: dict[str, torch.Tensor] = {}
        if self.cfg.init_weights is not None:
            weights = load_init_weights(model, self.cfg.init_weights, self.name, self.cfg.init_modules)
        if "centroids" not in weights:
            raise SoundtokError(
                "the semantic recipe trains the decoder of fitted units: set init_weights to a safetensors file "
                "holding 'centroids' (benchmarks/semantic_study.py --fit writes one)"
            )
        return model


for _recipe in (MSNRecipe, SemanticRecipe):
    register_recipe(RecipeEntry(_recipe.name, load_config, train, _recipe))


def train_flow(cfg: TrainConfig, run_dir: str | Path, *, max_steps_this_run: int | None = None) -> Path | None:
    """Train (or resume) an msn or semantic tokenizer in ``run_dir``: :func:`loop.train
    <soundtok.train.loop.train>`, refusing configs of other recipes."""
    check_config(cfg)
    return train(cfg, run_dir, max_steps_this_run=max_steps_this_run)
