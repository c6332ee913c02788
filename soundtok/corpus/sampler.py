"""Length-bucketing batch sampler: batches of items of similar duration, bounded in total seconds.

Items are sorted by duration and cut into ``num_buckets`` buckets of equal count. Each epoch, items are shuffled
within their bucket, packed greedily into batches of at most ``max_seconds`` (summed durations) and/or
``max_items``, and the batches of all buckets are shuffled together. Everything depends only on
``(seed, epoch)``, so every process of a distributed run computes the same plan and takes every
``world_size``-th batch starting at its ``rank``.

>>> from soundtok.corpus.sampler import BucketBatchSampler
>>> s = BucketBatchSampler([1.0, 2.0, 1.5, 3.0, 0.5], max_seconds=3.0, num_buckets=1, shuffle=False)
>>> list(s)
[[4, 0, 2], [1], [3]]
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[list[int]]):
    """Yields lists of indices into ``durations`` (seconds per item).

    A batch holds at most ``max_items`` items and at most ``max_seconds`` of audio in total; an item longer
    than ``max_seconds`` forms a batch on its own. With ``world_size > 1``, rank ``r`` gets batches
    ``r, r + world, ...``; ``even_batches`` (default) makes every rank get the same number of batches, by
    repeating batches from the start of the epoch's plan or, with ``drop_last``, dropping the last ones,
    so that collective operations in a training loop never wait for a rank that has run out.
    """

    def __init__(
        self,
        durations: Sequence[float],
        *,
        max_seconds: float | None = None,
        max_items: int | None = None,
        num_buckets: int = 10,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        even_batches: bool = True,
        drop_last: bool = False,
    ) -> None:
        if max_seconds is None and max_items is None:
            raise ValueError("give max_seconds (total audio per batch) and/or max_items (items per batch)")
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        if max_items is not None and max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        if num_buckets < 1:
            raise ValueError(f"num_buckets must be at least 1, got {num_buckets}")
        self.durations = [float(d) for d in durations]
        if any(not math.isfinite(d) or d < 0 for d in self.durations):
            raise ValueError("durations must be finite and >= 0 seconds")
        if rank is None or world_size is None:
            default_rank, default_world = _dist_rank_world()
            rank = default_rank if rank is None else rank
            world_size = default_world if world_size is None else world_size
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.max_seconds, self.max_items = max_seconds, max_items
        self.num_buckets, self.shuffle, self.seed = num_buckets, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.even_batches, self.drop_last = even_batches, drop_last
        self.epoch = 0
        order = sorted(range(len(self.durations)), key=lambda i: (self.durations[i], i))
        n = len(order)
        edges = [round(b * n / num_buckets) for b in range(num_buckets + 1)]
        self.buckets = [order[lo:hi] for lo, hi in zip(edges[:-1], edges[1:], strict=True) if hi > lo]
        self._plan_cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of ``epoch`` (call before each epoch, as with DistributedSampler)."""
        self.epoch = epoch

    def _pack(self, indices: list[int]) -> list[list[int]]:
        batches: list[list[int]] = []
        batch: list[int] = []
        seconds = 0.0
        for i in indices:
            d = self.durations[i]
            full = (self.max_items is not None and len(batch) >= self.max_items) or (
                self.max_seconds is not None and batch and seconds + d > self.max_seconds
            )
            if full:
                batches.append(batch)
                batch, seconds = [], 0.0
            batch.append(i)
            seconds += d
        if batch:
            batches.append(batch)
        return batches

    def plan(self, epoch: int | None = None) -> list[list[int]]:
        """Every batch of ``epoch`` (default: the current one), all ranks together, in order."""
        epoch = self.epoch if epoch is None else epoch
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return [list(b) for b in self._plan_cache[1]]
        rng = random.Random(f"{self.seed}:{epoch}")
        batches = []
        for bucket in self.buckets:
            members = list(bucket)
            if self.shuffle:
                rng.shuffle(members)
            batches.extend(self._pack(members))
        if self.shuffle:
            rng.shuffle(batches)
        self._plan_cache = (epoch, batches)
        return [list(b) for b in batches]

    def _mine(self) -> list[list[int]]:
        batches = self.plan()
        if self.world_size > 1 and self.even_batches and len(batches) % self.world_size:
            if self.drop_last:
                batches = batches[: len(batches) - len(batches) % self.world_size]
            else:
                short = self.world_size - len(batches) % self.world_size
                batches = batches + [batches[i % len(batches)] for i in range(short)]
        return batches[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())


def _dist_rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
