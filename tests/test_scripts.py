"""The maintenance scripts run as the README says."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_make_table_script(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    (repo / "results").mkdir()
    shutil.copy(ROOT / "scripts" / "make_table.sh", repo / "scripts")
    # the interpreter's folder first on PATH, as in an activated venv: the script runs `bench`
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run(["bash", str(repo / "scripts" / "make_table.sh")], capture_output=True,
                       text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    header = (repo / "results" / "table.csv").read_text().splitlines()[0]
    assert header.startswith("table_schema_version,source,run_id")


def test_device_check_script_is_valid_bash():
    p = subprocess.run(["bash", "-n", str(ROOT / "scripts" / "device_check.sh")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
