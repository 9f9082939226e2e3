"""Statistics of per-repeat figures: median, its order-statistic interval, a bootstrap."""

from __future__ import annotations

import math

import numpy as np


def _as_values(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError("values must be one-dimensional")
    if np.isnan(x).any():
        raise ValueError("values contain NaN")
    return x


def median(values) -> float | None:
    """Median of the values; None for none."""
    x = _as_values(values)
    return float(np.median(x)) if x.size else None


def bootstrap_ci(values, confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the median, with a fixed seed.

    Args:
        values: per-repeat figures.
        confidence: two-sided level, in (0, 1).
        resamples: bootstrap resamples.
        seed: generator seed, so the same repeats always give the same interval.

    Returns:
        (low, high), or None with fewer than two values.
    """
    x = _as_values(values)
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    if x.size < 2:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(resamples, x.size))
    medians = np.median(x[idx], axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(medians, [alpha, 1 - alpha])
    return float(lo), float(hi)


def median_coverage(n: int, j: int) -> float:
    """Exact probability that [x(j), x(n+1-j)] of n repeats holds the true median.

    For any continuous distribution each repeat falls below the median with probability
    1/2, so the count below it is Binomial(n, 1/2), and the interval misses the median
    when fewer than j fall on one side: coverage = 1 - 2 * sum_{i<j} C(n, i) / 2^n.
    """
    if not 1 <= j <= (n + 1) // 2:
        raise ValueError("j must be in 1 .. (n + 1) // 2")
    miss = sum(math.comb(n, i) for i in range(j))
    return 1.0 - 2.0 * miss / 2.0**n


def median_ci(values, level: float = 0.95) -> tuple[float, float, float] | None:
    """Distribution-free interval of the median from order statistics, with its coverage.

    The narrowest [x(j), x(n+1-j)] whose exact coverage (:func:`median_coverage`) is at
    least ``level``; with too few repeats for that, [min, max] and its lower coverage, so
    the coverage returned is always the true one, and the level asked for belongs next to
    it in the record. Coverage of [min, max] is 1 - 2^(1-n): 50% at 2 repeats, 75% at 3,
    93.75% at 5, 96.9% at 6, so six repeats are the fewest that reach 95%.

    Args:
        values: per-repeat figures (no NaN).
        level: the coverage asked for, in (0, 1).

    Returns:
        (low, high, coverage), or None for no values.
    """
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    x = np.sort(_as_values(values))
    n = int(x.size)
    if n == 0:
        return None
    j = 1
    while j + 1 <= (n + 1) // 2 and median_coverage(n, j + 1) >= level:
        j += 1
    return float(x[j - 1]), float(x[n - j]), median_coverage(n, j)
