"""Intervals and paired tests used by every benchmark: one definition each.

- :func:`mean_ci`: mean and the half-width of a Student-t interval (95% by default) over items (clips, speakers,
  seeds).
- :func:`bootstrap` (any statistic), :func:`bootstrap_mean` and :func:`bootstrap_ratio` (a corpus-level rate): 95%
  percentile bootstrap intervals over items, seeded so a report is reproducible.
- :func:`wilson`: the Wilson score interval of a proportion (accuracy over episodes or test items).
- :func:`mcnemar`: the exact two-sided McNemar test for two systems scored on the same items.

>>> m, h = mean_ci([1.0, 2.0, 3.0])
>>> m, round(h, 3)
(2.0, 2.484)
>>> [round(x, 3) for x in wilson(60, 100)]
[0.502, 0.691]
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

import numpy as np

#: two-sided 95% Student-t quantiles t(0.975, df) for df = 1..30 (scipy.stats.t.ppf, 12 significant digits)
_T975 = (
    12.7062047362, 4.30265272975, 3.18244630528, 2.7764451052, 2.57058183564, 2.44691185114,
    2.36462425159, 2.3060041352, 2.2621571628, 2.22813885199, 2.20098516009, 2.17881282967,
    2.16036865646, 2.14478668792, 2.13144954556, 2.11990529922, 2.10981557783, 2.10092204024,
    2.09302405441, 2.08596344727, 2.07961384473, 2.0738730679, 2.06865761042, 2.06389856163,
    2.05953855275, 2.05552943864, 2.05183051648, 2.0484071418, 2.04522964213, 2.0422724563,
)  # fmt: skip
_Z975 = 1.959963984540054  # the normal quantile


def t_quantile_975(df: int) -> float:
    """t(0.975, df): tabulated up to 30, then the Cornish-Fisher expansion to 1/df^4 (Abramowitz & Stegun 26.7.5,
    error < 3e-8), so intervals need no scipy."""
    if df < 1:
        raise ValueError("a t interval needs at least 2 values")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student-t quantile ``t((1 + confidence) / 2, df)``: the table for 95%, else scipy's."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if confidence == 0.95:
        return t_quantile_975(df)
    if df < 1:
        raise ValueError("a t interval needs at least 2 values")
    from scipy.stats import t

    return float(t.ppf((1 + confidence) / 2, df))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its t-interval (half-width NaN for a single value; ValueError for none)."""
    if not values:
        raise ValueError("mean_ci of no values")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, t_quantile(confidence, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def bootstrap(
    stat: Callable[[np.ndarray], float], n: int, *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``stat(indices)`` over ``n`` items resampled with replacement
    (``(nan, nan)`` for fewer than 2 items).

    ``stat`` gets an index array of ``n`` draws, so a statistic of several paired arrays (a ratio of sums, a
    paired difference) resamples whole items:

    >>> x = np.array([1.0, 2.0, 4.0, 8.0])
    >>> low, high = bootstrap(lambda i: float(np.median(x[i])), len(x))
    >>> 1.0 <= low <= 3.0 <= high <= 8.0
    True
    """
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = np.array([stat(rng.integers(0, n, n)) for _ in range(resamples)])
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def bootstrap_ratio(
    numerator: Sequence[float], denominator: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of ``sum(numerator) / sum(denominator)`` over items: a corpus-level rate
    such as a pooled WER (word errors / reference words, resampling whole utterances).

    >>> low, high = bootstrap_ratio([1, 0, 3, 2], [10, 5, 12, 8])
    >>> low <= 6 / 35 <= high
    True
    """
    num, den = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if num.shape != den.shape:
        raise ValueError(f"numerator and denominator differ in length: {num.shape} vs {den.shape}")
    return bootstrap(lambda idx: float(num[idx].sum() / den[idx].sum()), len(num), resamples=resamples, seed=seed)


def bootstrap_mean(values: Sequence[float], *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values`` (see :func:`bootstrap`)."""
    x = np.asarray(values, dtype=np.float64)
    return bootstrap(lambda idx: float(x[idx].mean()), len(x), resamples=resamples, seed=seed)


def wilson(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default); (0, 1) when there are no trials."""
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value for paired outcomes (binomial test on the discordant pairs).

    >>> round(mcnemar([True] * 20 + [False] * 5, [False] * 20 + [False] * 5), 6)
    2e-06
    """
    if len(a) != len(b):
        raise ValueError("mcnemar needs paired outcomes of equal length")
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
