"""Import ML.ENERGY leaderboard model files as table rows tagged external:ml.energy."""

from __future__ import annotations

import json
from pathlib import Path

from bench.errors import BenchError
from bench.results.table import TABLE_SCHEMA_VERSION, _row

SOURCE = "external:ml.energy"
_PRECISION = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


class NotTokens(BenchError):
    """A leaderboard file whose energy is not per token (diffusion: per image or video)."""


def _num(conf: dict, key: str, origin: str) -> float:
    v = conf.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (
            float("inf"), float("-inf")):
        raise BenchError(f"{origin}: configuration field {key!r} is missing or not a number")
    return float(v)


def rows_from_mlenergy(path: Path | str) -> list[dict]:
    """Rows of one leaderboard model file: one per configuration (GPU, GPUs, max batch).

    Energy is per output token at GPU scope (all the configuration's GPUs), as the
    leaderboard measures it with vLLM; tokens/J = 1 / energy_per_token_joules.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BenchError(f"{path}: cannot read as JSON ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("configurations"), list):
        raise BenchError(f"{path}: not an ML.ENERGY model file (no configurations)")
    confs = [c for c in doc["configurations"] if isinstance(c, dict)]
    per = {k for c in confs for k in c if k.startswith("energy_per_")}
    if per and "energy_per_token_joules" not in per:
        raise NotTokens(f"{path}: task {doc.get('task', '?')} has no energy per token "
                        "(a diffusion model: energy per image or video)")
    model = str(doc.get("model_id", path.stem))
    dtype = _PRECISION.get(str(doc.get("weight_precision")), doc.get("weight_precision"))
    rows = []
    for i, conf in enumerate(doc["configurations"]):
        origin = f"{path} configuration {i}"
        if not isinstance(conf, dict):
            raise BenchError(f"{origin}: not an object")
        j_tok = _num(conf, "energy_per_token_joules", origin)
        tput = _num(conf, "output_throughput_tokens_per_sec", origin)
        power = _num(conf, "avg_power_watts", origin)
        gpus = int(_num(conf, "num_gpus", origin))
        batch = int(_num(conf, "max_num_seqs", origin))
        gpu = str(conf.get("gpu_model", "unknown"))
        rows.append(_row(
            table_schema_version=TABLE_SCHEMA_VERSION, source=SOURCE, run_id=path.name,
            cell_id=f"{gpu}x{gpus}/{model}/{dtype}/b{batch}/{doc.get('task', '')}",
            device=f"{gpu}x{gpus}", device_name=gpu, num_devices=gpus, engine="vllm",
            model=model,
            dtype=dtype, batch_size=batch, status="ok", scope="gpu",
            energy_method="counter",
            output_tokens_per_j=1.0 / j_tok if j_tok > 0 else None,
            j_per_output_token=j_tok, output_tokens_per_s=tput,
            output_tokens_per_s_per_gpu=tput / gpus if tput is not None and gpus else None,
            mean_power_w=power))
    return rows
