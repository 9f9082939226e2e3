"""Known answers for numbering counter refreshes on a grid and for fitting the refresh times."""

import numpy as np
import pytest

from bench.kernels import reference as R
from bench.kernels import trace as T

MS = 1_000_000  # ns per ms
P = 100 * MS  # the grid's period in these cases: 0.1 P = 10 ms and 0.99 P = 99 ms exactly


def kernel_numbers(y, p0):
    num = np.zeros(len(y))
    T._grid_numbers(np.asarray(y, np.float64), float(p0), num)
    return num


def twin_numbers(y, p0):
    return R._grid_numbers(np.asarray(y, np.float64), float(p0))


NUMBERS = [kernel_numbers, twin_numbers]


def periods(*x):
    """Read times in periods of P from the first read, as the kernel takes them (ns)."""
    return [round(v * P) for v in x]


# Each case: read times (in periods), then the grid numbers worked out by hand from the
# rule. Phases are the times mod P. The reference read is the first read (in time order)
# whose phase lies within [phi, phi + 0.1 P) or (phi - 0.01 P, phi) of phi, the earliest
# phase of the densest cluster (phases within 0.1 P of it, around the circle; ties go to
# the earliest phase) of the first 64 reads. Reads before the reference are numbered from
# it, floor(dy / P + 0.1); later reads from the last read as prompt as the reference
# (x = dy / P: floor(x + 0.1), and a read with x - n < 0.05 becomes the one to count from).
CASES = {
    # phases 0, .32, .30, .36, .50, .30: the cluster at .30 holds 4; the first read near
    # it is read 1 (.02 past it). Read 0: floor(-1.32 + .1) = -2. From read 1: read 2 at
    # x .98 -> 1 (prompt: counted from), read 3 x 1.06 -> 2 (not prompt), read 4 x 2.2 ->
    # 3, read 5 x 3.0 -> 4.
    "reference read past the cluster's start": (
        periods(0, 1.32, 2.30, 3.36, 4.50, 5.30), [-2, 0, 1, 2, 3, 4]),
    # phases 0, .28, .35, .20, .30, .39, .395: counts at .20 3, .28 3, .30 4 (.30, .35,
    # .39, .395), so phi = .30; read 1 (.28) lies .98 P after it (not within .99), so the
    # reference is read 2 (.35). Backwards: read 1 floor(-1.07 + .1) = -1, read 0
    # floor(-2.35 + .1) = -3. Read 3 x .85 -> 0 (late: the refresh read 2 saw), read 4
    # x 1.95 -> 2 (prompt), read 5 x 1.09 -> 3, read 6 x 2.095 -> 4.
    "a read late by 0.85 P keeps its refresh's number": (
        periods(0, 1.28, 2.35, 3.20, 4.30, 5.39, 6.395), [-3, -1, 0, 0, 2, 3, 4]),
    # phases 0, .9, .9, .95, .9: the cluster at .9 holds read 0 too (0 + P <= .9 P + .1 P);
    # read 0 lies exactly 0.1 P after phi: not within [phi, phi + 0.1 P), so the reference
    # is read 1. Read 0: floor(-.9 + .1) = -1; reads 2-4: x 1.0 -> 1, x 1.05 -> 2, x 2.0 -> 3.
    "a read exactly 0.1 P past phi is not the reference": (
        periods(0, 0.9, 1.9, 2.95, 3.9), [-1, 0, 1, 2, 3]),
    # phases 0, .01, .02, .105, .108: the count at .01 is 4, at 0 only 3 (.105 is out), so
    # phi = .01 and read 0 lies exactly .99 P after it: not within (phi - .01 P, phi).
    # Reference read 1; read 0 floor(-1.01 + .1) = -1; then x 1.01 -> 1, 1.085 -> 2,
    # 2.088 -> 3.
    "a read exactly 0.99 P past phi is not the reference": (
        periods(0, 1.01, 2.02, 3.105, 4.108), [-1, 0, 1, 2, 3]),
    # phases 0, .005, .02, .102, .104: phi = .005 (4 against 3 at 0); read 0 lies .995 P
    # after it, 0.005 P before it: read 0 is the reference. Then x 1.005 -> 1 (prompt),
    # 1.015 -> 2 (prompt), 1.082 -> 3, 2.084 -> 4.
    "a read just before phi is the reference": (
        periods(0, 1.005, 2.02, 3.102, 4.104), [0, 1, 2, 3, 4]),
    # phases 0, 0, .04, .5, .52, .54: two clusters of 3 (the first phase 0 holds both
    # reads at 0): the tie goes to phase 0, read 0. Then x 1 -> 1, 1.04 -> 2 (prompt),
    # x 1.46 -> 3, 2.48 -> 4, 3.5 -> 5.
    "repeated phases each count": (
        periods(0, 1.0, 2.04, 3.5, 4.52, 5.54), [0, 1, 2, 3, 4, 5]),
    # phases 0, .1, .5, .55: phase .1 lies exactly at the top of 0's cluster and counts:
    # 2 against 2 at .5, the tie to phase 0. Then x 1.1 -> 1, 2.5 -> 2, 3.55 -> 3.
    "a phase exactly 0.1 P above counts": (
        periods(0, 1.1, 2.5, 3.55), [0, 1, 2, 3]),
    # phases 0, .3, .35, .9, .95: the cluster at .9 holds .9, .95 and read 0 (0 + P lies
    # exactly at its top): 3 against 2 at .3. Read 0 is exactly 0.1 P past .9, so the
    # reference is read 3: read 2 floor(-1.55 + .1) = -2, read 1 floor(-2.6 + .1) = -3,
    # read 0 floor(-3.9 + .1) = -4; read 4 x 1.05 -> 1.
    "a phase exactly 0.1 P above, around the circle, counts": (
        periods(0, 1.3, 2.35, 3.9, 4.95), [-4, -3, -2, 0, 1]),
    # phases 0, .5, .9: counts 1, 1, and 2 at .9 (read 0 around the circle): the
    # reference is the last read. Read 1 floor(-1.4 + .1) = -2, read 0 floor(-2.9 + .1) = -3.
    "the reference is the last read": (periods(0, 1.5, 2.9), [-3, -2, 0]),
    # phases 0, .05, .94: 2 at 0 (0, .05), 2 at .94 (.94 and read 0 around the circle):
    # the tie to 0. Read 1 at x .05 -> 0 is not prompt (x - n < 0.05 is false), so read 2
    # is counted from read 0: x .94 -> floor(1.04) = 1.
    "a read 0.05 P late is not counted from": (periods(0, 0.05, 0.94), [0, 0, 1]),
}


@pytest.mark.parametrize("numbers", NUMBERS)
@pytest.mark.parametrize("case", CASES)
def test_grid_numbers_by_hand(numbers, case):
    y, want = CASES[case]
    np.testing.assert_array_equal(numbers(y, P), np.array(want, np.float64))


@pytest.mark.parametrize("numbers", NUMBERS)
def test_only_the_first_64_reads_choose_the_reference(numbers):
    # reads on the grid at even n, half a period late at odd n: 32 phases at 0 and 32 at
    # .5 among the first 64, a tie that goes to 0 (read 0). Read 64, also at .5, would
    # break the tie the other way were it counted. Read 0 is the reference: each odd read
    # is numbered by the refresh before it (x 1.5 -> 1 from the even read before it),
    # read 64 from read 62 (x 2.5 -> 2): every read gets n.
    n = np.arange(65)
    y = n * P + np.where(n % 2 == 1, P // 2, 0)
    y[64] += P // 2
    np.testing.assert_array_equal(numbers(y, P), n.astype(np.float64))


@pytest.mark.parametrize("f", [T, R])
def test_a_period_of_zero_gives_no_fit_and_one_ns_is_a_period(f):
    # most refreshes seen at one time: the median gap is 0, so no period (NaN) and the
    # times are the latest ones
    hi = np.array([10, 10, 10, 20], np.int64)
    u, period = f.refresh_times_ns(hi - 1, hi)
    assert list(u) == [10, 10, 10, 20] and np.isnan(period)
    # a 1 ns grid read promptly: numbers 0..3, period 1 ns, each refresh at its own read
    hi = np.array([10, 11, 12, 13], np.int64)
    u, period = f.refresh_times_ns(hi - 1, hi)
    assert list(u) == [10, 11, 12, 13] and period == 1e-9


@pytest.mark.parametrize("f", [T, R])
def test_a_grid_time_at_the_read_before_is_excluded(f):
    # refreshes every 100 ms seen 0, 3, 0, 3, 0 ms late (the grid: 100, 200, ... ms, as in
    # test_late_reads_are_placed_back_on_the_grid). The read before refresh 1 was at
    # exactly 200 ms and still showed the old value, so refresh 1 happened after 200 ms:
    # (earliest, latest] is open at the left and 200 ms is out. The earliest time left
    # is its own read, 203 ms (403 ms less two periods is 203 ms too).
    hi = np.array([100, 203, 300, 403, 500], np.int64) * MS
    lo = np.array([95, 200, 299, 395, 499], np.int64) * MS
    u, _ = f.refresh_times_ns(lo, hi)
    assert u[1] == 203 * MS and u[3] == 400 * MS


@pytest.mark.parametrize("f", [T, R])
def test_refresh_times_keep_their_order_when_two_refreshes_share_a_grid_time(f):
    # A counter that changed twice in one period (reads at 101 and 102 ms) gives two
    # refreshes with one grid number; the later reads are 4-5 ms late, then 3, and the
    # last is on time, so the fitted period comes out a little short of 100 ms (about
    # 99.89). Refresh 0's neighbours (refreshes 0-8) place it no earlier than its own read
    # at 101 ms; refresh 1's include refresh 9, read on time at 900 ms, eight periods
    # later: 900 - 8 x 99.89 = 100.9 ms, after its earliest time (100 ms), so before the
    # order rule refresh 1 would come before refresh 0. The grid keeps its order: refresh
    # 1 is moved up to refresh 0's time, and every time stays inside its own interval.
    hi = np.array([101, 102, 204, 305, 405, 505, 605, 704, 803, 900], np.int64) * MS
    lo = np.array([96, 100, 101, 204, 305, 405, 505, 603, 702, 803], np.int64) * MS
    u, period = f.refresh_times_ns(lo, hi)
    assert 0.0998 < period < 0.1
    assert np.all(np.diff(u) >= 0) and np.all((lo <= u) & (u <= hi))
    assert u[0] == 101 * MS and u[1] == u[0]
