"""One training crop: how long it is cut under speed perturbation, and how it is played back to the segment length.
Shared by the samplers of a manifest (:class:`soundtok.train.data.CropSampler`) and of a training shard
(:class:`soundtok.train.shard.ShardSampler`), so both perturb alike."""

from __future__ import annotations

import random

import torch

from soundtok.audio.io import resample


def crop_length(segment: int, speed_perturb: float, rng: random.Random) -> int:
    """Samples to crop for one ``segment``: ``segment`` times a speed factor drawn uniformly from
    ``1 +- speed_perturb`` (no draw when 0, so the batches of runs without perturbation are unchanged)."""
    return segment if not speed_perturb else int(round(segment * rng.uniform(1 - speed_perturb, 1 + speed_perturb)))


def speed_perturbed(crop: torch.Tensor, segment: int) -> torch.Tensor:
    """``crop [L]`` resampled to ``segment`` samples: played faster (``L > segment``) or slower, which moves pitch
    and tempo together (Kaldi's speed perturbation; Ko et al. 2015). A crop of ``segment`` samples is returned
    unchanged. The result has nothing above ``min(L, segment) / max(L, segment)`` of the Nyquist frequency: fine
    for recognisers, harmful for generators that must rebuild the whole band (see ``DataConfig.speed_perturb``)."""
    return crop if crop.shape[-1] == segment else resample(crop, crop.shape[-1], segment)
