"""The result document: schema id and version, and the figures each cell carries.

Every figure of a cell is computed here from its repeats by :func:`cell_figures`, so a
validator can recompute it from the document alone.
"""

from __future__ import annotations

from bench.kernels import stats

SCHEMA_ID = "joulebench/result"
SCHEMA_VERSION = 2


def _v1_to_v2(doc: dict) -> dict:
    # v2 added the idle baseline, the raw-sample trace and per-reading sample statistics.
    doc.setdefault("idle", [])
    doc.setdefault("trace", {"file": None, "reason": "schema v1 recorded no trace"})
    for c in doc.get("cells", []) if isinstance(doc.get("cells"), list) else []:
        for r in c.get("repeats", []) if isinstance(c, dict) else []:
            for rd in r.get("readings", []) if isinstance(r, dict) else []:
                if isinstance(rd, dict):
                    rd.setdefault("stats", None)
    doc["schema_version"] = 2
    return doc


UPGRADES = {1: _v1_to_v2}  # from version -> function returning the next version


def upgrade(doc: dict) -> dict:
    """Bring an older document up to :data:`SCHEMA_VERSION` (in place); newer ones as they are.

    The original version is kept in ``upgraded_from``.
    """
    v = doc.get("schema_version")
    if doc.get("schema") != SCHEMA_ID or not isinstance(v, int) or isinstance(v, bool):
        return doc
    start = v
    while v < SCHEMA_VERSION and v in UPGRADES:
        doc = UPGRADES[v](doc)
        v = doc["schema_version"]
    if v != start:
        doc["upgraded_from"] = start
    return doc

# Figures of one repeat, from its tokens, duration and primary-scope energy.
REPEAT_FIGURES = ("output_tokens_per_j", "total_tokens_per_j", "j_per_output_token",
                  "output_tokens_per_s", "mean_power_w")


def repeat_figures(rep: dict, scope: str) -> dict:
    """Per-repeat figures for ``scope``; energy figures are None where energy is missing."""
    e = rep["energy"].get(scope, {}).get("energy_j")
    out_tok, in_tok, dur = rep["output_tokens"], rep["input_tokens"], rep["duration_s"]
    ok = e is not None and e > 0
    return {
        "output_tokens_per_j": out_tok / e if ok else None,
        "total_tokens_per_j": (out_tok + in_tok) / e if ok else None,
        "j_per_output_token": e / out_tok if ok and out_tok else None,
        "output_tokens_per_s": out_tok / dur if dur > 0 else None,
        "mean_power_w": e / dur if e is not None and dur > 0 else None,
    }


def cell_figures(repeats: list[dict], scope: str,
                 idle_power_w: float | None = None) -> tuple[dict, dict]:
    """The cell's figures (median over repeats) and their spread.

    Returns:
        (figures, uncertainty): figures maps each of :data:`REPEAT_FIGURES` to the median
        of the per-repeat values (None if any repeat lacks it), plus summed energy,
        duration and tokens, the maximum sampled power, and the incremental output
        tokens/J (energy minus idle power x duration) where the idle power is known;
        uncertainty gives min, max and a bootstrap 95% interval of the median output
        tokens/J.
    """
    per = [repeat_figures(r, scope) for r in repeats]
    figures: dict = {}
    for name in REPEAT_FIGURES:
        vals = [p[name] for p in per]
        figures[name] = stats.median(vals) if vals and None not in vals else None
    energies = [r["energy"].get(scope, {}).get("energy_j") for r in repeats]
    figures["energy_j"] = sum(energies) if energies and None not in energies else None
    figures["duration_s"] = sum(r["duration_s"] for r in repeats)
    figures["output_tokens"] = sum(r["output_tokens"] for r in repeats)
    figures["input_tokens"] = sum(r["input_tokens"] for r in repeats)
    maxes = [(rd.get("stats") or {}).get("max_power_w") for r in repeats
             for rd in r.get("readings", []) if rd.get("scope") == scope]
    maxes = [m for m in maxes if m is not None]
    figures["max_power_w"] = max(maxes) if maxes else None
    inc = None
    if idle_power_w is not None and None not in energies:
        vals = []
        for r, e in zip(repeats, energies, strict=True):
            extra = e - idle_power_w * r["duration_s"]
            vals.append(r["output_tokens"] / extra if extra > 0 else None)
        inc = stats.median(vals) if vals and None not in vals else None
    figures["incremental_output_tokens_per_j"] = inc
    tpj = [p["output_tokens_per_j"] for p in per]
    unc: dict = {"repeats": len(repeats), "output_tokens_per_j_min": None,
                 "output_tokens_per_j_max": None, "output_tokens_per_j_ci95": None}
    if tpj and None not in tpj:
        unc["output_tokens_per_j_min"] = min(tpj)
        unc["output_tokens_per_j_max"] = max(tpj)
        ci = stats.bootstrap_ci(tpj)
        unc["output_tokens_per_j_ci95"] = list(ci) if ci else None
    return figures, unc
