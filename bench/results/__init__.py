"""Result documents: schema, durable io, the empirical table (``load_table``) and imports."""

from bench.results.table import COLUMN_NAMES, load_table

__all__ = ["COLUMN_NAMES", "load_table"]
