"""The same sweep across a GPU cluster on Ray: one actor per GPU runs the local device worker.

``bench run --cluster local|auto|ray://HOST:PORT`` connects to Ray (``local`` starts an
instance on this machine, ``auto`` joins the one in ``RAY_ADDRESS``), starts one actor
per GPU (``num_gpus=1``, pinned to its node) and has it run :func:`bench.worker.worker_main`
against that node's NVML: the same sampler, meter, idle baseline and cells as a local
worker process. Records stream back to the driver, which writes the journal and the result
document through the same :class:`bench.rundir.Run`. Trace parts are written on the node
and shipped with the cell they belong to.

GPUs are numbered across the cluster: node by node (hostname, then Ray node id), each
node's GPUs from the next free index in NVML order. Each GPU records its node and its NVML
index there (``nvml_index``); each cell records its ``node`` (hostname, Ray node id, GPU).

A node or actor that dies mid-sweep: with ``--spread`` its unfinished cells go to another
GPU of the same model; otherwise they are recorded ``lost`` with the reason, and the run
ends ``failed`` (``bench run --resume DIR --cluster ...`` measures them). Ray is optional:
without it ``--cluster`` says how to install it.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.devices import Device
from bench.errors import BenchError

INSTALL = "pip install 'joulebench[cluster]'"
POLL_S = 1.0
START_S = 300.0  # longest wait for every GPU's actor to start on its node


def require_ray() -> Any:
    """The ``ray`` module.

    Raises:
        BenchError: Ray is not installed (the line says how to install it).
    """
    try:
        import ray
    except ImportError:
        raise BenchError(f"--cluster needs Ray, which is not installed: {INSTALL}") from None
    return ray


def check_address(address: str) -> str:
    """``--cluster``'s value: ``local``, ``auto`` or ``ray://HOST:PORT``.

    Raises:
        BenchError: anything else.
    """
    if address in ("local", "auto"):
        return address
    if address.startswith("ray://"):
        host, _, port = address[len("ray://"):].rpartition(":")
        if host and port.isdigit():
            return address
    raise BenchError(f"--cluster {address!r}: use local, auto (RAY_ADDRESS) or "
                     "ray://HOST:PORT")


# Ray Client's proxier on the head starts a server process for each connection
# (ray/util/client/server/proxier.py) and gives it this long to come up
CHANNEL_TIMEOUT_ENV = "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S"
# That start fails at random where the proxier forks while its other threads are in gRPC:
# the child dies at once, and the connection fails when the timeout above runs out
# (ray-project/ray#63202; here 4 of 30 connects beside a CPU hog, none of 30 with gRPC's
# fork handlers off on the head). Such a connect is tried this many times.
CONNECT_TRIES = 3
_SERVER_START_FAILED = ("Initialization failure from server",
                        "Starting Ray client server failed",
                        "Proxy failed to Connect to backend")


def server_start_failed(message: str) -> bool:
    """Whether a failed ``ray.init`` is Ray Client's server start for this connection
    failing on the head (worth another try), not a wrong address or a missing cluster."""
    return any(m in message for m in _SERVER_START_FAILED)


def _error_itself(message: str, kind: str) -> str:
    """The message's first line, or where that only introduces a traceback, with the
    traceback's last line (the error itself); at most 200 characters."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()] or [kind]
    line = lines[0]
    if line.endswith(":") and len(lines) > 1:
        line = f"{line} {lines[-1]}"
    return line[:200]


def connect_error_line(message: str, kind: str) -> str:
    """One line for a failed ``ray.init``: the message's first line, and where that only
    introduces a traceback (Ray Client's "Initialization failure from server:"), the
    traceback's last line, the error itself; where the head's Ray Client server failed to
    start the server for this connection, what causes that and how to avoid it."""
    line = _error_itself(message, kind)
    if server_start_failed(message):
        line += (" (the head's Ray Client server could not start a server for this "
                 "connection: its process dies where Ray forks it during gRPC work, "
                 "ray-project/ray#63202, or is slower than "
                 f"{CHANNEL_TIMEOUT_ENV}, 30 s by default; start the head with "
                 f"GRPC_ENABLE_FORK_SUPPORT=0, or with {CHANNEL_TIMEOUT_ENV} raised)")
    return line


@contextmanager
def connected(address: str) -> Iterator[Any]:
    """Ray, connected to the cluster ``address`` names, shut down (disconnected) after.

    A Ray Client connect whose server fails to start on the head is tried
    ``CONNECT_TRIES`` times in all, each retry announced on stderr.

    Raises:
        BenchError: Ray missing, a bad address, no cluster there.
    """
    address = check_address(address)
    ray = require_ray()
    kw: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    if address == "local":
        from bench import devices as D

        # a new instance even where RAY_ADDRESS names a cluster; its GPUs are NVML's
        kw.update(num_gpus=len(D.discover().gpus), include_dashboard=False)
        target = "local"
    elif address == "auto":
        target = os.environ.get("RAY_ADDRESS") or "auto"
    else:
        target = address
    for attempt in range(1, CONNECT_TRIES + 1):
        try:
            ray.init(address=target, **kw)
            break
        except (ConnectionError, RuntimeError, ValueError) as exc:
            message, kind = str(exc), exc.__class__.__name__
            if attempt == CONNECT_TRIES or not server_start_failed(message):
                after = f" ({attempt} tries)" if attempt > 1 else ""
                raise BenchError(f"cannot connect to the Ray cluster at {address}{after}: "
                                 f"{connect_error_line(message, kind)}") from None
            sys.stderr.write(f"bench: connecting to the Ray cluster at {address} failed "
                             f"({_error_itself(message, kind)}); trying again "
                             f"({attempt + 1} of {CONNECT_TRIES})\n")
            ray.shutdown()
    try:
        yield ray
    finally:
        ray.shutdown()


class _Shipper:
    """The queue a worker puts records in: before a cell (and at the end) it ships the
    trace parts written on this node, so the driver stores them with the cell."""

    def __init__(self, out: queue.Queue, parts: Path) -> None:
        self.out = out
        self.parts = parts

    def put(self, rec: dict) -> None:
        if rec.get("type") in ("cell", "done", "error"):
            self.ship()
        self.out.put(rec)

    def ship(self) -> None:
        if not self.parts.is_dir():
            return
        for p in sorted(self.parts.glob("*.parquet")):
            if p.name.startswith(("gpu", "node")):
                self.out.put({"type": "trace_part", "name": p.name, "data": p.read_bytes()})
                p.unlink()


# Ray runs worker processes at niceness 15 (ray-project/ray#24928), so on a busy node any
# other process would starve the actor that measures (its sampler misses ticks, its window
# edges move). Ray reads RAY_worker_niceness when a worker starts; the GPU actors get 0,
# as Ray's own job supervisor does for job drivers.
WORKER_ENV = {"env_vars": {"RAY_worker_niceness": "0"}}


class GpuSession:
    """The Ray actor of one GPU (``num_gpus=1``, on its node): the local device worker."""

    def __init__(self) -> None:
        self._out: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock: Any = None
        self._dir = Path(tempfile.mkdtemp(prefix="joulebench-ray-"))

    def node(self) -> dict:
        """This node: hostname, Ray node id, its GPUs (NVML), Ray's GPU ids, provenance."""
        import ray

        from bench import devices as D
        from bench import provenance

        inv = D.discover()
        return {"hostname": socket.gethostname(),
                "node_id": ray.get_runtime_context().get_node_id(),
                "niceness": os.nice(0),
                "ray_gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "gpus": [d.to_dict() for d in inv.gpus], "skipped": list(inv.skipped),
                "gpu_reason": inv.gpu_reason, "provenance": provenance.collect()}

    def lock(self, device: dict) -> str | None:
        """Take the GPU's lock on this node for the actor's life; None, or why not."""
        from bench.runner import GpuLock

        try:
            self._lock = GpuLock([Device.from_dict(device)]).__enter__()
        except BenchError as exc:
            return str(exc)
        return None

    def release(self) -> None:
        """Give the GPU's lock back (before the driver kills the actor: a run started
        right after finds it free)."""
        if self._lock is not None:
            self._lock.__exit__()
            self._lock = None

    def start(self, device: dict, todo: list, config: Any, parallel_gpus: int) -> None:
        """Measure ``todo`` on this GPU in a thread; :meth:`poll` returns the records."""
        from bench.devices import nvml
        from bench.rundir import PARTS
        from bench.worker import worker_main

        nvml.set_index_base(device["index"] - device["nvml_index"])
        run_dir = self._dir / f"part-{len(os.listdir(self._dir))}"
        run_dir.mkdir()
        ship = _Shipper(self._out, run_dir / PARTS)
        self._thread = threading.Thread(
            target=worker_main, name="joulebench-ray-session", daemon=True,
            args=(device, todo, config, str(run_dir), ship, None, parallel_gpus))
        self._thread.start()

    def poll(self, timeout_s: float) -> list[dict]:
        """The records since the last poll; waits up to ``timeout_s`` for the first."""
        out = []
        try:
            out.append(self._out.get(timeout=timeout_s))
            while True:
                out.append(self._out.get_nowait())
        except queue.Empty:
            pass
        return out

    def probe(self, device: dict, duration_s: float) -> dict:
        """``bench probe`` of this GPU, on its node."""
        from bench.devices import nvml
        from bench.probe import probe_gpu

        nvml.set_index_base(device["index"] - device["nvml_index"])
        return {**probe_gpu(device["index"], duration_s=duration_s), "node": device["node"]}


@dataclass
class _Gpu:
    """One GPU of the cluster and the actor that measures it."""

    device: Device
    actor: Any
    todo: list[list] = field(default_factory=list)  # cell lists waiting for this GPU
    running: list = field(default_factory=list)  # cells started, not yet recorded
    alive: bool = True
    busy: bool = False


class Fleet:
    """The cluster's GPUs, one actor each, as found now."""

    def __init__(self, ray: Any, gpus: list[_Gpu], nodes: list[dict],
                 notices: list[str]) -> None:
        self.ray = ray
        self.gpus = gpus
        self.nodes = nodes
        self.notices = notices

    @classmethod
    def discover(cls, ray: Any) -> Fleet:
        """One actor per GPU Ray lists on each alive node, each mapped to an NVML GPU.

        Raises:
            BenchError: the cluster has no GPU.
        """
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = ray.remote(GpuSession)
        actors: list[tuple[str, Any]] = []
        for n in ray.nodes():
            if not n.get("Alive"):
                continue
            for _ in range(int(n.get("Resources", {}).get("GPU", 0))):
                strategy = NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
                actors.append((n["NodeID"], remote.options(
                    num_gpus=1, num_cpus=0, max_restarts=0, runtime_env=WORKER_ENV,
                    scheduling_strategy=strategy).remote()))
        if not actors:
            raise BenchError("the Ray cluster has no GPU (no node declares GPU resources)")
        try:
            infos = ray.get([a.node.remote() for _, a in actors], timeout=START_S)
        except ray.exceptions.GetTimeoutError:
            for _, a in actors:
                ray.kill(a)
            raise BenchError(f"Ray started no actor on some GPU within {START_S:.0f} s (are "
                             "its GPUs held by another Ray job?)") from None
        by_node: dict[str, list[tuple[Any, dict]]] = {}
        for (_, a), info in zip(actors, infos, strict=True):
            by_node.setdefault(info["node_id"], []).append((a, info))
        gpus: list[_Gpu] = []
        nodes: list[dict] = []
        notices: list[str] = []
        base = 0
        for node_id, members in sorted(by_node.items(),
                                       key=lambda kv: (kv[1][0][1]["hostname"], kv[0])):
            info = members[0][1]
            where = {"hostname": info["hostname"], "node_id": node_id}
            found = [Device.from_dict(d) for d in info["gpus"]]
            notices += [f"node {info['hostname']} ({node_id[:12]}): skipped {s}"
                        for s in info["skipped"]]
            free = {d.gpu_index: d for d in found}
            pairs: list[tuple[Any, Device]] = []
            rest = []
            for a, i in members:  # the GPU Ray gave the actor, where it names an NVML one
                ids = i["ray_gpu_ids"]
                want = int(ids[0]) if len(ids) == 1 and ids[0].isdigit() else None
                if want in free:
                    pairs.append((a, free.pop(want)))
                else:
                    rest.append(a)
            for a in rest:
                if free:
                    pairs.append((a, free.pop(min(free))))
                else:
                    ray.kill(a)
            if free:
                notices.append(f"node {info['hostname']}: GPUs {sorted(free)} have no Ray GPU "
                               "resource; not measured")
            mine = []
            for a, d in sorted(pairs, key=lambda p: p[1].gpu_index):
                dev = Device("cuda", base + d.gpu_index, d.name, d.uuid,
                             {**d.info, "node": where, "nvml_index": d.gpu_index})
                gpus.append(_Gpu(dev, a))
                mine.append(dev.index)
            base += max((d.gpu_index + 1 for d in found), default=0)
            nice = max(i.get("niceness", 0) for _, i in members)
            if nice > 0:
                notices.append(f"node {info['hostname']}: the Ray workers run at niceness "
                               f"{nice}; any busy process there slows the measuring loop")
            nodes.append({**where, "gpus": mine, "niceness": nice,
                          "provenance": info["provenance"]})
        if not gpus:
            raise BenchError("no GPU of the Ray cluster can be measured: "
                             + "; ".join(n for n in notices) if notices else
                             "the Ray cluster's nodes show no GPU through NVML")
        return cls(ray, gpus, nodes, notices)

    def select(self, spec: str | list[int]) -> list[_Gpu]:
        """The GPUs ``--gpu`` names (cluster-wide indices; all and auto: every GPU).

        Raises:
            BenchError: ``none``, or an index no node has.
        """
        from bench.devices import parse_gpu_spec

        parsed = parse_gpu_spec(spec)
        if parsed == "none":
            raise BenchError("--cluster measures GPUs; --gpu none runs on this machine's CPU "
                             "without --cluster")
        if isinstance(parsed, str):
            return list(self.gpus)
        by_index = {g.device.gpu_index: g for g in self.gpus}
        missing = [i for i in parsed if i not in by_index]
        if missing:
            raise BenchError(f"--gpu {','.join(map(str, parsed))}: the cluster has no GPU "
                             f"{missing[0]}; it has {sorted(by_index)} (bench list devices "
                             "--cluster ...)")
        return [by_index[i] for i in parsed]

    def nodes_of(self, gpus: list[_Gpu]) -> list[dict]:
        """Provenance of the nodes that hold ``gpus``."""
        want = {g.device.info["node"]["node_id"] for g in gpus}
        return [n for n in self.nodes if n["node_id"] in want]

    def lock(self, gpus: list[_Gpu]) -> None:
        """Take every GPU's lock on its node (flock per GPU, as on one node).

        Raises:
            BenchError: a GPU is being measured by another bench run.
        """
        whys = self.ray.get([g.actor.lock.remote(g.device.to_dict()) for g in gpus])
        for g, why in zip(gpus, whys, strict=True):
            if why:
                raise BenchError(f"node {g.device.info['node']['hostname']}: {why}")

    def close(self) -> None:
        """Release every GPU's lock (dead actors' went with them), then end the actors."""
        refs = [g.actor.release.remote() for g in self.gpus]
        self.ray.wait(refs, num_returns=len(refs), timeout=10.0)
        for g in self.gpus:
            self.ray.kill(g.actor)


def _resolve(run: Any) -> Any:
    if run.devices and not run.config.is_resolved:
        run.config = run.config.resolved(run.devices[0].kind)
    return run


def run(config: Any, address: str, gpu: str | list[int] = "auto",
        out: Path | str | None = None,
        on_start: Callable[[Any, list], None] | None = None,
        on_event: Callable[[dict], None] | None = None,
        on_notice: Callable[[str], None] | None = None) -> Any:
    """Measure a new sweep on the cluster's GPUs; always writes result.json.

    Args: as :func:`bench.runner.run`, and ``address`` (``--cluster``'s value).

    Raises:
        BenchError: Ray missing, no cluster, no GPU, a bad selection, a GPU locked,
            a setting the cluster does not measure.
        RunFailed: a session failed or GPUs were lost (the finished cells are kept).
    """
    from bench import runner

    check_address(address)
    require_ray()
    if config.node_power:
        raise BenchError("--node-power is not measured on a cluster yet; leave it out")
    if config.engine == "endpoint":
        raise BenchError("--endpoint measures one server; leave out --cluster")
    if config.gpus_per_cell not in (1, "1"):
        raise BenchError("multi-GPU cells (--gpus-per-cell) are not run on a cluster yet; "
                         "leave out --cluster")
    if config.power_limit_w or config.power_limit_frac:
        raise BenchError("the power-limit axis is not run on a cluster yet (its limits are "
                         "restored by the local runner); leave out --cluster")
    runner.check_models(config)
    with connected(address) as ray:
        fleet = Fleet.discover(ray)
        try:
            for line in fleet.notices:
                if on_notice:
                    on_notice(line)
            chosen = fleet.select(gpu)
            fleet.lock(chosen)
            run_ = runner.start_run(config, [g.device for g in chosen], out,
                                    nodes=fleet.nodes_of(chosen))
            return _measure(fleet, run_, chosen, on_start, on_event)
        finally:
            fleet.close()


def resume(run_dir: Path | str, address: str,
           on_start: Callable[[Any, list], None] | None = None,
           on_event: Callable[[dict], None] | None = None) -> Any:
    """Continue a run on the cluster: its GPUs are found by UUID on whichever node.

    Raises:
        BenchError: as :func:`run`; a GPU of the run is on no node of the cluster.
    """
    from bench import runner
    from bench.results import io
    from bench.rundir import open_journal

    check_address(address)
    require_ray()
    run_ = _resolve(open_journal(run_dir))
    if not runner.pending(run_) and run_.result_path.exists():
        return runner.Outcome(run_, run_.result_path, 0)
    with connected(address) as ray:
        fleet = Fleet.discover(ray)
        try:
            by_uuid = {g.device.uuid: g for g in fleet.gpus}
            chosen = []
            for d in run_.devices:
                g = by_uuid.get(d.uuid)
                if d.kind != "cuda" or g is None:
                    raise BenchError(f"{d.label} ({d.uuid}) of this run is on no node of the "
                                     "Ray cluster")
                # the run's number for it, with where it is now
                chosen.append(_Gpu(Device(d.kind, d.index, d.name, d.uuid,
                                          {**d.info, "node": g.device.info["node"],
                                           "nvml_index": g.device.info["nvml_index"]}),
                                   g.actor))
            fleet.lock(chosen)
            now = {n["node_id"] for n in run_.nodes}
            for n in fleet.nodes_of(chosen):
                if n["node_id"] not in now:  # journaled, so a later resume keeps it
                    run_.nodes.append(n)
                    io.append_journal(run_.journal, {"type": "node", **n})
            return _measure(fleet, run_, chosen, on_start, on_event)
        finally:
            fleet.close()


def _measure(fleet: Fleet, run_: Any, chosen: list[_Gpu],
             on_start: Callable[[Any, list], None] | None,
             on_event: Callable[[dict], None] | None) -> Any:
    from bench import runner

    todo = runner.pending(run_)
    if on_start:
        on_start(run_, todo)
    path = runner.execute(run_, on_event,
                          measure=lambda r, rec: _Sweep(fleet.ray, r, chosen, rec).go())
    return runner.Outcome(run_, path, len(todo))


class _Sweep:
    """The driver's loop: start each GPU's cells, journal what comes back, handle deaths."""

    def __init__(self, ray: Any, run_: Any, gpus: list[_Gpu],
                 on_record: Callable[[dict], None]) -> None:
        from bench import runner

        self.ray = ray
        self.run = run_
        self.gpus = {g.device.label: g for g in gpus}
        self.emit = runner._emit_to(run_, on_record)
        self.errors: list[str] = []
        self.polls: dict[Any, str] = {}
        self.per_node: dict[str, int] = {}
        for g in gpus:
            nid = g.device.info["node"]["node_id"]
            self.per_node[nid] = self.per_node.get(nid, 0) + 1

    def go(self) -> list[str]:
        from bench import runner

        for c in runner.pending(self.run):
            g = self.gpus[c.device.label]
            if not g.todo:
                g.todo.append([])
            g.todo[0].append(c)
        for g in self.gpus.values():
            self._next(g)
        while self.polls:
            ready, _ = self.ray.wait(list(self.polls), num_returns=1, timeout=5.0)
            for ref in ready:
                label = self.polls.pop(ref)
                try:
                    recs = self.ray.get(ref)
                except self.ray.exceptions.RayError as exc:
                    self._died(self.gpus[label], exc)
                    continue
                self._take(self.gpus[label], recs)
        return self.errors

    def _next(self, g: _Gpu) -> None:
        """Start the GPU's next list of cells, if any."""
        if not g.todo or not g.alive:
            g.busy = False
            return
        cells = g.todo.pop(0)
        g.running = list(cells)
        g.busy = True
        nodes = self.per_node[g.device.info["node"]["node_id"]]
        g.actor.start.remote(g.device.to_dict(), cells, self.run.config, nodes)
        self.polls[g.actor.poll.remote(POLL_S)] = g.device.label

    def _take(self, g: _Gpu, recs: list[dict]) -> None:
        from bench.rundir import PARTS

        over = False
        for rec in recs:
            kind = rec.get("type")
            if kind == "trace_part":
                from bench.results import io

                parts = self.run.run_dir / PARTS
                parts.mkdir(exist_ok=True)
                io.write_bytes_atomic(parts / Path(rec["name"]).name, rec["data"])
            elif kind == "done":
                over = True
            elif kind == "error":
                self.errors.append(f"{g.device.label} on {g.device.info['node']['hostname']}: "
                                   f"{rec['error']}")
                g.todo.clear()
                over = True
            else:
                if kind == "cell":
                    g.running = [c for c in g.running if c.cell_id != rec["cell_id"]]
                self.emit(rec)
        if over:
            g.running = []
            self._next(g)
        else:
            self.polls[g.actor.poll.remote(POLL_S)] = g.device.label

    def _died(self, g: _Gpu, exc: BaseException) -> None:
        """The GPU's actor or node died: retry its cells (spread) or record them lost."""
        from bench.results import figures
        from bench.results.figures import CellRaw

        g.alive = False
        self.ray.kill(g.actor)
        node = g.device.info["node"]
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        why = (f"node {node['hostname']} ({node['node_id'][:12]}) or its Ray actor died "
               f"mid-sweep ({exc.__class__.__name__}: {first})")
        left = g.running + [c for batch in g.todo for c in batch]
        g.running, g.todo = [], []
        if not left:
            return
        same = [o for o in self.gpus.values() if o.alive and o.device.name == g.device.name]
        if self.run.config.spread and same:
            for n, c in enumerate(left):
                o = same[n % len(same)]
                moved = c.with_device(o.device)
                if o.todo:
                    o.todo[-1].append(moved)
                else:
                    o.todo.append([moved])
            for o in same:
                if not o.busy:
                    self._next(o)
            return
        for c in left:
            self.emit(figures.cell_record(CellRaw(c, "lost", error=why)))
        self.errors.append(f"{g.device.label}: {why}; {len(left)} cell(s) recorded lost "
                           "(--resume measures them)")


def list_devices(address: str) -> dict:
    """Every node's GPUs: ``{"nodes": [...], "devices": [...], "notices": [...]}``."""
    with connected(address) as ray:
        fleet = Fleet.discover(ray)
        try:
            return {"nodes": [{k: v for k, v in n.items() if k != "provenance"}
                              for n in fleet.nodes],
                    "devices": [g.device.to_dict() for g in fleet.gpus],
                    "notices": list(fleet.notices)}
        finally:
            fleet.close()


def probe(address: str, gpu: str | list[int], duration_s: float) -> list[dict]:
    """``bench probe`` of the selected GPUs of every node, each on its node, in parallel."""
    with connected(address) as ray:
        fleet = Fleet.discover(ray)
        try:
            chosen = fleet.select(gpu)
            return list(ray.get([g.actor.probe.remote(g.device.to_dict(), duration_s)
                                 for g in chosen]))
        finally:
            fleet.close()
