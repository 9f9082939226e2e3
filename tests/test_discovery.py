"""Discovery over the stand-in NVML: a GPU that cannot be measured is skipped, not fatal."""

from __future__ import annotations

import pytest

from bench.devices import Device, Inventory, discover, select, specs
from bench.errors import BenchError


def test_a_gpu_whose_handle_fails_is_skipped_and_the_others_kept(fake_nvml):
    fake_nvml("base_w=100;handle_fails=1;base_w=300")
    inv = discover()
    assert [g.index for g in inv.gpus] == [0, 2]
    (line,) = inv.skipped
    assert line.startswith("GPU 1: ") and "\n" not in line
    devs, notice = select("auto", inv)
    assert [d.index for d in devs] == [0, 2] and "GPU 1" in notice


def test_a_mig_gpu_is_skipped_with_the_reason(fake_nvml):
    fake_nvml("mig=1;base_w=200")
    inv = discover()
    assert [g.index for g in inv.gpus] == [1]
    assert inv.skipped[0].startswith("GPU 0: MIG mode is on")
    with pytest.raises(BenchError, match="cannot measure GPU 0: MIG"):
        select("0", inv)


def test_auto_never_falls_back_to_the_cpu_while_gpus_exist(fake_nvml):
    fake_nvml("mig=1;handle_fails=1")
    inv = discover()
    assert inv.gpus == () and len(inv.skipped) == 2
    for spec in ("auto", "all"):
        with pytest.raises(BenchError, match="no GPU can be measured.*--gpu none"):
            select(spec, inv)
    assert select("none", inv)[0] == [inv.cpu]


def test_no_gpu_at_all_still_runs_on_the_cpu():
    cpu = Device("cpu", None, "CPU")
    assert select("auto", Inventory((), "no NVIDIA driver", cpu)) == ([cpu], None)


def test_device_specs_match_exact_names_only():
    assert specs.lookup("NVIDIA H100 80GB HBM3").key == "H100"  # the SXM5 board
    assert specs.lookup("NVIDIA H200").key == "H200"
    # H100 PCIe and NVL have other figures than SXM; GH200 is not an H200
    assert specs.lookup("NVIDIA H100 PCIe").key == "H100 PCIe"
    assert specs.lookup("NVIDIA H100 NVL").key == "H100 NVL"
    for other in ("NVIDIA GH200 480GB", "NVIDIA H200 NVL", "Fake GPU 0", "NVIDIA H100X"):
        assert specs.lookup(other) is None


def test_the_roofline_uses_the_enforced_power_limit():
    from bench import models, roofline

    spec = models.get("tiny-llama")
    at_limit = Device("cuda", 0, "NVIDIA H100 80GB HBM3", "GPU-x", {"power_limit_w": 500.0})
    at_tdp = Device("cuda", 0, "NVIDIA H100 80GB HBM3", "GPU-x")
    a = roofline.cell_roofline(at_limit, spec, "bf16", 8, 32, 32, 1.0)
    b = roofline.cell_roofline(at_tdp, spec, "bf16", 8, 32, 32, 1.0)
    assert a["tdp_w"] == 500.0 and b["tdp_w"] == 700
    # same minimum time, so the ceiling scales with 700 / 500
    assert a["ceiling_output_tokens_per_j"] == pytest.approx(
        b["ceiling_output_tokens_per_j"] * 700 / 500)


def test_list_devices_shows_the_skipped_gpus_with_their_reason(fake_nvml, capsys):
    import json

    from bench.cli import main

    fake_nvml("base_w=100;handle_fails=1;mig=1;base_w=300")
    assert main(["list", "devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[1] for ln in lines if ln.startswith("device ")] == \
        ["gpu0", "gpu3", "cpu"]
    skipped = [ln for ln in lines if ln.startswith("skipped ")]
    assert len(skipped) == 2
    # once "GPU 1: ", then NVML's reason (not "GPU 1: GPU 1: ...")
    assert skipped[0].startswith("skipped GPU 1: ") and skipped[0].count("GPU 1") == 1
    assert skipped[1].startswith("skipped GPU 2: MIG mode is on")
    assert main(["list", "devices", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [d["index"] for d in out["devices"]] == [0, 3, None]
    assert [s.split(":")[0] for s in out["skipped"]] == ["GPU 1", "GPU 2"]
    assert out["gpu_reason"] is None


def test_list_devices_when_every_gpu_is_skipped(fake_nvml, capsys):
    from bench.cli import main

    fake_nvml("mig=1")
    assert main(["list", "devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("skipped GPU 0: MIG mode is on")
    assert lines[-1] == "(no GPU: no GPU can be measured)"
