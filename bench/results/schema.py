"""The result document's schema id and version, and the upgrade of older documents.

The figures each cell carries are derived in ``bench.results.figures``.
"""

from __future__ import annotations

SCHEMA_ID = "joulebench/result"
SCHEMA_VERSION = 3


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


def _v2_to_v3(doc: dict) -> dict:
    # v3 replaced the bootstrap "95%" interval of the median (with 3 repeats always
    # [min, max], really 75%) by the order-statistic interval with its exact coverage
    # (ci_level); each cell's is rederived from its repeats.
    from bench.results.figures import cell_figures

    for c in doc.get("cells", []) if isinstance(doc.get("cells"), list) else []:
        u = c.get("uncertainty") if isinstance(c, dict) else None
        if not isinstance(u, dict):
            continue
        u.pop("output_tokens_per_j_ci95", None)
        try:
            again = cell_figures(c["repeats"], c["scope"])[1]
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            continue  # a damaged cell: the rules say what is wrong with it
        u["output_tokens_per_j_ci"] = again["output_tokens_per_j_ci"]
        u["ci_level"] = again["ci_level"]
    doc["schema_version"] = 3
    return doc


UPGRADES = {1: _v1_to_v2, 2: _v2_to_v3}  # from version -> function returning the next version


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
