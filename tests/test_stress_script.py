"""scripts/stress_suite.sh: runs pytest N times beside a CPU hog and always kills the hog."""

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "stress_suite.sh"


def stress(log_dir, *args, timeout=300, python=sys.executable):
    # its own log folder: a STRESS_LOG_DIR inherited from a stress run of the whole suite
    # would have these runs overwrite that run's own run-1.log and run-2.log
    env = {**os.environ, "PYTHON": str(python), "STRESS_LOG_DIR": str(log_dir)}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def hog_pids(out):
    return [int(p) for p in re.search(r"\(pids ([\d ]+)\)", out).group(1).split()]


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_counts_passes_and_kills_the_hog(tmp_path):
    p = stress(tmp_path, "1", "-q", "-p", "no:cacheprovider", "tests/test_devices.py")
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"logs in {tmp_path}" in p.stdout and (tmp_path / "run-1.log").is_file()
    lines = p.stdout.strip().splitlines()
    assert lines[-1] == "passed 1 of 1"
    assert lines[-2].startswith("run 1 of 1: passed")
    # one per core it may run on, whatever OMP_NUM_THREADS says (the suite sets it to 1,
    # and `nproc` would give that)
    assert len(hog_pids(p.stdout)) == len(os.sched_getaffinity(0))
    assert all(gone(pid) for pid in hog_pids(p.stdout))


def test_a_failing_run_makes_it_fail_and_still_kills_the_hog(tmp_path):
    p = stress(tmp_path, "2", "-q", "-p", "no:cacheprovider", "tests/no_such_test_file.py")
    assert p.returncode != 0
    assert p.stdout.strip().splitlines()[-1] == "passed 0 of 2"
    assert "run 2 of 2: FAILED" in p.stdout
    assert all(gone(pid) for pid in hog_pids(p.stdout))


def _recording_python(tmp_path, fail_on: str = ""):
    """A stand-in interpreter: runs Python for the hog (``-c``), and for anything else
    appends its arguments to calls.txt and prints a pytest-like closing line; it exits 1
    where its arguments contain ``fail_on``."""
    calls = tmp_path / "calls.txt"
    py = tmp_path / "bin" / "python"
    py.parent.mkdir()
    py.write_text(f"""#!/usr/bin/env bash
if [ "$1" = -c ]; then exec {sys.executable} "$@"; fi
echo "$*" >> {calls}
echo "===== 3 passed in 0.01s ($*) ====="
if [ -n "{fail_on}" ] && [[ "$*" == *"{fail_on}"* ]]; then exit 1; fi
""")
    py.chmod(0o755)
    return py, calls


def test_without_pytest_args_each_run_is_the_readmes_two_calls(tmp_path):
    py, calls = _recording_python(tmp_path)
    p = stress(tmp_path / "logs", "2", timeout=60, python=py)
    assert p.returncode == 0, p.stdout + p.stderr
    two = ["-m pytest -n 2 --dist loadfile --ignore=tests/perf", "-m pytest tests/perf"]
    assert calls.read_text().splitlines() == two * 2
    assert p.stdout.strip().splitlines()[-1] == "passed 2 of 2"
    # both calls' closing lines in the run's line
    assert "3 passed in 0.01s (-m pytest -n 2" in p.stdout
    assert "3 passed in 0.01s (-m pytest tests/perf)" in p.stdout


def test_a_failing_first_call_fails_the_run_and_skips_the_benchmarks(tmp_path):
    py, calls = _recording_python(tmp_path, fail_on="-n 2")
    p = stress(tmp_path / "logs", "1", timeout=60, python=py)
    assert p.returncode != 0
    assert calls.read_text().splitlines() == [
        "-m pytest -n 2 --dist loadfile --ignore=tests/perf"]
    assert "run 1 of 1: FAILED rc=1" in p.stdout
    assert p.stdout.strip().splitlines()[-1] == "passed 0 of 1"
    assert all(gone(pid) for pid in hog_pids(p.stdout))


def test_bad_count_is_a_usage_error(tmp_path):
    p = stress(tmp_path, "none")
    assert p.returncode == 2 and "usage" in p.stderr
