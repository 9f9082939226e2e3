"""The reference empirical table: ML.ENERGY leaderboard rows shipped with the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError

if TYPE_CHECKING:
    import pandas as pd

FILE = "mlenergy_leaderboard.csv"
# Installed from a wheel: package data of bench.results.reference_data (pyproject maps it
# from results/reference/). An editable install does not make that data-only package
# importable (tried: setuptools' editable finder maps packages with modules), so there
# the same folder is read from the source checkout.
_PACKAGE = "bench.results.reference_data"
_REPO_DIR = Path(__file__).resolve().parents[2] / "results" / "reference"


def reference_path():
    """Where the reference table is read from (a package resource or the repo folder).

    Raises:
        BenchError: neither is present (one line).
    """
    try:
        res = resources.files(_PACKAGE) / FILE
        if res.is_file():
            return res
    except (ModuleNotFoundError, TypeError):
        pass
    path = _REPO_DIR / FILE
    if path.is_file():
        return path
    raise BenchError(f"the reference table {FILE} is not installed (neither package "
                     f"{_PACKAGE} nor {_REPO_DIR}); use --no-reference")


def load_reference():
    """The ML.ENERGY leaderboard (February 2026) as table rows, ``source = external:ml.energy``.

    Returns:
        A pandas DataFrame with exactly the table's columns
        (:data:`bench.results.table.COLUMN_NAMES`), one row per leaderboard configuration
        of a model whose energy is per token (results/reference/PROVENANCE.md).
    """
    import pandas as pd

    from bench.results.columns import COLUMN_NAMES, missing_columns, with_added_columns

    with reference_path().open("rb") as f:
        df = pd.read_csv(f)
    missing = missing_columns(df.columns)
    if missing:
        raise BenchError(f"the reference table lacks column {missing[0]}")
    df = with_added_columns(df)
    return df[list(COLUMN_NAMES)]


def missing_from(frames) -> pd.DataFrame:
    """Reference rows not already in ``frames`` (same source, run and cell), to append.

    A table file written by ``bench table`` already holds the reference rows; they are not
    added twice.
    """
    ref = load_reference()
    seen: set[tuple[str, str, str]] = set()
    for f in frames:
        if len(f):
            seen.update(zip(f["source"].astype(str), f["run_id"].astype(str),
                            f["cell_id"].astype(str), strict=True))
    if not seen:
        return ref
    keep = [k not in seen for k in zip(ref["source"].astype(str), ref["run_id"].astype(str),
                                       ref["cell_id"].astype(str), strict=True)]
    return ref[keep]
