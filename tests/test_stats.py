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


# Coverage by hand: [x(j), x(n+1-j)] misses when fewer than j of n fall on one side,
# so coverage = 1 - 2 * (C(n,0) + ... + C(n,j-1)) / 2^n.
@pytest.mark.parametrize("n, j, want", [
    (1, 1, 0.0),               # 1 - 2 * 1/2
    (2, 1, 0.5),               # 1 - 2 * 1/4
    (3, 1, 0.75),              # 1 - 2 * 1/8
    (5, 1, 0.9375),            # 1 - 2 * 1/32
    (6, 1, 0.96875),           # 1 - 2 * 1/64 = 62/64
    (6, 2, 0.78125),           # 1 - 2 * (1 + 6)/64 = 50/64
    (9, 2, 0.9609375),         # 1 - 2 * (1 + 9)/512 = 492/512
    (9, 3, 0.8203125),         # 1 - 2 * (1 + 9 + 36)/512 = 420/512
    (10, 2, 0.978515625),      # 1 - 2 * (1 + 10)/1024 = 1002/1024
    (10, 3, 0.890625),         # 1 - 2 * (1 + 10 + 45)/1024 = 912/1024
])
def test_median_coverage_known_answers(n, j, want):
    assert stats.median_coverage(n, j) == want


def test_median_ci_three_repeats_is_min_max_at_75_percent():
    assert stats.median_ci([10.0, 12.0, 11.0]) == (10.0, 12.0, 0.75)
    assert stats.median_ci([3.0, 1.0]) == (1.0, 3.0, 0.5)
    assert stats.median_ci([7.0]) == (7.0, 7.0, 0.0)
    assert stats.median_ci([]) is None


def test_median_ci_six_repeats_reach_95_percent_and_five_do_not():
    assert stats.median_ci([6.0, 1.0, 5.0, 2.0, 4.0, 3.0]) == (1.0, 6.0, 0.96875)
    lo, hi, cov = stats.median_ci([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (lo, hi, cov) == (1.0, 5.0, 0.9375) and cov < 0.95


def test_median_ci_narrows_when_the_repeats_allow():
    x = [float(v) for v in range(1, 11)]  # 10 repeats: j = 2 gives 97.85% >= 95%
    assert stats.median_ci(x) == (2.0, 9.0, 0.978515625)
    assert stats.median_ci(x, level=0.85) == (3.0, 8.0, 0.890625)  # j = 4: 65.6% < 85%
    assert stats.median_ci(x, level=0.99) == (1.0, 10.0, 1 - 2 / 1024)
    x9 = [float(v) for v in range(9, 0, -1)]
    assert stats.median_ci(x9) == (2.0, 8.0, 0.9609375)


def test_median_ci_rejects_bad_input():
    for level in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError):
            stats.median_ci([1.0, 2.0], level)
    with pytest.raises(ValueError):
        stats.median_ci([1.0, float("nan")])
    with pytest.raises(ValueError):
        stats.median_coverage(4, 3)
    with pytest.raises(ValueError):
        stats.median_coverage(4, 0)


def test_bootstrap_of_three_repeats_is_min_max():
    # finding 2 of the issue: the old interval of 3 repeats is [min, max] (75%, not 95%)
    assert stats.bootstrap_ci([10.0, 12.0, 11.0]) == (10.0, 12.0)


def test_median_ci_at_low_levels_and_exact_ties():
    x = [4.0, 1.0, 3.0, 2.0]
    # n = 4, level 0.3: j = 2 gives [x(2), x(3)] = [2, 3] with C(4,2)/16 = 0.375 >= 0.3;
    # j = 3 does not exist (j <= (n + 1) // 2 = 2)
    assert stats.median_ci(x, level=0.3) == (2.0, 3.0, 0.375)
    # a coverage exactly at the level is enough: n = 6, j = 2 gives 50/64 = 0.78125
    assert stats.median_ci([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], level=0.78125) == (2.0, 5.0, 0.78125)
    # odd n at a low level: the middle order statistic has coverage 0, so j stops before
    assert stats.median_ci([1.0, 2.0, 3.0], level=0.1) == (1.0, 3.0, 0.75)


def test_bootstrap_levels_and_sizes_by_hand():
    # resampled medians of [1, 3]: 1 (1/4), 2 (1/2), 3 (1/4); a 40% interval (quantiles
    # 0.3 and 0.7) lies inside the middle half: (2, 2)
    assert stats.bootstrap_ci([1.0, 3.0], confidence=0.4) == (2.0, 2.0)
    assert stats.bootstrap_ci([1.0, 3.0]) == (1.0, 3.0)  # two values are enough
    for c in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            stats.bootstrap_ci([1.0, 2.0], confidence=c)
