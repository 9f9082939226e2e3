"""--gpu parsing and selection over fake inventories."""

import pytest

from bench.devices import Device, Inventory, parse_gpu_spec, select
from bench.errors import BenchError

CPU = Device("cpu", None, "Test CPU")
GPUS = (Device("cuda", 0, "G", "GPU-a"), Device("cuda", 1, "G", "GPU-b"),
        Device("cuda", 2, "G", "GPU-c"))


def test_parse():
    assert parse_gpu_spec("all") == "all"
    assert parse_gpu_spec("cpu") == "none"
    assert parse_gpu_spec("0, 2") == [0, 2]
    for bad in ("x", "-1", "1,1", ","):
        with pytest.raises(BenchError):
            parse_gpu_spec(bad)


def test_select_with_gpus():
    inv = Inventory(GPUS, None, CPU)
    assert select("all", inv) == (list(GPUS), None)
    assert select("auto", inv) == (list(GPUS), None)
    assert select("2,0", inv)[0] == [GPUS[2], GPUS[0]]
    assert select("none", inv)[0] == [CPU]
    with pytest.raises(BenchError, match="no GPU 7"):
        select("7", inv)


def test_select_without_gpus():
    inv = Inventory((), "no NVIDIA driver", CPU)
    devs, notice = select("all", inv)
    assert devs == [CPU] and "running on the CPU" in notice and "no NVIDIA driver" in notice
    assert select("auto", inv) == ([CPU], None)
    with pytest.raises(BenchError, match="no CUDA GPU"):
        select("0", inv)
