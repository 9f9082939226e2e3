"""Input checks shared by the kernels and their twins: 1-D, equal lengths, sorted, no NaN."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _first_unsorted(t):
    for i in range(1, t.shape[0]):
        if t[i] < t[i - 1]:
            return i
    return -1


@numba.njit(cache=True, nogil=True)
def _first_nan(x):
    for i in range(x.shape[0]):
        if np.isnan(x[i]):
            return i
    return -1


def unsorted_error(name: str, i: int) -> ValueError:
    """The error for an unsorted array, first out of order at index i."""
    return ValueError(f"{name} is not sorted: {name}[{i}] < {name}[{i - 1}]")


def nan_error(name: str, i: int) -> ValueError:
    """The error for a NaN at index i."""
    return ValueError(f"{name}[{i}] is NaN")


def times(t, name: str = "t_ns", scan: bool = True) -> np.ndarray:
    """A sorted 1-D int64 array of monotonic timestamps in ns, or ValueError.

    ``scan=False`` leaves the sortedness check to a kernel that checks as it reads.
    """
    a = np.asarray(t)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if a.dtype.kind == "f":
        if a.size and _first_nan(a.astype(np.float64, copy=False)) >= 0:
            raise ValueError(f"{name} contains NaN")
        a = a.astype(np.int64)
    elif a.dtype != np.int64:
        a = a.astype(np.int64)
    a = np.ascontiguousarray(a)
    i = _first_unsorted(a) if scan else -1
    if i >= 0:
        raise unsorted_error(name, i)
    return a


def values(x, n: int, name: str, scan: bool = True) -> np.ndarray:
    """A 1-D float64 array of length n with no NaN, or ValueError (NaN unchecked if not scan)."""
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if a.shape[0] != n:
        raise ValueError(f"{name} has {a.shape[0]} samples, the timestamps {n}")
    i = _first_nan(a) if a.size and scan else -1
    if i >= 0:
        raise nan_error(name, i)
    return a
