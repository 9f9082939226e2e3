"""Numba kernels over traces and repeats, each with a NumPy twin; installed as bench.kernels."""
