"""Sweeps on a Ray cluster: two nodes on this machine, each with its own stand-in NVML GPU.

``ray.cluster_utils.Cluster`` starts a head (no GPU) and two nodes that declare one GPU
each; every node's processes see their own stand-in device (FAKE_NVML_DEVICES in the
node's environment: names, UUIDs and power differ), and run the model on the CPU. The
cluster is started once for the file and always shut down, also when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.results import validate as V
from bench.results.schema_spec import CELL_STATUSES
from bench.results.table import rows_from_document

ray = pytest.importorskip("ray", reason="Ray is the cluster extra: pip install -e '.[test]'")
from ray.cluster_utils import Cluster  # noqa: E402

from bench.cluster import CHANNEL_TIMEOUT_ENV, connect_error_line  # noqa: E402
from bench.errors import BenchError  # noqa: E402

# Small cells; windows long enough that a node removed after its first cell dies while
# its next cell is in flight (seconds per cell, removal takes well under one).
FAST = ["--input-len", "8", "--output-len", "4", "--repeats", "1", "--idle-s", "0.2",
        "--no-compile", "--no-phases", "--dtype", "fp32", "--quiet"]
# Node -> its stand-in GPU: same model name (--spread can move cells between them),
# different UUIDs and power, so each cell shows which node's NVML measured it.
NODES = {"a": "name=Fake H100,uuid=GPU-aaaaaaaa-0000-0000-0000-000000000001,base_w=200",
         "b": "name=Fake H100,uuid=GPU-bbbbbbbb-0000-0000-0000-000000000002,base_w=300"}
POWER_W = {"GPU-aaaaaaaa-0000-0000-0000-000000000001": 200.0,
           "GPU-bbbbbbbb-0000-0000-0000-000000000002": 300.0}


class TwoNodes:
    """The cluster and its GPU nodes by name (a removed node is added again on demand)."""

    def __init__(self, fake_dir: Path, locks: Path) -> None:
        import socket

        self.fake_dir, self.locks = fake_dir, locks
        with socket.socket() as s:  # a free port for the head's Ray Client server
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.client = f"ray://127.0.0.1:{port}"
        # The head's Ray Client server starts a server process per connection. That
        # start dies at random where Ray forks it while gRPC is busy (ray#63202: the probe
        # test failed both its tries in one of 4 hogged suite runs, and took 630 s in
        # another with a 300 s timeout); with gRPC's fork handlers off on the head, 0 of
        # 30 hogged connects failed against 4 of 30. Its processes read both settings
        # from the environment they start with; a start took at most 6 s beside a hog.
        head_env = {"GRPC_ENABLE_FORK_SUPPORT": "0", CHANNEL_TIMEOUT_ENV: "60"}
        old = {k: os.environ.get(k) for k in head_env}
        os.environ.update(head_env)
        try:
            self.cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 1, "num_gpus": 0, "ray_client_server_port": port})
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.nodes: dict[str, object] = {}

    def env(self, name: str) -> dict:
        return {"LD_LIBRARY_PATH": str(self.fake_dir), "FAKE_NVML_DEVICES": NODES[name],
                "JOULEBENCH_MODEL_DEVICE": "cpu", "JOULEBENCH_LOCK_DIR": str(self.locks)}

    def ensure(self) -> None:
        for name in NODES:
            if name not in self.nodes:
                self.nodes[name] = self.cluster.add_node(num_cpus=1, num_gpus=1,
                                                         env_vars=self.env(name))
        self.cluster.wait_for_nodes()

    def remove(self, name: str) -> None:
        self.cluster.remove_node(self.nodes.pop(name))


@pytest.fixture(scope="module")
def two_nodes(fake_nvml_dir, tmp_path_factory):
    locks = tmp_path_factory.mktemp("locks")
    old = os.environ.get("RAY_ADDRESS")
    c = None
    try:
        c = TwoNodes(fake_nvml_dir, locks)
        os.environ["RAY_ADDRESS"] = c.cluster.address
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if c is not None:
            c.cluster.shutdown()
        if old is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = old


@pytest.fixture
def nodes(two_nodes):
    two_nodes.ensure()
    return two_nodes


# A window whose end the sampler had not reached 2 s later (a starved CPU: this machine
# under load) has its counter edges read directly ('read'); the trace, flushed after the
# cell, covers them by then, and the trace rule names it. The meter's fallback, not the
# cluster's: every other finding fails the test.
STARVED = "edges marked 'read' but the trace covers them"


def assert_valid(run_dir: Path) -> None:
    bad = [(r.rule, r.reason) for r in V.validate(run_dir) if not r.ok]
    assert all(rule == "trace" and all(STARVED in m for m in reason.split("; "))
               for rule, reason in bad), bad


def journal_cells(run_dir: Path) -> list[dict]:
    path = run_dir / "journal.jsonl"
    if not path.exists():
        return []
    recs = []
    for line in path.read_text().splitlines():
        try:
            recs.append(json.loads(line))
        except ValueError:  # a line being written
            break
    return [r for r in recs if r.get("type") == "cell"]


def remove_after_first_cell(nodes: TwoNodes, name: str, run_dir: Path, uuid: str,
                            done: list) -> threading.Thread:
    """Remove node ``name`` once the journal has a finished cell of its GPU ``uuid``."""
    def watch() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if any(c["node"]["gpu"]["uuid"] == uuid for c in journal_cells(run_dir)):
                nodes.remove(name)
                done.append(time.monotonic())
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_cluster_local_starts_ray_here_and_measures_this_machines_gpus(fake_nvml_dir,
                                                                       tmp_path):
    # Before the two-node cluster starts: `local` starts its own Ray, with this machine's
    # GPUs (the stand-in's one), also where RAY_ADDRESS names another cluster.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(LD_LIBRARY_PATH=str(fake_nvml_dir), FAKE_NVML_DEVICES="name=Fake L4,base_w=70",
               JOULEBENCH_MODEL_DEVICE="cpu", JOULEBENCH_LOCK_DIR=str(tmp_path),
               RAY_ADDRESS="127.0.0.1:1")
    out = tmp_path / "local"
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--cluster", "local", "--out",
                        str(out), "--batch", "1,2", "--min-window-s", "0.3", *FAST, "--json"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads((out / "result.json").read_text())
    assert [c["cell_id"] for c in doc["cells"]] == [
        f"gpu0/tiny-llama/fp32/b{b}/i8/o4" for b in (1, 2)]
    for c in doc["cells"]:
        assert c["status"] == "ok" and c["node"]["gpu"]["name"] == "Fake L4"
        assert c["figures"]["mean_power_w"] == pytest.approx(70, rel=0.05)
    assert_valid(out)


def test_cluster_run_gives_a_local_runs_cells_each_with_its_node(nodes, tmp_path, capsys,
                                                                 monkeypatch, fake_nvml):
    # every node's GPUs, with their node
    assert main(["list", "devices", "--cluster", "auto", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    devs = listed["devices"]
    assert sorted(d["uuid"] for d in devs) == sorted(POWER_W)
    assert sorted(d["index"] for d in devs) == [0, 1]  # numbered across the cluster
    assert all(d["nvml_index"] == 0 for d in devs)  # each is NVML's GPU 0 on its node
    assert len({d["node"]["node_id"] for d in devs}) == 2

    out = tmp_path / "cluster"
    assert main(["run", "--cluster", "auto", "--out", str(out), "--batch", "1,2",
                 "--min-window-s", "0.3", *FAST]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "complete"
    cells = doc["cells"]
    assert sorted(c["cell_id"] for c in cells) == sorted(
        f"gpu{g}/tiny-llama/fp32/b{b}/i8/o4" for g in (0, 1) for b in (1, 2))
    node_of = {d["uuid"]: d["node"]["node_id"] for d in devs}
    for c in cells:
        gpu = c["node"]["gpu"]
        assert c["status"] == "ok" and gpu["name"] == "Fake H100" and gpu["index"] == 0
        assert c["node"]["node_id"] == node_of[gpu["uuid"]]
        assert c["node"]["hostname"]
        # each node's own NVML: constant power, 200 W on one node and 300 W on the other
        assert c["figures"]["mean_power_w"] == pytest.approx(POWER_W[gpu["uuid"]], rel=0.05)
    # every node's provenance
    prov = doc["provenance"]["nodes"]
    assert sorted(n["node_id"] for n in prov) == sorted(node_of.values())
    assert all({"harness", "host", "libraries"} <= set(n["provenance"]) for n in prov)
    # Ray starts workers at niceness 15: the measuring actors must run at 0, or any busy
    # process on the node starves the sampler
    assert [n["niceness"] for n in prov] == [0, 0]
    assert_valid(out)
    rows = rows_from_document(doc)  # the table's node columns
    assert {(r["cell_id"], r["node_hostname"], r["ray_node_id"]) for r in rows} == {
        (c["cell_id"], c["node"]["hostname"], c["node"]["node_id"]) for c in cells}

    # the same sweep on one node, locally (one stand-in GPU): the same shape but `node`
    fake_nvml(NODES["a"])
    monkeypatch.setenv("LD_LIBRARY_PATH", str(nodes.fake_dir))
    monkeypatch.setenv("JOULEBENCH_MODEL_DEVICE", "cpu")
    # its own lock folder: another machine's (the cluster's actors, killed, may still hold
    # node a's lock for a moment)
    monkeypatch.setenv("JOULEBENCH_LOCK_DIR", str(tmp_path))
    local = tmp_path / "local"
    assert main(["run", "--gpu", "0", "--out", str(local), "--batch", "1,2",
                 "--min-window-s", "0.3", *FAST]) == 0
    ldoc = json.loads((local / "result.json").read_text())
    assert set(doc) == set(ldoc)
    assert {c["cell_id"] for c in ldoc["cells"]} == {
        c["cell_id"] for c in cells if c["cell_id"].startswith("gpu0/")}
    for lc in ldoc["cells"]:
        (cc,) = [c for c in cells if c["cell_id"] == lc["cell_id"]]
        assert set(cc) - {"node"} == set(lc)
        assert set(cc["figures"]) == set(lc["figures"])
    assert set(doc["devices"][0]) - {"node", "nvml_index"} == set(ldoc["devices"][0])
    assert all(r["node_hostname"] is None for r in rows_from_document(ldoc))


def test_a_node_lost_mid_sweep_records_its_cells_lost_and_resume_measures_them(
        nodes, tmp_path, capsys):
    out = tmp_path / "run"
    b_uuid = NODES["b"].split("uuid=")[1].split(",")[0]
    removed: list = []
    watcher = remove_after_first_cell(nodes, "b", out, b_uuid, removed)
    rc = main(["run", "--cluster", "auto", "--out", str(out), "--batch", "1,2,3",
               "--min-window-s", "1.5", *FAST])
    watcher.join(timeout=5)
    assert removed, "node b was never removed"
    err = capsys.readouterr().err
    assert rc == 1 and "recorded lost" in err
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "failed"
    by_gpu = {g: [c for c in doc["cells"] if c["device"] == g] for g in ("gpu0", "gpu1")}
    a_gpu = "gpu0" if by_gpu["gpu0"][0]["node"]["gpu"]["uuid"] != b_uuid else "gpu1"
    b_gpu = "gpu1" if a_gpu == "gpu0" else "gpu0"
    assert [c["status"] for c in by_gpu[a_gpu]] == ["ok"] * 3  # the other node goes on
    b_cells = sorted(by_gpu[b_gpu], key=lambda c: c["batch_size"])
    assert b_cells[0]["status"] == "ok"  # finished before the node died: kept
    assert [c["status"] for c in b_cells[1:]] == ["lost", "lost"]
    for c in b_cells[1:]:
        assert "died mid-sweep" in c["error"] and c["figures"] is None
    assert "lost" in CELL_STATUSES
    assert_valid(out)
    assert main(["run", "--resume", str(out), "--quiet"]) == 2  # needs --cluster
    assert "--cluster" in capsys.readouterr().err
    kept = {c["cell_id"]: (c["pid"], c["repeats"][0]["t0_ns"]) for c in doc["cells"]
            if c["status"] == "ok"}

    # the node comes back (a new Ray node id, the same GPU): --resume measures the lost
    # cells only. Its driver is killed (SIGKILL) after one of them: the journal stays
    # resumable, and the next --resume measures the last one.
    nodes.ensure()
    before = len(journal_cells(out))
    driver = subprocess.Popen([sys.executable, "-m", "bench", "run", "--resume", str(out),
                               "--cluster", "auto", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while len(journal_cells(out)) == before and time.monotonic() < deadline:
            assert driver.poll() is None, "the resumed driver ended before its first cell"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.kill()
        driver.wait(timeout=30)
    assert len(journal_cells(out)) == before + 1
    for _ in range(60):  # its actors die with it, releasing the GPU locks on their nodes
        rc = main(["run", "--resume", str(out), "--cluster", "auto", "--quiet"])
        if rc != 2:
            break
        assert "being measured by another bench run" in capsys.readouterr().err
        time.sleep(1)
    assert rc == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "complete"
    ids = [c["cell_id"] for c in doc["cells"]]
    assert len(ids) == len(set(ids)) == 6
    assert all(c["status"] == "ok" for c in doc["cells"])
    # node b came back as a new Ray node: the document lists it too (journaled by the
    # killed driver's session, kept by the last one)
    prov = {n["node_id"] for n in doc["provenance"]["nodes"]}
    assert len(prov) == 3 and {c["node"]["node_id"] for c in doc["cells"]} <= prov
    for cid, (pid, t0) in kept.items():  # finished cells were not measured again
        (c,) = [c for c in doc["cells"] if c["cell_id"] == cid]
        assert (c["pid"], c["repeats"][0]["t0_ns"]) == (pid, t0)
    assert_valid(out)


def test_spread_retries_a_lost_nodes_cells_on_another_gpu_of_the_model(nodes, tmp_path):
    out = tmp_path / "spread"
    b_uuid = NODES["b"].split("uuid=")[1].split(",")[0]
    removed: list = []
    watcher = remove_after_first_cell(nodes, "b", out, b_uuid, removed)
    rc = main(["run", "--cluster", "auto", "--spread", "--out", str(out),
               "--batch", "1,2,3,4", "--min-window-s", "1.5", *FAST])
    watcher.join(timeout=5)
    assert removed, "node b was never removed"
    assert rc == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "complete" and doc["config"]["spread"] is True
    cells = doc["cells"]
    # each cell once for the GPU model, every one measured, none lost
    assert sorted(c["batch_size"] for c in cells) == [1, 2, 3, 4]
    assert all(c["status"] == "ok" for c in cells)
    on_b = [c for c in cells if c["node"]["gpu"]["uuid"] == b_uuid]
    on_a = [c for c in cells if c["node"]["gpu"]["uuid"] != b_uuid]
    # dealt 1,3 to one GPU and 2,4 to the other; node b finished one cell, then died:
    # the rest of its share was measured on node a's GPU
    assert len(on_b) >= 1 and len(on_a) >= 3 and len(on_a) + len(on_b) == 4
    assert_valid(out)


def test_a_gpu_locked_on_its_node_refuses_the_run_before_anything_is_written(
        nodes, tmp_path, monkeypatch, capsys):
    from bench.devices import Device
    from bench.runner import GpuLock

    monkeypatch.setenv("JOULEBENCH_LOCK_DIR", str(nodes.locks))  # the nodes' lock folder
    uuid = NODES["a"].split("uuid=")[1].split(",")[0]
    out = tmp_path / "refused"
    with GpuLock([Device("cuda", 0, "Fake H100", uuid)]):  # another bench run holds it
        rc = main(["run", "--cluster", "auto", "--out", str(out), "--batch", "1", *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "being measured by another bench run" in err
    assert err.count("\n") == 1 and not out.exists()


def test_probe_on_the_cluster_probes_every_nodes_gpu(nodes, capsys):
    # through Ray Client (ray://HOST:PORT), as from a laptop outside the cluster; bench
    # tries again where the head's server for the connection fails to start (ray#63202)
    rc = main(["probe", "--cluster", nodes.client, "--duration-s", "0.3", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads(captured.out.splitlines()[-1])["devices"]
    assert sorted(r["index"] for r in res) == [0, 1]
    assert len({r["node"]["node_id"] for r in res}) == 2
    for r in res:  # each node's stand-in, probed on its node
        assert r["name"] == "Fake H100" and r["supported"]["energy_counter"]


# what Ray Client raises where the head's server for this connection did not come up: a
# first line that only introduces the proxier's traceback (seen here, Ray 2.60.0)
INIT_FAILURE = ("Initialization failure from server:\nTraceback (most recent call last):\n"
                '  File "proxier.py", line 772, in Datapath\n    raise RuntimeError(\n'
                "RuntimeError: Proxy failed to Connect to backend! Check `ray_client_server"
                ".err`\n")


def test_a_ray_client_init_failure_names_the_error_and_the_cause():
    line = connect_error_line(INIT_FAILURE, "ConnectionAbortedError")
    assert "\n" not in line
    assert line.startswith("Initialization failure from server: RuntimeError: Proxy failed")
    assert CHANNEL_TIMEOUT_ENV in line and "GRPC_ENABLE_FORK_SUPPORT=0" in line
    assert "ray#63202" in line
    # the other form seen: the server's start itself reported failed
    other = connect_error_line("Starting Ray client server failed. See ray_client_server_"
                               "23000.err for detailed logs.", "RuntimeError")
    assert other.startswith("Starting Ray client server failed.") and "63202" in other
    # a plain message keeps its first line, with no hint; an empty one names its kind
    assert connect_error_line("no cluster at x\nmore", "ConnectionError") == "no cluster at x"
    assert connect_error_line("  ", "ConnectionError") == "ConnectionError"


class FlakyRay:
    """A stand-in ``ray`` whose ``init`` raises the given errors, then connects."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)
        self.inits = self.shutdowns = 0

    def init(self, address: str, **kw) -> None:
        self.inits += 1
        if self.errors:
            raise self.errors.pop(0)

    def shutdown(self) -> None:
        self.shutdowns += 1


def test_a_server_start_failure_is_tried_again_and_each_retry_said(monkeypatch, capsys):
    import bench.cluster as C

    fake = FlakyRay([ConnectionAbortedError(INIT_FAILURE), RuntimeError(
        "Starting Ray client server failed. See ray_client_server_23005.err")])
    monkeypatch.setattr(C, "require_ray", lambda: fake)
    with C.connected("ray://head:10001") as ray:
        assert ray is fake and fake.inits == 3
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "(2 of 3)" in err[0] and "(3 of 3)" in err[1]
    assert all(ln.startswith("bench: connecting to the Ray cluster at ray://head:10001 "
                             "failed") for ln in err)
    assert fake.shutdowns == 3  # after each failed try, and at the end


def test_a_server_start_failing_every_try_gives_one_line(monkeypatch, capsys):
    import bench.cluster as C

    fake = FlakyRay([ConnectionAbortedError(INIT_FAILURE)] * 5)
    monkeypatch.setattr(C, "require_ray", lambda: fake)
    with pytest.raises(BenchError) as exc:
        with C.connected("ray://head:10001"):
            pass
    assert fake.inits == 3
    msg = str(exc.value)
    assert msg.startswith("cannot connect to the Ray cluster at ray://head:10001 (3 tries): "
                          "Initialization failure from server: RuntimeError")
    assert "\n" not in msg


def test_a_wrong_address_is_not_tried_again(monkeypatch, capsys):
    import bench.cluster as C

    fake = FlakyRay([ConnectionError("ray client connection timeout")])
    monkeypatch.setattr(C, "require_ray", lambda: fake)
    with pytest.raises(BenchError, match=r"at ray://nowhere:1: ray client connection timeout$"):
        with C.connected("ray://nowhere:1"):
            pass
    assert fake.inits == 1 and capsys.readouterr().err == ""


@pytest.mark.parametrize("argv", [
    ["run", "--cluster", "local"],
    ["list", "devices", "--cluster", "auto"],
    ["probe", "--cluster", "ray://head:10001"],
])
def test_without_ray_cluster_says_how_to_install_it(argv, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'joulebench[cluster]'" in err


@pytest.mark.parametrize("argv, fragment", [
    (["run", "--spread"], "--spread needs --cluster"),
    (["run", "--cluster", "tcp://x:1"], "ray://HOST:PORT"),
    (["run", "--cluster", "ray://nohost"], "ray://HOST:PORT"),
])
def test_bad_cluster_flags_are_one_line_and_exit_2(argv, fragment, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err


def test_spread_plans_each_cell_once_per_gpu_model_dealt_in_turn():
    from bench.devices import Device
    from bench.sweep import SweepConfig, plan

    a, b = Device("cuda", 0, "H100", "U-a"), Device("cuda", 1, "H100", "U-b")
    c = Device("cuda", 2, "L4", "U-c")
    cfg = SweepConfig(batch_sizes=(4, 1, 2), dtype="bf16", spread=True)
    got = [x.cell_id for x in plan(cfg, [a, c, b])]
    # H100: batches ascending, dealt gpu0, gpu1, gpu0; L4: its one GPU takes all three
    assert got == ["gpu0/tiny-llama/bf16/b1/i32/o32", "gpu1/tiny-llama/bf16/b2/i32/o32",
                   "gpu0/tiny-llama/bf16/b4/i32/o32", "gpu2/tiny-llama/bf16/b1/i32/o32",
                   "gpu2/tiny-llama/bf16/b2/i32/o32", "gpu2/tiny-llama/bf16/b4/i32/o32"]
    assert len(plan(SweepConfig(batch_sizes=(4, 1, 2), dtype="bf16"), [a, c, b])) == 9


def test_a_lost_cell_is_pending_and_its_measurement_replaces_it(tmp_path):
    from bench import runner
    from bench.devices import Device
    from bench.rundir import open_journal
    from bench.sweep import SweepConfig

    a, b = Device("cuda", 0, "H100", "U-a"), Device("cuda", 1, "H100", "U-b")
    cfg = SweepConfig(batch_sizes=(1, 2), dtype="bf16", min_window_s=1.0, warmup=1,
                      spread=True)
    run = runner.start_run(cfg, [a, b], tmp_path / "r")

    def cell(dev: str, name: str, b: int, status: str) -> dict:
        return {"type": "cell", "cell_id": f"{dev}/tiny-llama/bf16/b{b}/i32/o32",
                "device": dev, "device_name": name, "batch_size": b, "status": status}

    run.add(cell("gpu0", "H100", 1, "ok"))
    run.add(cell("gpu1", "H100", 2, "lost"))
    assert [c.cell_id for c in runner.pending(run)] == ["gpu1/tiny-llama/bf16/b2/i32/o32"]
    # measured again on the other GPU of the model (spread): it replaces the lost record
    run.add(cell("gpu0", "H100", 2, "ok"))
    assert [c["cell_id"] for c in run.cells] == ["gpu0/tiny-llama/bf16/b1/i32/o32",
                                                "gpu0/tiny-llama/bf16/b2/i32/o32"]
    assert runner.pending(run) == []
    again = open_journal(run.run_dir)  # the journal holds all three lines; the same view
    assert [c["cell_id"] for c in again.cells] == [c["cell_id"] for c in run.cells]
    assert runner.pending(again) == []
