"""``bench compare``: two runs side by side per cell, with thresholds that set the exit code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError

# metric -> +1 where higher is better, -1 where lower is better
METRICS = {"output_tokens_per_j": 1, "total_tokens_per_j": 1, "j_per_output_token": -1,
           "output_tokens_per_s": 1, "mean_power_w": -1}
ALIASES = {"tokens_per_j": "output_tokens_per_j", "tok_per_j": "output_tokens_per_j",
           "tokens_per_s": "output_tokens_per_s", "power_w": "mean_power_w"}


@dataclass(frozen=True)
class Threshold:
    """Fail when ``metric`` gets worse by more than ``fraction``."""

    metric: str
    fraction: float


def parse_threshold(text: str) -> Threshold:
    """``tokens_per_j:5%`` (or ``:0.05``) -> Threshold.

    Raises:
        BenchError: malformed text or unknown metric.
    """
    name, sep, amount = text.partition(":")
    metric = ALIASES.get(name.strip(), name.strip())
    if not sep or metric not in METRICS:
        raise BenchError(f"--fail {text!r}: use METRIC:PCT% with METRIC one of "
                         f"{', '.join(sorted(set(METRICS) | set(ALIASES)))}")
    try:
        frac = float(amount.strip().rstrip("%")) / (100 if amount.strip().endswith("%") else 1)
    except ValueError:
        raise BenchError(f"--fail {text!r}: {amount!r} is not a number") from None
    if not 0 <= frac < 10:
        raise BenchError(f"--fail {text!r}: the threshold must be between 0 and 1000%")
    return Threshold(metric, frac)


def _engine(c: dict) -> str:
    e = c.get("engine")
    return str(e.get("name", "hf")) if isinstance(e, dict) else "hf"


def _key(c: dict) -> tuple:
    """A cell's identity across runs: device, model, dtype, batch, lengths and engine."""
    return (c.get("device"), c.get("model"), c.get("dtype"), c.get("batch_size"),
            c.get("input_len"), c.get("output_len"), _engine(c))


def check_document(doc: dict, origin: str) -> dict:
    """``doc`` if its structure is a result document's (rule ``schema``), else BenchError."""
    from bench.results.validate import rule_schema

    errors = rule_schema(doc)
    if errors:
        raise BenchError(f"{origin}: not a result document to compare ({errors[0]})")
    return doc


def _obj(value) -> dict:
    return value if isinstance(value, dict) else {}


def machine(doc: dict) -> dict:
    """What must match for two runs to be comparable like for like."""
    prov = _obj(doc.get("provenance"))
    libs = _obj(prov.get("libraries"))
    return {"devices": sorted(str(d.get("name")) for d in doc.get("devices", [])
                              if isinstance(d, dict)),
            "cpu": _obj(_obj(prov.get("host")).get("cpu")).get("model"),
            "torch": libs.get("torch"), "transformers": libs.get("transformers")}


def compare(a: dict, b: dict, thresholds: list[Threshold]) -> tuple[list[dict], list[str],
                                                                      list[str]]:
    """Rows per cell present in either run, warnings, and threshold failures.

    Each row: the cell key, and per metric the value in A, in B and the relative change.
    Cells match on their whole key, the engine included; two runs of one engine each,
    different ones (hf in A, vllm in B), match on everything but the engine: that is an
    engine comparison, said in a warning and in each row's ``cell`` (``.../hf->vllm``).
    """
    cells_a = [c for c in a.get("cells", []) if isinstance(c, dict)]
    cells_b = [c for c in b.get("cells", []) if isinstance(c, dict)]
    ea, eb = {_engine(c) for c in cells_a}, {_engine(c) for c in cells_b}
    across = len(ea) == 1 and len(eb) == 1 and ea != eb
    keyof = (lambda c: _key(c)[:-1]) if across else _key
    ca = {keyof(c): c for c in cells_a}
    cb = {keyof(c): c for c in cells_b}
    warnings = []
    suffix = ""
    if across:
        suffix = f"/{ea.pop()}->{eb.pop()}"
        warnings.append(f"engines differ ({suffix[1:]}): cells matched on device, model, "
                        "dtype, batch and lengths")
    ma, mb = machine(a), machine(b)
    for k in ma:
        if ma[k] != mb[k]:
            warnings.append(f"the runs differ in {k}: {ma[k]} vs {mb[k]}")
    rows, failures = [], []
    for key in sorted(set(ca) | set(cb), key=lambda k: tuple(str(x) for x in k)):
        row: dict[str, Any] = {"cell": "/".join(str(x) for x in key) + suffix}
        fa = (ca.get(key) or {}).get("figures") or {}
        fb = (cb.get(key) or {}).get("figures") or {}
        row["in"] = "both" if key in ca and key in cb else ("A only" if key in ca else "B only")
        for m in METRICS:
            va, vb = fa.get(m), fb.get(m)
            change = (vb - va) / va if va and vb is not None else None
            row[m] = (va, vb, change)
        rows.append(row)
        for t in thresholds:
            va, vb, change = row[t.metric]
            if change is not None and -METRICS[t.metric] * change > t.fraction:
                failures.append(f"{row['cell']}: {t.metric} {va:.4g} -> {vb:.4g} "
                                f"({change:+.1%}, limit {t.fraction:.1%})")
    return rows, warnings, failures
