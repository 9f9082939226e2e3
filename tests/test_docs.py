"""The README stays true: every command documented, the test command is what CI runs."""

import re
from pathlib import Path

from bench.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices


def test_every_command_is_in_the_readme_with_an_example():
    for name in _commands():
        assert f"### `bench {name}" in README, name
        assert re.search(rf"^bench {name}\b", README, re.M), f"no example of bench {name}"


def test_every_run_option_is_in_the_readme():
    run = _commands()["run"]
    for action in run._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt != "--help":
                assert f"`{opt}`" in README, opt


def test_two_setup_commands_and_ci_runs_the_test_command():
    blocks = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    setup = [b for b in blocks if "pip install" in b]
    assert len(setup) == 2
    assert setup[0].rstrip().endswith("bench run")
    test_cmd = setup[1].split("pip install -e '.[test]' && ")[-1].strip()
    # the suite on two workers, then the benchmarks alone (they time nothing under xdist)
    assert test_cmd == ("python -m pytest -n 2 --dist loadfile --ignore=tests/perf"
                        " && python -m pytest tests/perf")
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(rf"^{re.escape(test_cmd)}$", ci, re.M)
    # the stress script's runs are that command, with its interpreter for `python`
    stress = (ROOT / "scripts" / "stress_suite.sh").read_text()
    assert test_cmd.replace("python -m", '"$py" -m') in stress


def test_every_module_has_a_docstring():
    import ast

    for p in [*ROOT.joinpath("bench").rglob("*.py"), *ROOT.joinpath("kernels").rglob("*.py")]:
        assert ast.get_docstring(ast.parse(p.read_text())), p


def test_table_and_econ_columns_are_documented():
    from bench.econ import OUTPUT_COLUMNS
    from bench.results.table import COLUMNS

    for name, _ in (*COLUMNS, *OUTPUT_COLUMNS):
        assert f"| `{name}` |" in README, name
