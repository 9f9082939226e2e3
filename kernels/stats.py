"""Statistics of per-repeat figures: median and a seeded bootstrap confidence interval."""

from __future__ import annotations

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
