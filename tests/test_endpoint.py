"""Endpoint mode against the stand-in OpenAI server: figures, faults, resume, validate."""

import json
import shutil
import socket
import subprocess
import sys
import time
from array import array
from pathlib import Path

import pytest

from bench import cli
from bench.engines import loadgen, steady
from bench.engines.loadgen import Request
from bench.results.validate import validate

SERVER = Path(__file__).resolve().parent / "fake_openai_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeServer:
    """The stand-in server in a process of its own, on a given port; stops by itself."""

    def __init__(self, *args: str, port: int | None = None, lifetime_s: float = 90.0):
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), "--port", str(self.port), "--lifetime-s",
             str(lifetime_s), *args], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("PORT"), line
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def server_factory():
    made = []

    def make(*args, **kw):
        s = FakeServer(*args, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


GPU_SPEC = "base_w=250,update_ms=50"  # the stand-in GPU the endpoint tests measure


def run_args(url, out, *extra):
    return ["run", "--endpoint", url, "--model", "tiny-llama", "--gpu", "all",
            "--input-len", "16", "--output-len", "32", "--min-window-s", "0.6",
            "--repeats", "2", "--idle-s", "0.3", "--out", str(out), "--quiet", *extra]


def checks_pass(path):
    bad = [c.line() for c in validate(path) if not c.ok]
    assert not bad, bad


# -- the window arithmetic, against hand-worked values ------------------------------

def req(slot, start, arrivals, end, usage=None, error=None, usage_in=None):
    r = Request(slot, start, array("q", arrivals), array("l", [1] * len(arrivals)), end,
                usage, usage_in, error)
    return r


def test_window_counts_tokens_that_arrive_inside_it():
    rs = [
        # 4 chunks at 10, 20, 30, 40; window [15, 35) holds 20 and 30
        req(0, 0, [10, 20, 30, 40], 45, usage=4),
        # first token at 25 inside: prefill inside, TTFT 25 - 5 = 20 ns; ends at 34 inside
        req(1, 5, [25, 30, 34], 34, usage=3),
        # usage says 6 tokens for 3 chunks: each chunk weighs 2; two inside -> 4 tokens
        req(2, 0, [16, 17, 50], 60, usage=6),
        # an error that ended inside the window; a short output that finished inside
        req(3, 0, [], 20, error="http 500"),
        req(4, 0, [1, 2], 30, usage=2),
    ]
    w = steady.window_load(rs, 15, 35, input_len=8, output_len=3)
    assert w["output_tokens"] == 2 + 3 + 4
    assert w["requests_streaming"] == 3
    assert w["input_tokens"] == 2 * 8  # requests 1 and 2 have their first token inside
    assert w["ttft_s"]["median"] == pytest.approx((20e-9 + 16e-9) / 2)
    assert w["requests_finished"] == 2 and w["errors"] == {"http 500": 1}
    assert w["short_outputs"] == 1  # request 4 made 2 of 3
    # finished inside: request 1, 3 tokens from 25 to 34 -> 4.5 ns per token after the
    # first; request 4, 2 tokens from 1 to 2 -> 1 ns
    assert w["tpot_s"]["median"] == pytest.approx((4.5e-9 + 1e-9) / 2)


def test_quantiles_and_client_flag():
    q = steady.quantiles([1.0, 2.0, 3.0, 4.0, 5.0])
    assert q == {"median": 3.0, "p90": pytest.approx(4.6), "p99": pytest.approx(4.96)}
    assert steady.quantiles([]) == {"median": None, "p90": None, "p99": None}
    assert steady.client_block(0.9, 1.0, [0.001])["client_saturated"]
    assert steady.client_block(0.1, 1.0, [0.2, 0.2, 0.2])["client_saturated"]
    assert not steady.client_block(0.1, 1.0, [0.001])["client_saturated"]


# -- the load generator against the stand-in ---------------------------------------

def test_closed_loop_keeps_c_streams_and_counts_like_usage(server_factory):
    srv = server_factory("--delay-s", "0.01")
    lg = loadgen.LoadGenerator(loadgen.LoadSpec(srv.url, "tiny-llama", 4, 8, 20)).start()
    assert lg.wait_steady(20)
    time.sleep(1.0)
    lg.stop()
    done = [r for r in lg.requests if r.end_ns and r.error is None]
    assert done and all(r.output_tokens == 20 == r.streamed_tokens for r in done)
    assert all(r.usage_input == 8 for r in done)
    # closed loop: at any time inside the run, exactly 4 requests were in flight
    t = done[len(done) // 2].first_ns
    in_flight = [r for r in lg.requests if r.start_ns <= t and (r.end_ns or t + 1) > t]
    assert len(in_flight) == 4


def test_timeouts_are_counted_per_request(server_factory):
    srv = server_factory("--delay-s", "1.0")
    lg = loadgen.LoadGenerator(loadgen.LoadSpec(srv.url, "tiny-llama", 2, 8, 5,
                                                request_timeout_s=0.3)).start()
    time.sleep(1.5)
    lg.stop(drain_s=3)
    assert any(r.error == "timeout" for r in lg.requests)


# -- bench run --endpoint -----------------------------------------------------------

def test_endpoint_run_is_a_validating_document(server_factory, fake_nvml, fake_nvml_dir,
                                               monkeypatch, tmp_path, capsys):
    fake_nvml(GPU_SPEC)
    srv = server_factory("--delay-s", "0.01")
    out = tmp_path / "run"
    assert cli.main(run_args(srv.url, out, "--concurrency", "2,8", "--json")) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [c["status"] for c in last["cells"]] == ["ok", "ok"]
    checks_pass(out)
    doc = json.loads((out / "result.json").read_text())
    assert [c["cell_id"] for c in doc["cells"]] == [
        "gpu0/tiny-llama/bf16/b2/i16/o32/endpoint", "gpu0/tiny-llama/bf16/b8/i16/o32/endpoint"]
    for c in doc["cells"]:
        eng = c["engine"]
        assert eng["name"] == "endpoint" and eng["concurrency"] == c["batch_size"]
        assert eng["server"]["version"] == "fake-1.0" and eng["measured_devices"] == ["gpu0"]
        f = c["figures"]
        # constant 250 W: tokens/J is tokens/s / 250
        assert f["mean_power_w"] == pytest.approx(250, rel=2e-2)
        assert f["output_tokens_per_j"] == pytest.approx(f["output_tokens_per_s"] / 250,
                                                         rel=2e-2)
        # each stream makes a token per 10 ms at most: c streams, at most 100 c tokens/s
        assert 0 < f["output_tokens_per_s"] <= 100 * c["batch_size"] * 1.05
        load = c["load"]
        assert load["request_errors"] == 0 and load["short_outputs"] == 0
        assert load["ttft_s"]["median"] > 0 and load["tpot_s"]["p99"] >= 0.009
        for r in c["repeats"]:
            assert r["load"]["client"]["loop_cpu_fraction"] is not None
            assert r["output_tokens"] == r["load"]["output_tokens"]
    # the load block is built by cell_record: validate redoes what the document allows
    from bench.results.validate import validate

    load = doc["cells"][0]["load"]
    load["client_saturated"] = not load["client_saturated"]  # not what its windows say
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "result.json").write_text(json.dumps(doc))
    shutil.copy(out / "trace.parquet", bad / "trace.parquet")  # links are refused
    assert any(c.rule == "figures" and not c.ok and "client_saturated" in c.reason
               for c in validate(bad))


def test_unreachable_server_is_one_line_and_exit_2(fake_nvml, fake_nvml_dir, monkeypatch,
                                                   tmp_path, capsys):
    fake_nvml(GPU_SPEC)
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert cli.main(run_args(url, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreachable" in err[0]
    assert not (tmp_path / "run").exists()


def test_errors_and_short_outputs_are_counted(server_factory, fake_nvml, fake_nvml_dir,
                                              monkeypatch, tmp_path):
    fake_nvml(GPU_SPEC)
    srv = server_factory("--delay-s", "0.005", "--fail-every", "4", "--short", "8")
    out = tmp_path / "run"
    assert cli.main(run_args(srv.url, out, "--concurrency", "4")) == 0
    checks_pass(out)
    (c,) = json.loads((out / "result.json").read_text())["cells"]
    assert c["status"] == "ok"
    assert c["load"]["errors"].get("http 500", 0) > 0
    assert c["load"]["short_outputs"] > 0  # asked for 32, the server stopped at 8
    assert c["figures"]["output_tokens"] == sum(r["output_tokens"] for r in c["repeats"])


def test_server_death_mid_window_keeps_data_and_resume_goes_on(
        server_factory, fake_nvml, fake_nvml_dir, monkeypatch, tmp_path, capsys):
    fake_nvml(GPU_SPEC)
    # ~2 x 100 tok/s: cell b1 (1.2 s of windows) passes, b2 dies inside its windows
    srv = server_factory("--delay-s", "0.01", "--die-after-tokens", "260")
    out = tmp_path / "run"
    assert cli.main(run_args(srv.url, out, "--concurrency", "1,2")) == 1
    assert "--resume" in capsys.readouterr().err
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "failed"
    statuses = [(c["batch_size"], c["status"]) for c in doc["cells"]]
    assert statuses[-1][1] == "error" and doc["cells"][-1]["error"]
    checks_pass(out)
    server_factory("--delay-s", "0.01", port=srv.port)  # the server is back
    assert cli.main(["run", "--resume", str(out), "--quiet"]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "complete"
    checks_pass(out)


def test_serve_cmd_starts_and_stops_the_server(fake_nvml, fake_nvml_dir, monkeypatch,
                                               tmp_path):
    fake_nvml(GPU_SPEC)
    port = free_port()
    cmd = f"{sys.executable} {SERVER} --port {port} --delay-s 0.01 --lifetime-s 60"
    out = tmp_path / "run"
    url = f"http://127.0.0.1:{port}/v1"
    assert cli.main(run_args(url, out, "--concurrency", "2", "--serve-cmd", cmd)) == 0
    checks_pass(out)
    (c,) = json.loads((out / "result.json").read_text())["cells"]
    assert c["engine"]["server"] == {"cmd": cmd, "version": "fake-1.0",
                                     "started_by_harness": True}
    assert (out / "server.log").exists()
    with pytest.raises(OSError):  # stopped at the end
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_endpoint_on_the_cpu_without_rapl_is_refused(server_factory, monkeypatch, tmp_path,
                                                     capsys):
    from bench.devices import rapl

    monkeypatch.setattr(rapl, "sources", lambda *a: ([], "no powercap here"))
    srv = server_factory()
    out = tmp_path / "run"
    assert cli.main(run_args(srv.url, out, "--gpu", "none")) == 2  # the last --gpu counts
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RAPL" in err[0] and not out.exists()


@pytest.mark.parametrize("argv, needle", [
    (["--concurrency", "2"], "--concurrency needs --endpoint"),
    (["--endpoint", "http://127.0.0.1:1/v1", "--batch", "2"], "not --batch"),
    (["--endpoint", "ftp://x", "--concurrency", "2"], "http://HOST:PORT/v1"),
    (["--endpoint", "http://127.0.0.1:1/v1", "--model", "a,b"], "one --model"),
    (["--serve-cmd", "true"], "--serve-cmd needs --endpoint"),
])
def test_bad_endpoint_flags_are_one_line(argv, needle, capsys, tmp_path):
    assert cli.main(["run", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
