"""Mini-batch k-means in torch: streaming over a corpus, on the GPU when there is one.

The semantic tokenizer's codebook (:mod:`soundtok.tokenizers.semantic`) is a k-means clustering of encoder
features, as in DASB and HuBERT. Corpora do not fit in memory, so the fit streams batches of feature vectors:

1. **Init**: k-means++ (D^2 sampling, seeded) on the first ``init_size`` vectors (default 3 K) the batches yield,
   so the batches must come in random order (as :func:`soundtok.tokenizers.semantic.fit_centroids` draws them):
   an init from one corner of the data leaves centroids that the running means cannot pull apart.
2. **Mini-batch updates** (Sculley 2010, as scikit-learn's ``MiniBatchKMeans``): each batch ``X [N, D]`` is
   assigned to its nearest centroids; centroid ``k`` then moves to the running mean of every vector ever assigned
   to it, ``c_k <- c_k + (sum of its batch vectors - n_k c_k) / count_k`` with ``count_k`` the total so far.
3. **Dead clusters**: after each pass over the data, a centroid that received fewer than ``reassign_ratio`` times
   the mean count of that pass is moved onto a randomly drawn vector of the last batch (its count reset), so that
   all K codes get used (not after the last pass: a moved centroid needs a pass to settle).

``fit_kmeans`` takes a callable returning a fresh iterator of batches per pass (``passes`` of them). Distances are
squared Euclidean, computed as ``|x|^2 - 2 x.c + |c|^2`` in float32.

>>> g = torch.Generator().manual_seed(0)
>>> x = torch.cat([torch.randn(200, 2, generator=g) * 0.1 + c for c in (torch.tensor([0., 5]), torch.tensor([5., 0]))])
>>> x = x[torch.randperm(400, generator=g)]  # shuffled: the init reads the first batches
>>> result = fit_kmeans(lambda: iter(x.split(100)), num_clusters=2, passes=3, seed=0)
>>> sorted(result.centroids.round().abs().tolist())
[[0.0, 5.0], [5.0, 0.0]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class KMeansResult:
    centroids: Tensor  # [K, D] float32, on the CPU
    inertia: float  # mean squared distance of a vector to its centroid, over the last pass
    counts: Tensor  # [K] vectors assigned to each centroid over the last pass
    reassigned: int  # dead centroids moved over the whole fit


def nearest(x: Tensor, centroids: Tensor, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Index ``[N]`` (int64) of the nearest centroid of each vector of ``x [N, D]``, and the squared distance
    ``[N]``; ``centroids [K, D]``. Runs in chunks of ``chunk`` vectors to bound memory (``chunk x K`` floats)."""
    c = centroids.float()
    c_norm = (c * c).sum(dim=1)  # [K]
    index, dist = [], []
    for part in x.float().split(chunk):
        d = (part * part).sum(dim=1, keepdim=True) - 2 * part @ c.T + c_norm  # [n, K]
        best, arg = d.min(dim=1)
        index.append(arg)
        dist.append(best.clamp(min=0))
    return torch.cat(index), torch.cat(dist)


def kmeans_plus_plus(x: Tensor, num_clusters: int, generator: torch.Generator) -> Tensor:
    """``[K, D]`` initial centroids drawn from ``x [N, D]`` by D^2 sampling (Arthur & Vassilvitskii 2007)."""
    n = x.shape[0]
    if n < num_clusters:
        raise ValueError(
            f"k-means needs at least as many vectors as clusters: got {n} vectors, {num_clusters} clusters"
        )
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    closest = ((x - x[first]) ** 2).sum(dim=1)  # [N]
    for _ in range(1, num_clusters):
        weights = closest.cpu().double()
        pick = (
            int(torch.multinomial(weights / weights.sum(), 1, generator=generator))
            if float(weights.sum()) > 0
            else int(torch.randint(n, (1,), generator=generator))
        )
        centroids.append(x[pick])
        closest = torch.minimum(closest, ((x - x[pick]) ** 2).sum(dim=1))
    return torch.stack(centroids)


def fit_kmeans(
    batches: Callable[[], Iterator[Tensor]],
    num_clusters: int,
    *,
    passes: int = 5,
    init_size: int | None = None,
    reassign_ratio: float = 0.01,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> KMeansResult:
    """Fit ``num_clusters`` centroids to the vectors ``[N, D]`` yielded by ``batches()`` (module docstring)."""
    if num_clusters < 2:
        raise ValueError(f"num_clusters must be at least 2, got {num_clusters}")
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator = torch.Generator().manual_seed(seed)
    init_size = init_size or 3 * num_clusters

    pool, held = [], 0  # the first init_size vectors
    for batch in batches():
        pool.append(batch.float())
        held += batch.shape[0]
        if held >= init_size:
            break
    if not pool:
        raise ValueError("k-means got no feature vectors: the batches are empty")
    sample = torch.cat(pool)[:init_size].to(device)
    centroids = kmeans_plus_plus(sample, num_clusters, generator)  # [K, D]
    totals = torch.zeros(num_clusters, device=device)  # vectors assigned since the start (the step sizes)
    reassigned = 0
    steps = range(passes)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=f"k-means (K={num_clusters})", unit="pass")
    for pass_index in steps:
        counts = torch.zeros(num_clusters, device=device)
        inertia, seen = 0.0, 0
        last = sample
        for batch in batches():
            x = batch.float().to(device)  # [N, D]
            index, dist = nearest(x, centroids)
            batch_counts = torch.bincount(index, minlength=num_clusters).float()  # [K]
            sums = torch.zeros_like(centroids).index_add_(0, index, x)  # [K, D]
            totals += batch_counts
            moved = batch_counts > 0
            step = (sums - batch_counts[:, None] * centroids) / totals.clamp(min=1)[:, None]
            centroids = torch.where(moved[:, None], centroids + step, centroids)
            counts += batch_counts
            inertia += float(dist.sum())
            seen += x.shape[0]
            last = x
        dead = counts < reassign_ratio * counts.mean()
        if bool(dead.any()) and pass_index < passes - 1:  # a moved centroid needs a pass to settle
            picks = torch.randint(last.shape[0], (int(dead.sum()),), generator=generator).to(device)
            centroids[dead] = last[picks]
            totals[dead] = 0
            reassigned += int(dead.sum())
    return KMeansResult(centroids.cpu(), inertia / max(seen, 1), counts.cpu(), reassigned)
