"""The result document's schema id and version, and the upgrade of older documents.

The figures each cell carries are derived in ``bench.results.figures``.
"""

from __future__ import annotations

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
