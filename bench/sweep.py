"""The sweep model: its configuration (one precedence), the cells it plans, per-device defaults.

Precedence, stated once and applied by :meth:`SweepConfig.from_sources`: flags given on
the command line > the sweep file (TOML) > the field defaults below; fields whose default
depends on the device (``dtype``, ``min_window_s``, ``warmup``) are then filled by
:meth:`SweepConfig.resolved` from :data:`DEVICE_DEFAULTS`. The result document records the
resolved configuration, so nothing downstream keeps a default of its own.

A leaf module: it imports nothing of the package but errors, models' dtype names and the
Device type (with its grouping of GPUs for multi-GPU cells).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from bench.devices import Device, group
from bench.errors import BenchError
from bench.models import DTYPES


@dataclass(frozen=True)
class DeviceDefaults:
    """What a sweep uses on one kind of device unless told otherwise.

    Attributes:
        dtype: weights and activations.
        min_window_s: shortest measured window; a counter is only as good as its update
            period (NVML's refresh every 20-100 ms), so GPU windows last seconds.
        warmup: unmeasured generate calls before a cell's windows.
        compiled_warmup: the least warm-up when compiling on a GPU: the first call
            compiles, the second records the CUDA graphs; both stay unmeasured.
        warmup_cap_s: longest warm-up waiting for steady power (0: the warm-up calls only).
    """

    dtype: str
    min_window_s: float
    warmup: int
    compiled_warmup: int
    warmup_cap_s: float = 0.0


DEVICE_DEFAULTS: dict[str, DeviceDefaults] = {
    "cpu": DeviceDefaults(dtype="fp32", min_window_s=2.0, warmup=1, compiled_warmup=1),
    "cuda": DeviceDefaults(dtype="bf16", min_window_s=5.0, warmup=1, compiled_warmup=2,
                           warmup_cap_s=30.0),
}

_INT_LISTS = ("batch_sizes", "input_lens", "output_lens")

# What can generate the tokens: the Hugging Face reference path, vLLM in the device worker,
# or an OpenAI-compatible server under closed-loop load (batch size = concurrency).
ENGINES = ("hf", "vllm", "endpoint")


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep and how long to measure. ``None`` means "the device's default".

    Attributes:
        models: built-in model names, model JSON files or local checkpoint folders.
        batch_sizes, input_lens, output_lens: the sweep's axes (tokens per sequence).
        dtype: fp32 | bf16 | fp16 | fp8 (fp8: engine vllm on Hopper or newer GPUs).
        min_window_s: shortest measured window per repeat, s.
        repeats: measured windows per cell.
        warmup: unmeasured generate calls before a cell.
        warmup_cap_s: on a sampled GPU, warm-up calls go on until the power is steady or
            this long (s) has passed (default 30 on GPU; 0 on the CPU: calls only).
        seed: seed of weights and prompts.
        cpu_w_per_logical_cpu: assumed W per busy logical CPU where RAPL is unreadable.
        phases: measure the prefill-only window (subtraction-method phases).
        compile: on GPUs, a static cache and torch.compile.
        idle_s: idle-baseline window per GPU before its cells, s.
        engine: what generates the tokens (see :data:`ENGINES`); part of every cell's key.
        endpoint: engine endpoint: the server's OpenAI base URL (``http://HOST:PORT/v1``).
        serve_cmd: engine endpoint: a command that starts the server (the harness waits
            until it answers and stops it at the end); None measures a running server.
        request_timeout_s: engine endpoint: longest wait for a stream's next chunk, s.
        gpu_memory_utilization: engine vllm: the fraction of the device's memory vLLM may
            take (on the CPU backend: of host memory for the KV cache); None: the engine's
            default for the device kind.
        node_power: the node's BMC (``redfish://BMC[:PORT][/CHASSIS]`` or
            ``ipmi://[BMC[:PORT]]``) for the ``node`` scope, or None.
        bmc_insecure: skip TLS verification of the BMC (self-signed certificates).
        bmc_ca_file: a CA bundle to verify the BMC with.
        bmc_credentials: a file with the BMC's username and password (never the secret
            itself; see ``bench.devices.bmc.credentials``).
        power_limit_w: GPU power limits to sweep, W (a sweep axis; empty: the GPU's
            limit is never touched).
        power_limit_frac: the same axis as fractions of each GPU's default power limit
            (not together with ``power_limit_w``).
        gpus_per_cell: GPUs that run one cell together (in index order; see
            :func:`device_groups`): hf places the model over them (``device_map``),
            vllm runs ``tensor_parallel_size`` N. The cell's GPU energy is their sum.
            ``"auto"``: the smallest N whose weights fit (resolved by the runner before
            the run starts; the document records the number).
        spread: on a Ray cluster (``bench run --cluster ... --spread``), each cell once per
            GPU model (device name), spread over that model's GPUs, not once per GPU.
    """

    models: tuple[str, ...] = ("tiny-llama",)
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    input_lens: tuple[int, ...] = (32,)
    output_lens: tuple[int, ...] = (32,)
    dtype: str | None = None
    min_window_s: float | None = None
    repeats: int = 3
    warmup: int | None = None
    seed: int = 0
    cpu_w_per_logical_cpu: float | None = None
    phases: bool = True
    compile: bool = True
    idle_s: float = 3.0
    engine: str = "hf"
    endpoint: str | None = None
    serve_cmd: str | None = None
    request_timeout_s: float = 120.0
    gpu_memory_utilization: float | None = None
    node_power: str | None = None
    bmc_insecure: bool = False
    bmc_ca_file: str | None = None
    bmc_credentials: str | None = None
    warmup_cap_s: float | None = None
    power_limit_w: tuple[float, ...] = ()
    power_limit_frac: tuple[float, ...] = ()
    gpus_per_cell: int | str = 1
    spread: bool = False

    def __post_init__(self) -> None:
        _check_types(self)
        _check_power_limits(self)
        if not self.models:
            raise BenchError("no model given")
        for name, vals in (("batch size", self.batch_sizes), ("input length", self.input_lens),
                           ("output length", self.output_lens)):
            if not vals or any(v < 1 for v in vals):
                raise BenchError(f"every {name} must be 1 or more")
        if self.repeats < 1:
            raise BenchError("repeats must be 1 or more")
        if self.warmup is not None and self.warmup < 0:
            raise BenchError("warm-up must be 0 or more")
        if self.warmup_cap_s is not None and not 0 <= self.warmup_cap_s < float("inf"):
            raise BenchError("the warm-up cap must be 0 or more seconds")
        if not self.idle_s > 0:
            raise BenchError("the idle window must be positive")
        if self.min_window_s is not None and not self.min_window_s > 0:
            raise BenchError("the minimum window must be positive")
        if self.engine not in ENGINES:
            raise BenchError(f"unknown engine {self.engine!r}; use one of {', '.join(ENGINES)}")
        if (self.engine == "endpoint") != (self.endpoint is not None):
            raise BenchError("--endpoint URL and engine endpoint go together")
        if self.engine == "endpoint" and self.node_power is not None:
            raise BenchError("--node-power is not measured in endpoint mode yet; leave it out")
        if self.serve_cmd is not None and self.engine != "endpoint":
            raise BenchError("--serve-cmd needs --endpoint")
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise BenchError(f"--endpoint {self.endpoint!r}: use http://HOST:PORT/v1")
        if self.engine == "endpoint" and len(self.models) != 1:
            raise BenchError("an endpoint serves one model: give one --model")
        if not self.request_timeout_s > 0:
            raise BenchError("the request timeout must be positive")
        if self.gpu_memory_utilization is not None and \
                not 0 < self.gpu_memory_utilization <= 1:
            raise BenchError("gpu_memory_utilization must be in (0, 1]")
        if isinstance(self.gpus_per_cell, str) and self.gpus_per_cell != "auto" or \
                isinstance(self.gpus_per_cell, int) and self.gpus_per_cell < 1:
            raise BenchError("--gpus-per-cell must be 1 or more, or auto")
        if self.gpus_per_cell != 1 and self.engine == "endpoint":
            raise BenchError("--gpus-per-cell is for hf and vllm; an endpoint's cell already "
                             "spans every selected GPU")
        if self.dtype == "fp8" and self.engine != "vllm":
            raise BenchError("--dtype fp8 runs on the vllm engine only (--engine vllm)")
        if self.dtype is not None and self.dtype not in (*DTYPES, "fp8"):
            raise BenchError(f"unknown dtype {self.dtype!r}; use one of {', '.join(DTYPES)}")

    @classmethod
    def from_sources(cls, flags: Mapping[str, Any] | None = None,
                     file: str | None = None) -> SweepConfig:
        """The configuration from flags and a sweep file: flags > file > defaults.

        Args:
            flags: field name -> value given on the command line; ``None`` values count as
                not given.
            file: a sweep file (TOML) whose keys are this class's fields.

        Raises:
            BenchError: an unreadable or malformed sweep file, an unknown key, a bad value.
        """
        merged = load_config_file(file) if file else {}
        merged.update({k: v for k, v in (flags or {}).items() if v is not None})
        unknown = sorted(set(merged) - {f.name for f in fields(cls)})
        if unknown:
            raise BenchError(f"unknown sweep setting {unknown[0]!r}")
        return cls(**merged)

    def resolved(self, kind: str) -> SweepConfig:
        """This configuration with the device kind's defaults filled in.

        On a GPU with ``compile``, warm-up is at least ``compiled_warmup``.
        """
        d = DEVICE_DEFAULTS[kind]
        warmup = d.warmup if self.warmup is None else self.warmup
        if kind == "cuda" and self.compile:
            warmup = max(warmup, d.compiled_warmup)
        return replace(self, dtype=self.dtype or d.dtype,
                       min_window_s=self.min_window_s or d.min_window_s, warmup=warmup,
                       warmup_cap_s=d.warmup_cap_s if self.warmup_cap_s is None
                       else self.warmup_cap_s)

    @property
    def is_resolved(self) -> bool:
        return None not in (self.dtype, self.min_window_s, self.warmup)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepConfig:
        """The inverse of :meth:`to_dict` (unknown keys are an error)."""
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        try:
            return cls(**kw)
        except TypeError as exc:
            raise BenchError(f"bad sweep configuration: {exc}") from None


_TYPES: dict[str, tuple[type, ...]] = {
    "repeats": (int,), "warmup": (int, type(None)), "seed": (int,),
    "warmup_cap_s": (int, float, type(None)),
    "min_window_s": (int, float, type(None)), "idle_s": (int, float),
    "cpu_w_per_logical_cpu": (int, float, type(None)), "phases": (bool,), "compile": (bool,),
    "dtype": (str, type(None)), "engine": (str,), "endpoint": (str, type(None)),
    "serve_cmd": (str, type(None)), "request_timeout_s": (int, float),
    "gpu_memory_utilization": (int, float, type(None)), "node_power": (str, type(None)),
    "bmc_insecure": (bool,), "bmc_ca_file": (str, type(None)),
    "bmc_credentials": (str, type(None)), "gpus_per_cell": (int, str),
    "spread": (bool,),
}


def _check_power_limits(config: SweepConfig) -> None:
    """The power-limit axis: numbers, positive, one of W or fractions, not on an endpoint."""
    for name in ("power_limit_w", "power_limit_frac"):
        v = getattr(config, name)
        if not isinstance(v, tuple) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise BenchError(f"sweep setting {name} must be a list of numbers")
        if any(not x > 0 or x == float("inf") for x in v):
            raise BenchError(f"every {name} value must be a positive number")
    if config.power_limit_w and config.power_limit_frac:
        raise BenchError("give the power limits in W or as fractions of the default "
                         "(--power-limit-w or --power-limit-frac), not both")
    if (config.power_limit_w or config.power_limit_frac) and config.engine == "endpoint":
        raise BenchError("--power-limit-w/--power-limit-frac: not in endpoint mode (the "
                         "server's GPUs are not set by this harness)")


def power_limit_axis(config: SweepConfig) -> list[tuple[float | None, float | None]]:
    """The axis's points as (W, fraction) pairs, in the order given, each once;
    [(None, None)] where the sweep has no power-limit axis."""
    if config.power_limit_w:
        return [(float(w), None) for w in dict.fromkeys(config.power_limit_w)]
    if config.power_limit_frac:
        return [(None, float(f)) for f in dict.fromkeys(config.power_limit_frac)]
    return [(None, None)]


def _check_types(config: SweepConfig) -> None:
    """One line for a value of the wrong type (a sweep file can hold anything)."""
    for name, kinds in _TYPES.items():
        v = getattr(config, name)
        if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
            raise BenchError(f"sweep setting {name} = {v!r} has the wrong type")
    for name in (*_INT_LISTS, "models"):
        v = getattr(config, name)
        want: type = str if name == "models" else int
        if not isinstance(v, tuple) or not all(
                isinstance(x, want) and not isinstance(x, bool) for x in v):
            raise BenchError(f"sweep setting {name} must be a list of "
                             f"{'names' if want is str else 'integers'}")


@dataclass(frozen=True)
class Cell:
    """One (device, engine, model, dtype, batch size, input length, output length)."""

    device: Device
    model: str
    dtype: str
    batch_size: int
    input_len: int
    output_len: int
    engine: str = "hf"
    power_limit_w: float | None = None  # the power-limit axis, in W ...
    power_limit_frac: float | None = None  # ... or of the GPU's default limit

    def with_device(self, device: Device) -> Cell:
        """The same cell on another Device object (a worker's view of its GPU)."""
        return replace(self, device=device)

    @property
    def cell_id(self) -> str:
        """``gpu0/model/dtype/b8/i512/o256``, with ``/engine`` after it for engines but hf."""
        base = (f"{self.device.label}/{self.model}/{self.dtype}/b{self.batch_size}"
                f"/i{self.input_len}/o{self.output_len}")
        base = base if self.engine == "hf" else f"{base}/{self.engine}"
        if self.power_limit_w is not None:
            return f"{base}/pl{self.power_limit_w:g}w"
        if self.power_limit_frac is not None:
            return f"{base}/pl{self.power_limit_frac:g}x"
        return base


def load_config_file(path: str) -> dict[str, Any]:
    """A sweep file (TOML) as :class:`SweepConfig` keyword arguments.

    Raises:
        BenchError: unreadable, not TOML, an unknown key, or a value of the wrong type.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise BenchError(f"cannot read sweep file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"sweep file {path}: not valid TOML ({exc})") from None
    known = {f.name for f in fields(SweepConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BenchError(f"sweep file {path}: unknown key {unknown[0]!r}; known: "
                         f"{', '.join(sorted(known))}")
    out = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    for k in _INT_LISTS:
        if k in out and (not isinstance(out[k], tuple) or
                         not all(isinstance(x, int) and not isinstance(x, bool)
                                 for x in out[k])):
            raise BenchError(f"sweep file {path}: {k} must be a list of integers")
    if "models" in out and (not isinstance(out["models"], tuple) or
                            not all(isinstance(x, str) for x in out["models"])):
        raise BenchError(f"sweep file {path}: models must be a list of names")
    return out


def device_groups(config: SweepConfig, devices: list[Device]
                  ) -> tuple[list[Device], list[Device]]:
    """The devices cells run on, and the GPUs left over.

    With ``gpus_per_cell`` N > 1 the GPUs are split in index order into groups of N (a
    group is one :func:`bench.devices.group` device); the GPUs after the last whole group
    are left over. The CPU, and N = 1, are not grouped.
    """
    n = config.gpus_per_cell if isinstance(config.gpus_per_cell, int) else 1  # auto: unresolved
    gpus = sorted((d for d in devices if d.kind == "cuda"), key=lambda d: d.gpu_index)
    if n <= 1 or not gpus:
        return list(devices), []
    whole = len(gpus) // n * n
    return [group(gpus[i:i + n]) for i in range(0, whole, n)], gpus[whole:]


def plan(config: SweepConfig, devices: list[Device]) -> list[Cell]:
    """All cells, grouped so a model is built once per device and batches ascend.

    ``config`` must be resolved for the devices' kind (its dtype set); an unresolved one
    is resolved per device here. With ``gpus_per_cell`` > 1 the cells run on groups of
    GPUs (:func:`device_groups`). An endpoint run has one cell per shape, on the first
    device: the server spans every selected GPU, and the cell's energy is their sum.
    With a power-limit axis, a device's cells are grouped by limit (outermost), so each
    limit is set once per device.
    With ``config.spread``, each cell once per device name (GPU model), dealt in turn to
    that model's devices (a cluster run may move it to another of them).
    """
    if config.spread:
        by_name: dict[str, list[Device]] = {}
        for dev in devices:
            by_name.setdefault(dev.name, []).append(dev)
        spread = []
        for same in by_name.values():
            mine = plan(replace(config, spread=False), same[:1])
            spread += [c.with_device(same[n % len(same)]) for n, c in enumerate(mine)]
        return spread
    cells = []
    devices = device_groups(config, devices)[0]
    for dev in devices[:1] if config.engine == "endpoint" else devices:
        dtype = config.dtype or DEVICE_DEFAULTS[dev.kind].dtype
        for pl_w, pl_frac in power_limit_axis(config):
            for m in config.models:
                for i in config.input_lens:
                    for o in config.output_lens:
                        for b in sorted(config.batch_sizes):
                            cells.append(Cell(dev, m, dtype, b, i, o, config.engine,
                                              pl_w, pl_frac))
    return cells
