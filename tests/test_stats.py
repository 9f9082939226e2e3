"""Statistics over repeats against hand-computed values."""

import pytest

from bench.kernels import stats


def test_median():
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([1.0, 2.0, 3.0, 10.0]) == 2.5
    assert stats.median([]) is None
    with pytest.raises(ValueError):
        stats.median([1.0, float("nan")])


def test_bootstrap_is_seeded_and_brackets_the_median():
    x = [10.0, 11.0, 9.5, 10.5, 10.2]
    a = stats.bootstrap_ci(x, seed=1)
    assert a == stats.bootstrap_ci(x, seed=1)
    lo, hi = a
    assert min(x) <= lo <= stats.median(x) <= hi <= max(x)
    assert stats.bootstrap_ci([5.0]) is None
    assert stats.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
