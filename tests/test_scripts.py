"""The maintenance scripts run as the README says."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def _mutate():
    import importlib.util
    spec = importlib.util.spec_from_file_location("mutate", ROOT / "scripts" / "mutate.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutate", mod)  # its dataclass looks its module up there
    spec.loader.exec_module(sys.modules["mutate"])
    return sys.modules["mutate"]


_SRC = '''"""m."""


def f(a, b):
    x = a + b  # the sum
    y = a + b
    return x * y
'''


def test_mutation_equivalent_list_survives_moved_lines_not_changed_ones():
    mutate = _mutate()
    before = {m.what + " " + str(m.line): m for m in mutate.mutants_of("m.py", None, _SRC)}
    plus = before["+ -> - 5"]
    assert plus.text == "x = a + b" and plus.col == 8 and plus.occurrence == 1
    # the same text twice in one function: told apart by an occurrence counter
    assert before["+ -> - 6"].text == "y = a + b" and before["+ -> - 6"].key != plus.key
    listed = {mutate.parse_ident(plus.ident)}
    assert plus.ident == "m.py::f:5:8 + -> - | x = a + b"

    moved = _SRC.replace("def f", "\n\n\ndef f")  # three lines down: still the listed mutant
    m = [m for m in mutate.mutants_of("m.py", None, moved) if m.line == 8 and m.col == 8
         and m.what == "+ -> -"]
    assert len(m) == 1 and m[0].key in listed

    changed = _SRC.replace("x = a + b", "x = a + b + 0")  # the line's text changed: judge again
    assert all(m.key not in listed for m in mutate.mutants_of("m.py", None, changed))


def test_mutation_ids_count_repeated_lines_and_read_back(tmp_path):
    mutate = _mutate()
    src = '"""m."""\n\n\ndef g(a):\n    a = a - 1\n    a = a - 1\n    return a\n'
    ms = [m for m in mutate.mutants_of("m.py", None, src) if m.what == "- -> +"]
    assert [m.occurrence for m in ms] == [1, 2]
    assert ms[1].ident == "m.py::g:6:8 - -> + | a = a - 1 | occurrence 2"
    f = tmp_path / "eq.txt"
    f.write_text("# comment\n" + "\n".join(f"{m.ident}  # why {m.occurrence}" for m in ms) + "\n")
    eq = mutate.read_equivalent(f)
    assert {k: why for k, (_, why) in eq.items()} == {ms[0].key: "why 1", ms[1].key: "why 2"}
    f.write_text("m.py::g:6:8 - -> +  # an id of the old form, without the text\n")
    with pytest.raises(SystemExit, match="eq.txt:1"):
        mutate.read_equivalent(f)


def test_every_listed_equivalent_mutant_exists():
    """Each entry of scripts/mutation-equivalent.txt names a mutant of today's source."""
    mutate = _mutate()
    eq = mutate.read_equivalent(ROOT / "scripts" / "mutation-equivalent.txt")
    keys = set()
    for path in {k[0] for k in eq}:
        keys.update(m.key for m in mutate.mutants_of(path, None, (ROOT / path).read_text()))
    assert [ident for k, (ident, _) in eq.items() if k not in keys] == []
