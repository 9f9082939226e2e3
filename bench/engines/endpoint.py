"""Endpoint mode: an OpenAI-compatible server under closed-loop load, measured like ``bench run``.

The harness is the load generator (:mod:`bench.engines.loadgen`). Per cell (concurrency
c = the batch axis, input and output length): c streams in flight; once every slot has
had its first token (ramp-up over) the cell's windows open back to back under the same
load, each at least ``min_window_s``; then no new request is sent and the ones in flight
finish (ramp-down) outside any window. A window counts the output tokens that arrived
inside it; its energy is the selected GPUs' (the same meter and sampler as ``bench run``).

Faults give data: an unreachable server stops before anything is written (one line,
exit 2); a server that dies mid-window leaves that cell with status ``error`` and the
reason, the document is written and ``bench run --resume`` goes on after a restart;
HTTP errors, timeouts and short outputs are counted per window.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cells import energy_block
from bench.devices import Device, Inventory
from bench.engines import loadgen, steady
from bench.errors import BenchError
from bench.meter import Meter
from bench.results import figures
from bench.results.figures import CellRaw
from bench.rundir import Run
from bench.sweep import Cell, SweepConfig

Event = Callable[[dict], None]

# How long a server started by the harness may take to answer (vLLM loads a model).
READY_TIMEOUT_S = 600.0
# Ramp-up: every slot must have had its first token within this many request timeouts.
# A window in which no token arrives for this long means the server stalled.
STALL_S = 30.0


class ServerDied(Exception):
    """The server stopped answering while a cell was measured."""


# -- the server ----------------------------------------------------------------------

def _get_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (http only)
        return json.loads(resp.read().decode() or "null")


def probe(base_url: str, timeout_s: float = 5.0) -> dict:
    """``GET {base_url}/models``; the server's answer.

    Raises:
        BenchError: the server does not answer (one line).
    """
    url = base_url.rstrip("/") + "/models"
    try:
        got = _get_json(url, timeout_s)
    except urllib.error.HTTPError as exc:
        raise BenchError(f"server at {base_url} answered {url} with HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        why = getattr(exc, "reason", None) or exc
        raise BenchError(f"server at {base_url} is unreachable ({why})") from None
    return got if isinstance(got, dict) else {}


def server_version(base_url: str) -> str | None:
    """The server's version where it says (vLLM: ``GET /version``), else None."""
    root = base_url.rstrip("/")
    root = root[:-3] if root.endswith("/v1") else root
    try:
        got = _get_json(root + "/version", 2.0)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return str(got.get("version")) if isinstance(got, dict) and got.get("version") else None


class Server:
    """A server the harness starts with ``cmd``, in a session of its own, and stops.

    Output goes to a log file (its last line is shown when the server fails to start).
    """

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd
        fd, path = tempfile.mkstemp(prefix="joulebench-server-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        try:
            argv = shlex.split(self.cmd)
        except ValueError as exc:
            raise BenchError(f"--serve-cmd {self.cmd!r}: {exc}") from None
        try:
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL,
                                             start_new_session=True)
        except OSError as exc:
            raise BenchError(f"--serve-cmd: cannot start {argv[0]!r}: "
                             f"{exc.strerror}") from None
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def last_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:200] if lines else ""

    def wait_ready(self, base_url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll the server until it answers.

        Raises:
            BenchError: it exited, or did not answer within ``timeout_s``.
        """
        end = time.monotonic() + timeout_s
        while True:
            if not self.alive():
                code = self.proc.returncode if self.proc else None
                raise BenchError(f"--serve-cmd exited with code {code} before answering: "
                                 f"{self.last_line() or 'no output'} (log {self.log_path})")
            try:
                probe(base_url, 2.0)
                return
            except BenchError:
                if time.monotonic() > end:
                    raise BenchError(f"--serve-cmd: no answer from {base_url} within "
                                     f"{timeout_s:g} s (log {self.log_path})") from None
                time.sleep(0.25)

    def stop(self, grace_s: float = 30.0) -> int | None:
        """SIGTERM to its process group, then SIGKILL after ``grace_s``; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        return self.proc.poll()

    def keep_log(self, run_dir: Path) -> None:
        """Copy the server's log into the run directory (``server.log``, appended)."""
        try:
            with open(self.log_path, "rb") as src, open(run_dir / "server.log", "ab") as dst:
                shutil.copyfileobj(src, dst)
        except OSError:
            pass


# -- one cell ------------------------------------------------------------------------

def describe(config: SweepConfig, cell: Cell, gpus: list[str], version: str | None,
             started: bool) -> dict:
    """The cell's ``engine`` block: what served, how it was asked, what was measured."""
    from importlib import metadata

    return {"name": "endpoint", "url": config.endpoint, "served_model": cell.model,
            "server": {"cmd": config.serve_cmd, "version": version,
                       "started_by_harness": started},
            "concurrency": cell.batch_size, "load": "closed loop",
            "request": "completions, streamed, token-id prompts, greedy, ignore_eos and "
                       "min_tokens = max_tokens = output length",
            "window": "opens when every stream has had its first token, closes before "
                      "ramp-down; counts the tokens that arrived inside it",
            "measured_devices": gpus,
            "client": {"library": "aiohttp", "version": metadata.version("aiohttp")}}


def _window_record(m: Any, absent: dict[str, str], load: dict, client: dict) -> dict:
    return {"t0_ns": m.t0_ns, "t1_ns": m.t1_ns, "duration_s": m.duration_s,
            "generate_calls": load["requests_streaming"],
            "output_tokens": load["output_tokens"], "input_tokens": load["input_tokens"],
            "energy": energy_block(m, absent),
            "readings": [x.to_dict() for x in m.readings],
            "calls_ns": [], "load": {**load, "client": client}}


def measure_cell(cell: Cell, config: SweepConfig, meter: Meter, absent: dict[str, str],
                 server: Server | None, progress: Event = lambda e: None
                 ) -> tuple[list[dict], dict | None]:
    """Ramp up, the cell's windows back to back under load, ramp down.

    Returns:
        (repeats, the cell's load block over all its windows)

    Raises:
        ServerDied: the server stopped answering (the reason in the message).
    """
    assert config.endpoint is not None and config.min_window_s is not None
    spec = loadgen.LoadSpec(config.endpoint, cell.model, cell.batch_size, cell.input_len,
                            cell.output_len, config.seed, config.request_timeout_s)
    lg = loadgen.LoadGenerator(spec).start()

    def check() -> None:
        if server is not None and not server.alive():
            raise ServerDied(f"the server exited (code {server.proc.returncode})"
                             if server.proc else "the server exited")
        if lg.gone:
            raise ServerDied(f"server gone: {lg.gone}")
        last = lg.last_arrival_ns
        if last is not None and time.monotonic_ns() - last > STALL_S * 1e9:
            raise ServerDied(f"no token for {STALL_S:g} s")

    try:
        ramp_s = max(STALL_S, 3 * config.request_timeout_s)
        if not lg.wait_steady(ramp_s):
            check()
            raise ServerDied(f"ramp-up: not every one of {cell.batch_size} streams had its "
                             f"first token within {ramp_s:g} s")
        repeats = []
        for r in range(config.repeats):
            progress({"type": "progress", "device": cell.device.label,
                      "cell_id": cell.cell_id, "window": r + 1, "windows": config.repeats,
                      "what": f"repeat {r + 1}/{config.repeats}"})
            cpu0 = lg.loop_cpu_s()
            # the load runs on its own thread: "busy" only waits, so lead-in and lead-out
            # (until the samples past t1 are in) happen under the same load
            with meter.window(f"{cell.cell_id}#{r}", busy=lambda: time.sleep(0.002)) as w:
                t_start, t_start_ns = time.monotonic(), time.monotonic_ns()
                # at least min_window_s, and on until a token has arrived inside (a server
                # that pauses is not dead; one that stalls STALL_S is, in check())
                while time.monotonic() - t_start < config.min_window_s or \
                        (lg.last_arrival_ns or 0) <= t_start_ns:
                    time.sleep(min(0.02, config.min_window_s / 20))
                    check()
            cpu1 = lg.loop_cpu_s()
            m = w.result
            assert m is not None
            load = steady.window_load(list(lg.requests), m.t0_ns, m.t1_ns, cell.input_len,
                                      cell.output_len)
            if load["output_tokens"] == 0:
                raise ServerDied(f"no token arrived in window {r + 1}")
            client = steady.client_block(None if cpu0 is None or cpu1 is None else
                                         cpu1 - cpu0, m.duration_s,
                                         lg.lag_s(m.t0_ns, m.t1_ns))
            repeats.append(_window_record(m, absent, load, client))
    finally:
        lg.stop(drain_s=min(60.0, config.request_timeout_s))
    t0, t1 = repeats[0]["t0_ns"], repeats[-1]["t1_ns"]
    # the span's load; its client_saturated is derived from the windows (figures.client_load)
    cell_load = steady.window_load(list(lg.requests), t0, t1, cell.input_len,
                                   cell.output_len)
    return repeats, cell_load


# -- a run ---------------------------------------------------------------------------

def check_cpu_scope(devs: list[Device]) -> None:
    """On the CPU, endpoint mode needs RAPL: the CPU estimate counts only this process's
    CPU time (the client), never the server's, so it would measure the wrong thing.

    Raises:
        BenchError: a CPU run without a readable RAPL package zone.
    """
    if devs[0].kind == "cuda":
        return
    from bench.devices import rapl
    from bench.errors import NoSensor

    try:
        srcs, why = rapl.sources()
    except NoSensor as exc:
        srcs, why = [], str(exc)
    if not any(s.scope == "cpu" for s in srcs):
        raise BenchError("endpoint mode on the CPU needs a readable RAPL counter (the CPU "
                         "estimate counts only the client's own CPU time, not the server's)"
                         f": {why or 'no RAPL package zone'}; measure GPUs with --gpu")


def _sources(devs: list[Device], config: SweepConfig) -> tuple[list[Any], list[dict]]:
    """The meter's sources: every selected GPU's counter, and the host's CPU and DRAM."""
    from bench.worker import energy_sources

    srcs, missing = energy_sources(devs[0], config)
    if devs[0].kind == "cuda":
        from bench.devices.nvml import NvmlEnergySource

        srcs[1:1] = [NvmlEnergySource(d.gpu_index) for d in devs[1:]]
    return srcs, missing


def _session(run: Run, emit: Event, server: Server | None, version: str | None) -> None:
    """Measure the run's pending cells against the server; raises ServerDied on a death."""
    from bench.rundir import write_trace_part
    from bench.runner import pending

    todo = pending(run)
    devs = run.devices
    lead = devs[0]
    srcs, missing = _sources(devs, run.config)
    for s in srcs:
        emit({"type": "source", "device": getattr(s, "device", lead.label), "name": s.name,
              "scope": s.scope, "method": s.method, "description": s.description})
    for mi in missing:
        emit({"type": "source", "device": lead.label, **mi})
    absent = {mi["scope"]: mi["reason"] for mi in missing
              if not any(s.scope == mi["scope"] for s in srcs)}
    sampler = None
    state = {"flushed_ns": -1, "seq": 0}
    session_ns = time.time_ns()

    def flush() -> None:
        if sampler is None:
            return
        since = state["flushed_ns"]
        last = since
        for tr in sampler.traces(since_ns=since):
            new = tr.after(since)
            write_trace_part(run.run_dir, new, state["seq"], session_ns)
            if len(new):
                last = max(last, int(new.t_ns[-1]))
        state["flushed_ns"] = last
        state["seq"] += 1

    try:
        if lead.kind == "cuda":
            from bench.sampler import Sampler

            sampler = Sampler([d.gpu_index for d in devs], rate_hz=1000.0).start()
        meter = Meter(srcs, sampler=sampler)
        idle_w = None
        if lead.kind == "cuda":
            from bench.worker import measure_idle

            idle = measure_idle(lead, meter, run.config.idle_s)
            idle["devices"] = [d.label for d in devs]
            emit(idle)
            idle_w = idle["power_w"]
        gpus = [d.label for d in devs] if lead.kind == "cuda" else []
        for cell in todo:
            died = None
            try:
                repeats, load = measure_cell(cell, run.config, meter, absent, server, emit)
            except ServerDied as exc:
                died = str(exc)
            if died is not None:
                raw = CellRaw(cell, "error", error=died, pid=os.getpid(),
                              engine=describe(run.config, cell, gpus, version,
                                              server is not None))
                flush()
                emit(figures.cell_record(raw))
                raise ServerDied(f"{cell.cell_id}: {died}")
            trace = None
            if sampler is not None:
                # the lead GPU's power, as validate reads it (no call marks: the timeline
                # method needs whole calls, which a closed loop does not have)
                (tr, *_) = sampler.traces(since_ns=repeats[0]["t0_ns"] - 1_000_000_000)
                trace = tr.power_valid()
            raw = CellRaw(cell, "ok", repeats=repeats, idle_power_w=idle_w, trace=trace,
                          pid=os.getpid(), contended=False, other_pids=[],
                          engine=describe(run.config, cell, gpus, version,
                                          server is not None), load=load)
            rec = figures.cell_record(raw)
            flush()
            emit(rec)
    finally:
        if sampler is not None:
            sampler.stop()
            flush()
        for s in srcs:
            close = getattr(s, "close", None)
            if close:
                close()


def _execute(run: Run, on_event: Event, server: Server | None) -> Path:
    """Measure, then write result.json whatever happens (status complete/failed/...)."""
    from bench.runner import RunFailed, _emit_to

    emit = _emit_to(run, on_event)
    status = "failed"
    version = server_version(run.config.endpoint or "")
    try:
        _session(run, emit, server, version)
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except ServerDied as exc:
        raise RunFailed(f"{exc}; bench run --resume {run.run_dir} goes on after the server "
                        f"is back", run.result_path) from None
    finally:
        run.finish(status)
    return run.result_path


def _with_server(config: SweepConfig, measure: Callable[[Server | None], Any]) -> Any:
    """Start the server (``serve_cmd``) or check the running one, measure, stop it."""
    assert config.endpoint is not None
    server = None
    if config.serve_cmd:
        server = Server(config.serve_cmd).start()
    try:
        if server is not None:
            server.wait_ready(config.endpoint)
        else:
            probe(config.endpoint)
        return measure(server)
    finally:
        if server is not None:
            server.stop()


def run(config: SweepConfig, gpu: str | list[int] = "auto", out: Path | str | None = None,
        on_start: Callable[[Run, list[Cell]], None] | None = None,
        on_event: Event | None = None, on_notice: Callable[[str], None] | None = None,
        inventory: Inventory | None = None) -> Any:
    """Measure a server over the sweep's concurrencies and lengths; writes result.json.

    Raises:
        BenchError: a bad configuration or selection, an unreachable server (nothing
            written).
        RunFailed: the server died; the cells measured before are kept.
    """
    from bench import devices as D
    from bench.runner import GpuLock, start_run

    if config.engine != "endpoint":
        raise BenchError("endpoint.run needs engine endpoint")
    inv = inventory or D.discover()
    devs, notice = D.select(gpu, inv)
    if notice and on_notice:
        on_notice(notice)
    check_cpu_scope(devs)
    with GpuLock(devs):
        return _with_server(config, _measure(lambda: start_run(config, devs, out),
                                             on_start, on_event))


def _measure(open_run: Callable[[], Run],
             on_start: Callable[[Run, list[Cell]], None] | None,
             on_event: Event | None) -> Callable[[Server | None], Any]:
    """What :func:`run` and :func:`resume` measure once the server answers: the run
    (``open_run``: a new one, or the resumed one), its pending cells, the server's log."""
    from bench.runner import Outcome, pending

    def measure(server: Server | None) -> Any:
        run_ = open_run()
        todo = pending(run_)
        if on_start:
            on_start(run_, todo)
        try:
            path = _execute(run_, on_event or (lambda e: None), server)
        finally:
            if server is not None:
                server.keep_log(run_.run_dir)
        return Outcome(run_, path, len(todo))

    return measure


def _redo_errors(run: Run) -> None:
    """Keep each cell's latest journal record, then drop those in error (measured again).

    A cell the server's death cut short is in the journal with status ``error``; after a
    restart it is measured again and its new record, appended later, is the one kept.
    """
    from bench.results import io

    latest: dict[str, dict] = {}
    for rec in io.read_journal(run.journal):
        if rec.get("type") == "cell":
            cid = str(rec.get("cell_id"))
            latest.pop(cid, None)
            latest[cid] = rec
    run.cells = [c for c in latest.values() if c.get("status") != "error"]


def _restore_trace_parts(run: Run) -> None:
    """Put a finished document's trace back as the first part of each device.

    ``Run.finish`` merges the parts into trace.parquet and removes them; a resumed run
    merges only its parts, so without this the earlier cells' samples would be lost.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from bench.results import io
    from bench.rundir import PARTS

    path = run.run_dir / io.TRACE_FILE
    if not path.exists():
        return
    table = pq.read_table(path)
    parts = run.run_dir / PARTS
    parts.mkdir(exist_ok=True)
    for idx in pc.unique(table["device_index"]).to_pylist():
        part = parts / f"gpu{idx:03d}-{0:020d}-{0:06d}.parquet"
        if not part.exists():
            with io.atomic_path(part) as tmp:
                pq.write_table(table.filter(pc.equal(table["device_index"], idx)), tmp)


def resume(run_dir: Path | str, on_start: Callable[[Run, list[Cell]], None] | None = None,
           on_event: Event | None = None, inventory: Inventory | None = None) -> Any:
    """Continue an endpoint run: the cells it lacks, against the server (restarted by
    ``serve_cmd`` where the run has one)."""
    from bench.runner import GpuLock, Outcome, pending, resume_run

    run_ = resume_run(run_dir, inventory)
    _redo_errors(run_)
    _restore_trace_parts(run_)
    if not pending(run_) and run_.result_path.exists():
        return Outcome(run_, run_.result_path, 0)
    with GpuLock(run_.devices):
        return _with_server(run_.config, _measure(lambda: run_, on_start, on_event))
