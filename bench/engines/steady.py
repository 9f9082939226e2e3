"""A steady-state window's load figures from the client's request records (pure functions).

A window [t0, t1) counts the output tokens whose chunks arrived inside it (as ML.ENERGY's
benchmark does), the input tokens of requests whose first token arrived inside it (their
prefill finished there), the requests that streamed inside it, and the latencies of the
requests that began or ended inside it. Where a server reports ``usage`` and it differs
from the streamed chunks, each chunk is weighted so a request's chunks add up to its usage.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

# A client whose event loop is busier than this fraction of one core, or whose loop lag
# (the median lateness of a 5 ms timer) is over LAG_LIMIT_S, may be holding the server
# back. The lag limit is loose: on a shared 2-core machine with a load average of 6 the
# median lag was 65 ms with the loop's thread only 18% busy (it waits for a core).
CLIENT_CPU_LIMIT = 0.8
LAG_LIMIT_S = 0.1
QUANTILES = (("median", 50.0), ("p90", 90.0), ("p99", 99.0))


def quantiles(vals: list[float]) -> dict[str, float | None]:
    """Median, p90 and p99 (linear interpolation), or None each where ``vals`` is empty."""
    import numpy as np

    if not vals:
        return {name: None for name, _ in QUANTILES}
    a = np.asarray(vals, dtype=float)
    return {name: float(np.percentile(a, q)) for name, q in QUANTILES}


def window_load(requests: Iterable[Any], t0_ns: int, t1_ns: int, input_len: int,
                output_len: int) -> dict[str, Any]:
    """The load figures of one window.

    Args:
        requests: :class:`bench.engines.loadgen.Request` records (any order).
        t0_ns, t1_ns: the window's edges on CLOCK_MONOTONIC.
        input_len, output_len: what each request asked for.

    Returns:
        output_tokens (int, rounded weighted count), input_tokens, requests_streaming
        (requests with a chunk inside), requests_finished (finished without error inside),
        ttft_s and tpot_s quantiles, errors by kind, short_outputs (finished with fewer
        tokens than asked: the server ignored ``ignore_eos``), usage_mismatches.
    """
    out_tok = 0.0
    in_tok = streaming = finished = short = mismatches = 0
    ttft: list[float] = []
    tpot: list[float] = []
    errors: dict[str, int] = {}
    for r in requests:
        arr = r.arrivals_ns
        streamed = r.streamed_tokens
        if arr:
            lo, hi = bisect_left(arr, t0_ns), bisect_left(arr, t1_ns)
            if hi > lo:
                streaming += 1
                n = sum(r.chunk_tokens[lo:hi])
                w = (r.usage_output / streamed if r.usage_output is not None and streamed
                     else 1.0)
                out_tok += n * w
            if t0_ns <= arr[0] < t1_ns:
                in_tok += r.usage_input if r.usage_input is not None else input_len
                ttft.append((arr[0] - r.start_ns) * 1e-9)
        if r.end_ns is None or not t0_ns <= r.end_ns < t1_ns:
            continue
        if r.error is not None:
            kind = r.error.split(" (")[0]
            errors[kind] = errors.get(kind, 0) + 1
            continue
        finished += 1
        if r.usage_output is not None and r.usage_output != streamed:
            mismatches += 1
        made = r.output_tokens
        if made < output_len:
            short += 1
        if made > 1 and arr:
            tpot.append((arr[-1] - arr[0]) * 1e-9 / (made - 1))
    return {"output_tokens": int(round(out_tok)), "input_tokens": in_tok,
            "requests_streaming": streaming, "requests_finished": finished,
            "ttft_s": quantiles(ttft), "tpot_s": quantiles(tpot),
            "errors": errors, "request_errors": sum(errors.values()),
            "short_outputs": short, "usage_mismatches": mismatches}


def client_block(cpu_s: float | None, duration_s: float, lags_s: list[float]) -> dict:
    """The client's own load over a window and whether it may be the bottleneck."""
    frac = cpu_s / duration_s if cpu_s is not None and duration_s > 0 else None
    lag = quantiles(lags_s)
    saturated = bool((frac is not None and frac > CLIENT_CPU_LIMIT)
                     or (lag["median"] is not None and lag["median"] > LAG_LIMIT_S))
    return {"loop_cpu_fraction": frac, "loop_lag_s": lag,
            "loop_lag_max_s": max(lags_s) if lags_s else None,
            "cpu_limit_fraction": CLIENT_CPU_LIMIT, "lag_limit_s": LAG_LIMIT_S,
            "client_saturated": saturated}
