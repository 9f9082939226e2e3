"""The node scope end to end: a GPU-path run with the stand-in NVML and a stand-in BMC
(``ipmitool`` on PATH), validated, and priced by econ as measured node energy."""

import json
import os
import subprocess
import sys

import pytest

NODE_W = 500.0  # the stand-in BMC's constant reading

FAKE_IPMITOOL = """#!{python} -S
import os, sys
if os.path.exists(os.environ["FAKE_IPMI_FAIL"]):
    print("Error: unable to establish IPMI v2 / RMCP+ session", file=sys.stderr)
    sys.exit(1)
print("    Instantaneous power reading:              {watts} Watts")
print("    Power reading state is:                   activated")
"""


@pytest.fixture
def node_env(fake_nvml_dir, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "ipmitool"
    exe.write_text(FAKE_IPMITOOL.replace("{python}", sys.executable)
                   .replace("{watts}", f"{NODE_W:g}"))
    exe.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
            "FAKE_IPMI_FAIL": str(tmp_path / "fail"),
            "LD_LIBRARY_PATH": str(fake_nvml_dir), "JOULEBENCH_MODEL_DEVICE": "cpu",
            "JOULEBENCH_LOCK_DIR": str(tmp_path / "locks")}


def bench(*args, env):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env})


SMALL = ["--batch", "1,2", "--input-len", "8", "--output-len", "4", "--min-window-s", "0.3",
         "--repeats", "2", "--idle-s", "0.3", "--quiet"]


def test_every_cell_has_node_energy_validated_and_priced_as_measured(node_env, tmp_path):
    out = tmp_path / "run"
    env = {**node_env, "FAKE_NVML_DEVICES": "base_w=250,update_ms=100"}
    p = bench("run", "--gpu", "0", "--node-power", "ipmi://", *SMALL, "--out", str(out),
              env=env)
    assert p.returncode == 0, p.stderr
    doc = json.loads((out / "result.json").read_text())
    assert any(s.get("scope") == "node" and s.get("method") == "power_integration"
               for s in doc["energy_sources"])
    ok = [c for c in doc["cells"] if c["status"] == "ok"]
    assert len(ok) == 2
    for c in ok:
        per = []
        for r in c["repeats"]:
            node = r["energy"]["node"]
            assert node["method"] == "power_integration" and node["reason"] is None
            # constant 500 W: the trapezoid of the BMC's samples, interpolated at both
            # edges, is exactly 500 W x the window
            assert node["energy_j"] == pytest.approx(NODE_W * r["duration_s"], rel=1e-9)
            per.append(r["output_tokens"] / (NODE_W * r["duration_s"]))
        assert c["figures"]["node_output_tokens_per_j"] == pytest.approx(
            sorted(per)[0] / 2 + sorted(per)[1] / 2, rel=1e-9)  # median of two
        assert c["figures"]["output_tokens_per_j"] > 0  # the GPU figures are there too
    v = bench("validate", str(out), env=env)
    assert v.returncode == 0, v.stdout
    # the node samples are in the trace, so validate recomputed the node readings
    import pyarrow.parquet as pq

    t = pq.read_table(out / "trace.parquet").to_pandas()
    assert (t["device_index"] == -1).sum() >= 3
    e = bench("econ", str(out), "--no-reference", "--format", "json", env=env)
    assert e.returncode == 0, e.stderr
    rows = json.loads(e.stdout)
    assert rows and all(r["meter_basis"] == "measured node" for r in rows)


def test_a_bmc_that_stops_answering_leaves_node_null_and_the_gpu_figures(node_env, tmp_path):
    out = tmp_path / "run"
    (tmp_path / "fail").write_text("")  # the BMC refuses from the start
    env = {**node_env, "FAKE_NVML_DEVICES": "base_w=250,update_ms=100"}
    p = bench("run", "--gpu", "0", "--node-power", "ipmi://", *SMALL, "--batch", "1",
              "--out", str(out), env=env)
    assert p.returncode == 0, p.stderr
    assert "node power:" in p.stderr and "null" in p.stderr
    doc = json.loads((out / "result.json").read_text())
    (c,) = doc["cells"]
    assert c["status"] == "ok" and c["figures"]["output_tokens_per_j"] > 0
    for r in c["repeats"]:
        assert r["energy"]["node"]["energy_j"] is None
        assert "ipmitool" in r["energy"]["node"]["reason"] or \
            "no power reading" in r["energy"]["node"]["reason"]
    assert c["figures"]["node_output_tokens_per_j"] is None
    assert bench("validate", str(out), env=env).returncode == 0


def test_node_power_with_two_devices_is_refused_in_one_line(node_env, tmp_path):
    env = {**node_env, "FAKE_NVML_DEVICES": "base_w=250;base_w=300"}
    p = bench("run", "--gpu", "all", "--node-power", "ipmi://", *SMALL, "--out",
              str(tmp_path / "run"), env=env)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "one device per run" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_redfish_bmc_over_verified_https(node_env, tmp_path):
    from .test_bmc import PASSWORD, USER, Profile, StandInBmc

    bmc_ = StandInBmc(tmp_path, Profile())  # a real HTTPS Redfish service on 127.0.0.1
    try:
        out = tmp_path / "run"
        env = {**node_env, "FAKE_NVML_DEVICES": "base_w=250,update_ms=100",
               "BMC_USERNAME": USER, "BMC_PASSWORD": PASSWORD}
        p = bench("run", "--gpu", "0", "--node-power", bmc_.url, "--bmc-ca-file",
                  str(bmc_.ca), *SMALL, "--batch", "1", "--out", str(out), env=env)
        assert p.returncode == 0, p.stderr
        doc = json.loads((out / "result.json").read_text())
        (c,) = doc["cells"]
        for r in c["repeats"]:
            node = r["energy"]["node"]
            assert node["energy_j"] is not None, node
            # the stand-in draws 300-600 W: the node's mean power lies in that range
            assert 300 * 0.99 <= node["energy_j"] / r["duration_s"] <= 600 * 1.01
        assert PASSWORD not in json.dumps(doc)  # the secret is never recorded
        assert bench("validate", str(out), env=env).returncode == 0
    finally:
        bmc_.stop()
