"""scripts/device_check.sh: valid bash, within its time budget by construction, and a dry run
on the CPU (the stand-in NVML) that goes through every step and writes the summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_check.sh"


def test_the_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_the_step_timeouts_fit_the_budget_by_construction():
    text = SCRIPT.read_text()
    steps = dict(kv.split(":") for kv in re.search(r'^STEPS="([^"]+)"', text, re.M)
                 .group(1).split())
    kill_s = int(re.search(r"^KILL_S=(\d+)", text, re.M).group(1))
    assert list(steps) == ["preflight", "probe", "measure", "eager", "compiled", "marks",
                           "summary"]
    # worst case: every step runs to its timeout and then its kill grace
    assert sum(int(t) + kill_s for t in steps.values()) < 540
    # every step named in the plan is run through `step`, so under its own timeout
    for name in steps:
        assert re.search(rf"^step {name} ", text, re.M), name


def test_the_script_never_changes_gpu_settings():
    text = SCRIPT.read_text()
    for setting in ("-pl ", "-lgc", "-lmc", "-ac ", "--power-limit", "-pm ", "-mig"):
        assert setting not in text.replace("--dry-run", "")


@pytest.mark.slow
def test_a_dry_run_goes_through_every_step(fake_nvml_dir, tmp_path):
    env = {**os.environ, "LD_LIBRARY_PATH": str(fake_nvml_dir),
           "FAKE_NVML_DEVICES": "base_w=200", "JOULEBENCH_LOCK_DIR": str(tmp_path / "locks"),
           "PYTHON": sys.executable}
    out = tmp_path / "check"
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], env=env,
                       capture_output=True, text=True, timeout=500)
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()[1:]]
    assert [row[0] for row in rows] == ["preflight", "probe", "measure", "eager", "compiled",
                                        "marks", "summary"]
    assert all(row[2] == "0" for row in rows), rows
    summary = (out / "summary.md").read_text()
    assert "compile smoke test ok" in summary and "Problems: none" in summary
    assert summary.count("| run-eager |") == 2 and summary.count("| run-compiled |") == 1
    assert "First-token mark" in summary


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA GPU")
def test_the_device_check_on_a_gpu(tmp_path):
    """On a lent GPU: the whole check, with no problem in its summary (graphs never
    recorded inside a window, the compiled run compiled, every cell ok)."""
    out = tmp_path / "check"
    r = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True,
                       timeout=560, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    assert "Problems: none" in (out / "summary.md").read_text()
