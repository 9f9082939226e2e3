"""Installing joulebench must not change what transformers sees (bench.kernels, not kernels)."""

import subprocess
import sys

PROBE = ("import importlib.util, transformers.utils as u; "
         "print(importlib.util.find_spec('kernels') is None, u.is_kernels_available())")


def _probe(code, cwd):
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()


def test_kernels_is_not_a_top_level_package(tmp_path):
    found_none, _ = _probe(PROBE, tmp_path)
    assert found_none == "True"


def test_transformers_kernels_probe_unchanged(tmp_path):
    # Without joulebench on the path (isolated mode ignores site-packages' .pth and
    # editable finders only if we remove them; compare against a bare interpreter run
    # that hides bench by blocking its finder).
    hide = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
            "if 'editable' not in type(f).__module__ and 'bench' not in type(f).__module__]; ")
    _, with_bench = _probe("import bench.kernels; " + PROBE, tmp_path)
    _, without = _probe(hide + PROBE, tmp_path)
    assert with_bench == without


def test_bench_kernels_comes_from_kernels_folder():
    import bench.kernels

    assert bench.kernels.__file__.replace("\\", "/").endswith("kernels/__init__.py")
