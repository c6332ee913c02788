"""Training configs: pydantic models read from YAML, with ``key=value`` overrides from the command line.

>>> cfg = TrainConfig.model_validate({"model": {"channels": 8}, "steps": 10})
>>> cfg.steps, cfg.optim.lr
(10, 0.0001)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field

from soundtok.errors import SoundtokError


class Strict(BaseModel):
    """A config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=Strict)


class DataConfig(Strict):
    manifest: Path | None = None  # a manifest JSONL (soundtok manifest); else the shared corpus below
    corpus: Path | None = None  # default: $SOUNDTOK_CORPUS or ../shared/corpus
    shard: Path | None = None  # a training shard folder (soundtok.train.shard): replaces manifest and corpus
    datasets: list[str] | None = None  # default: every dataset of the corpus
    train_split: str = "train"
    eval_split: str = "test"
    segment_seconds: float = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=1)
    # speed perturbation: each crop played at a random speed in 1 +- this (pitch and tempo together); 0: off.
    # Resampling empties the top of the band, and a codec trained so learns to drop the noise floor: 0.1 cost
    # codec-16k 0.5 nats of held-out mel distance in quiet frames within 150 steps (docs/gpu_pack.md). Not for
    # full-band generators.
    speed_perturb: float = Field(0.0, ge=0.0, lt=0.5)
    eval_items: int = Field(8, ge=1)  # held-out clips scored at each evaluation
    eval_seconds: float = Field(4.0, gt=0)


class OptimConfig(Strict):
    lr: float = 1e-4
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.0
    lr_decay: float = 0.999996  # per step (exponential), as in DAC
    grad_clip: float = 1000.0


class LossWeights(Strict):
    mel: float = 6.5  # DAC's 15 for log10 mels; soundtok's log-mel is natural log (15 / ln 10)
    stft: float = 0.0
    adversarial: float = 1.0
    feature_matching: float = 2.0
    commitment: float = 0.25
    codebook: float = 1.0
    # the llm_codec recipe's level-1 semantic and level-2 consistency losses (soundtok.tokenizers.llm_codec)
    semantic: float = 1.0
    consistency: float = 1.0
    # the llm_codec recipe's code-usage term: 1 - entropy of each level's batch-mean soft assignment / log(size)
    diversity: float = 0.0


class TrainConfig(Strict):
    recipe: str = "codec"
    name: str = "codec-16k"
    model: dict[str, Any] = Field(default_factory=dict)  # fields of the family's config dataclass
    discriminator: dict[str, Any] = Field(default_factory=dict)
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    loss: LossWeights = Field(default_factory=LossWeights)
    steps: int = Field(100_000, ge=1)
    adversarial_start: int = Field(0, ge=0)  # steps of reconstruction-only warm-up
    log_every: int = Field(50, ge=1)
    eval_every: int = Field(1000, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = 0
    export_dtype: str = "float16"
    # "bf16": autocast (the quantizer's search and the losses stay fp32); with CUDA, fp32 matmuls use TF32
    precision: Literal["fp32", "bf16"] = "fp32"
    # wall-clock budget of this run: save a state and stop after it (a rerun continues); None: until ``steps``
    max_minutes: float | None = Field(None, gt=0)
    # a safetensors file (or a checkpoint folder holding model.safetensors) loaded into the fresh model before
    # step 0, keys it lacks left as built: fine-tuning from exported weights (codec, vocoder, msn), or the fitted
    # k-means centroids of the semantic recipe (benchmarks/semantic_study.py --fit)
    init_weights: Path | None = None
    # load only the init_weights tensors whose names start with one of these (e.g. [encoder., decoder.] to start a
    # new family from another's autoencoder); None: all of them
    init_modules: list[str] | None = None


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


def read_raw_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """A YAML config as a dict with ``a.b=value`` overrides applied (values parsed as YAML: ``steps=100``,
    ``x=[1,2]``)."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SoundtokError(f"{path}: cannot read the training config ({exc})") from None
        if not isinstance(raw, dict):
            raise SoundtokError(f"{path}: a training config is a YAML mapping (key: value lines)")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SoundtokError(f"override {item!r} must look like key=value (e.g. steps=1000)")
        _set(raw, key.strip(), yaml.safe_load(value))
    return raw


def read_config(path: str | os.PathLike[str] | None, overrides: list[str] | None, schema: type[S]) -> S:
    """:func:`read_raw_config` validated by the pydantic model ``schema``."""
    raw = read_raw_config(path, overrides)
    try:
        return schema.model_validate(raw)
    except Exception as exc:  # pydantic's ValidationError lists every bad field
        raise SoundtokError(f"invalid training config: {exc}") from None


def load_config(path: str | os.PathLike[str] | None, overrides: list[str] | None = None) -> TrainConfig:
    """A codec, vocoder, msn or semantic recipe's :class:`TrainConfig` from YAML + overrides."""
    return read_config(path, overrides, TrainConfig)
