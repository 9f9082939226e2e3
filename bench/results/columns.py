"""The empirical table's columns, with what each means: one leaf module every reader shares."""

from __future__ import annotations

from typing import Any

TABLE_SCHEMA_VERSION = 3

# (column, meaning). The order is the table's order; every row has every column.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("table_schema_version", "version of these columns"),
    ("source", "joulebench, or external:<origin> for imported rows"),
    ("run_id", "run the cell belongs to (or the imported file)"),
    ("cell_id", "device/model/dtype/batch/input/output"),
    ("device", "gpu<N> or cpu"),
    ("device_name", "device model name (for imports: the GPU model)"),
    ("num_devices", "GPUs the cell ran on together (--gpus-per-cell; its energy is their "
     "sum)"),
    ("engine", "what generated the tokens: hf, vllm or endpoint"),
    ("model", "model name"),
    ("dtype", "weights and activations"),
    ("batch_size", "sequences per generate call (imports: max concurrent sequences)"),
    ("input_len", "prompt tokens per sequence (null where not fixed)"),
    ("output_len", "generated tokens per sequence (null where not fixed)"),
    ("status", "ok, oom, skipped, error, lost (its node or Ray actor died)"),
    ("scope", "what the energy covers: gpu, cpu, dram, node, system"),
    ("energy_method", "counter, power_integration or estimate"),
    ("output_tokens_per_j", "output tokens per joule (median over repeats)"),
    ("total_tokens_per_j", "input + output tokens per joule"),
    ("j_per_output_token", "joules per output token"),
    ("output_tokens_per_s", "output tokens per second"),
    ("output_tokens_per_s_per_gpu", "output tokens per second per GPU of the cell "
     "(output_tokens_per_s / num_devices)"),
    ("mean_power_w", "mean power over the windows, W"),
    ("output_tokens_per_j_ci_low", "interval of the median (order statistics), low"),
    ("output_tokens_per_j_ci_high", "interval of the median (order statistics), high"),
    ("ci_level", "the interval's exact coverage (3 repeats: 0.75; 6 or more: >= 0.95)"),
    ("repeats", "measured windows"),
    ("energy_j", "energy over all windows, J"),
    ("duration_s", "time over all windows, s"),
    ("idle_power_w", "the device's idle power before the sweep, W"),
    ("incremental_output_tokens_per_j", "output tokens per joule above idle power"),
    ("max_power_w", "highest sampled power, W"),
    ("ttft_s", "time to first token, median over calls, s"),
    ("prefill_j_per_input_token", "prefill energy per input token (subtraction method), J"),
    ("decode_j_per_output_token", "decode energy per output token (subtraction method), J"),
    ("roofline_fraction", "fraction of the device's energy roofline at TDP"),
    ("contended", "another process computed on the GPU during the cell"),
    ("node_tokens_per_j", "output tokens per joule of the whole node (its BMC), where "
     "measured"),
    ("throttled_windows", "windows (repeats and prefill) whose GPU clocks were held down by "
     "a power cap or heat (null on the CPU and for imports)"),
    ("power_limit_w", "the GPU's enforced power limit during the cell (the power-limit "
     "axis), W; null where the run did not set one"),
    ("node_hostname", "the cluster node that measured the cell (null off a Ray cluster)"),
    ("ray_node_id", "that node's Ray node id (null off a Ray cluster)"),
    ("harness_version", "joulebench version (null for imports)"),
    ("git_commit", "harness commit (null for imports)"),
)
COLUMN_NAMES = tuple(c for c, _ in COLUMNS)
TEXT_COLUMNS = ("source", "run_id", "cell_id", "device", "device_name", "engine", "model",
                "dtype", "status", "scope", "energy_method", "harness_version", "git_commit",
                "node_hostname", "ray_node_id")
NUMERIC_COLUMNS = tuple(c for c in COLUMN_NAMES if c not in (*TEXT_COLUMNS, "contended"))

# Columns added after version 1, by the version that added them: a table file of an
# older version is read with them null.
ADDED = {"node_tokens_per_j": 2, "output_tokens_per_j_ci_low": 2,
         "output_tokens_per_j_ci_high": 2, "ci_level": 2, "throttled_windows": 3,
         "power_limit_w": 3, "engine": 3, "output_tokens_per_s_per_gpu": 3,
         "node_hostname": 3, "ray_node_id": 3}


def missing_columns(names: object) -> list[str]:
    """The table's columns absent from ``names`` that no older version explains."""
    have = set(names)  # type: ignore[call-overload]
    return [c for c in COLUMN_NAMES if c not in have and c not in ADDED]


def with_added_columns(df: Any) -> Any:
    """``df`` (a pandas DataFrame) with the columns added since its version, null."""
    for c in ADDED:
        if c not in df.columns:
            df[c] = None
    return df[list(COLUMN_NAMES)]
