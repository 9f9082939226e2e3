"""The power-limit sweep axis: checks before any work, setting per cell, and always restoring.

Only ``bench.devices.nvml`` talks to the GPU; this module decides when. Before a run sets
any limit, the original limit of each GPU is written (fsynced) to a state file per GPU
UUID in the lock folder (``JOULEBENCH_LOCK_DIR``, default the system temp folder) and to
``power-limits.json`` in the run directory. The run puts the originals back at its end,
on error, on Ctrl-C and SIGTERM (:func:`restore`), then deletes the state. After a
SIGKILL the state is still there: the next ``bench run``, ``bench run --resume`` or
``bench restore-power`` puts the limit back (:func:`restore_stale`) and says so. A run
without the axis never sets a limit, and restores only what a killed run left.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.devices import Device
from bench.errors import BenchError, SensorError
from bench.sweep import Cell, SweepConfig, power_limit_axis

RUN_STATE = "power-limits.json"


def state_dir() -> Path:
    """Where the per-GPU state files live: beside the GPU lock files."""
    return Path(os.environ.get("JOULEBENCH_LOCK_DIR") or tempfile.gettempdir())


def state_file(uuid: str) -> Path:
    return state_dir() / f"joulebench-{uuid}.power-limit.json"


def has_axis(config: SweepConfig) -> bool:
    return bool(config.power_limit_w or config.power_limit_frac)


def _write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` to ``path`` atomically, fsynced (file and folder)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def setpoint_w(cell: Cell, default_w: float) -> float | None:
    """The limit a cell asks for, W (a fraction of the GPU's default limit), or None."""
    if cell.power_limit_w is not None:
        return cell.power_limit_w
    if cell.power_limit_frac is not None:
        return cell.power_limit_frac * default_w
    return None


def check(config: SweepConfig, devices: list[Device]) -> dict[str, Any]:
    """Refuse the axis before any work: the CPU, values outside a GPU's constraints, no
    permission to set a limit (probed by setting the limit it has now, which changes
    nothing).

    Returns:
        {uuid: nvml.PowerLimits} of the run's GPUs ({} without the axis).

    Raises:
        BenchError: one line saying what is refused.
    """
    if not has_axis(config):
        return {}
    from bench.devices import nvml

    if any(d.kind != "cuda" for d in devices):
        raise BenchError("--power-limit-w/--power-limit-frac set a GPU's power limit: not "
                         "on the CPU (select GPUs with --gpu)")
    out = {}
    for d in devices:
        try:
            lim = nvml.power_limits(d.gpu_index)
        except SensorError as exc:
            raise BenchError(f"GPU {d.index}: cannot read its power limits ({exc})") from None
        for w, frac in power_limit_axis(config):
            want = w if w is not None else (frac or 0.0) * lim.default_w
            given = f"{w:g} W" if w is not None else f"{frac:g} x {lim.default_w:g} W " \
                f"= {want:g} W"
            if not lim.min_w - 1e-6 <= want <= lim.max_w + 1e-6:
                raise BenchError(f"GPU {d.index}: power limit {given} is outside its range "
                                 f"{lim.min_w:g}-{lim.max_w:g} W")
        try:
            nvml.set_power_limit_w(d.gpu_index, lim.current_w)
        except SensorError as exc:
            raise BenchError(f"GPU {d.index}: cannot set its power limit: {exc}") from None
        out[d.uuid or str(d.index)] = lim
    return out


def save_originals(run_dir: Path, limits: dict[str, Any], devices: list[Device]) -> None:
    """Write each GPU's original limit (fsynced) before any is set: per GPU UUID in the
    state folder, and all of them in the run directory."""
    entries = []
    for d in devices:
        lim = limits.get(d.uuid or str(d.index))
        if lim is None:
            continue
        e = {"uuid": d.uuid, "index": d.index, "original_w": lim.current_w,
             "run_dir": str(Path(run_dir).resolve()), "pid": os.getpid()}
        entries.append(e)
        state_dir().mkdir(parents=True, exist_ok=True)
        _write_json(state_file(str(d.uuid)), e)
    _write_json(Path(run_dir) / RUN_STATE, entries)


def _put_back(e: dict) -> str | None:
    """Set one GPU's original limit again; a line saying so where it had changed."""
    from bench.devices import nvml

    index, want = int(e["index"]), float(e["original_w"])
    try:
        now = nvml.power_limits(index).current_w
        if abs(now - want) > 0.5:
            nvml.set_power_limit_w(index, want)
            return f"GPU {index}: power limit put back from {now:g} W to {want:g} W"
    except SensorError as exc:
        raise BenchError(f"GPU {index}: cannot put its power limit back to {want:g} W "
                         f"({exc}); run bench restore-power as root") from None
    return None


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def saved_entries(run_dir: Path | str) -> list[dict]:
    """The original limits a run recorded ([] where it recorded none)."""
    entries = _read(Path(run_dir) / RUN_STATE)
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and "index" in e and "original_w" in e]


def restore(run_dir: Path | str) -> list[str]:
    """Put back the original limits a run recorded (``power-limits.json``) and remove
    its state files; one line per GPU whose limit changed back.

    Raises:
        BenchError: a limit cannot be set back (its state is kept for a later try).
    """
    entries = saved_entries(run_dir)
    if not entries:
        return []
    lines = []
    for e in entries:
        line = _put_back(e)
        if line:
            lines.append(line)
        sf = state_file(str(e.get("uuid")))
        held = _read(sf)
        if isinstance(held, dict) and held.get("run_dir") == e.get("run_dir"):
            sf.unlink(missing_ok=True)
    (Path(run_dir) / RUN_STATE).unlink(missing_ok=True)
    return lines


def restore_stale(devices: list[Device] | None = None) -> list[str]:
    """Put back what a killed run left (its per-GPU state files) for ``devices`` (None:
    every GPU with a state file). The caller holds those GPUs' locks, so no live run owns
    the state. One line per GPU, naming the run that left it.
    """
    uuids = None if devices is None else {d.uuid for d in devices if d.kind == "cuda"}
    lines = []
    folder = state_dir()
    if not folder.is_dir():
        return []
    for sf in sorted(folder.glob("joulebench-*.power-limit.json")):
        e = _read(sf)
        if not isinstance(e, dict) or "index" not in e or "original_w" not in e:
            continue
        if uuids is not None and e.get("uuid") not in uuids:
            continue
        line = _put_back(e)
        sf.unlink(missing_ok=True)
        if e.get("run_dir"):
            (Path(e["run_dir"]) / RUN_STATE).unlink(missing_ok=True)
        lines.append((line or f"GPU {e['index']}: power limit is at its original "
                      f"{float(e['original_w']):g} W") +
                     f" (left by run {e.get('run_dir', '?')}, which did not end)")
    return lines


def stale_devices() -> list[Device]:
    """The GPUs with a state file (as Devices, for their locks)."""
    out = []
    folder = state_dir()
    for sf in sorted(folder.glob("joulebench-*.power-limit.json")) if folder.is_dir() else []:
        e = _read(sf)
        if isinstance(e, dict) and "index" in e and e.get("uuid"):
            out.append(Device("cuda", int(e["index"]), "", str(e["uuid"])))
    return out


@dataclass
class Limiter:
    """A worker's view of one GPU's limit: sets it when a cell asks for another one."""

    device: Device
    default_w: float | None = None
    set_w: float | None = None
    enforced_w: float | None = None

    def at(self, cell: Cell) -> tuple[float | None, float | None]:
        """Set the cell's limit if it is not the one set; (enforced W, set W) or Nones.

        Raises:
            SensorError: NVML refused (the run's check makes that unlikely).
        """
        if cell.power_limit_w is None and cell.power_limit_frac is None:
            return None, None
        from bench.devices import nvml

        if self.default_w is None:
            self.default_w = nvml.power_limits(self.device.gpu_index).default_w
        want = setpoint_w(cell, self.default_w)
        assert want is not None
        if want != self.set_w:
            self.enforced_w = nvml.set_power_limit_w(self.device.gpu_index, want)
            self.set_w = want
        return self.enforced_w, self.set_w

    def clock_mhz(self) -> int | None:
        from bench.devices import nvml

        try:
            return nvml.sm_clock_mhz(self.device.gpu_index)
        except SensorError:
            return None
