"""The package's import graph: no circle, and nothing imports back up the stack.

Every import counts, also those inside functions (a lazy import is still a dependency).
"""

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"

# What the derivation and result layers must never import: the measuring code and the CLI.
MEASURING = {"bench.cells", "bench.worker", "bench.runner", "bench.meter", "bench.sampler",
             "bench.measure", "bench.probe", "bench.cli", "bench.rundir", "bench.workload"}


def module_name(p: Path) -> str:
    parts = p.relative_to(BENCH.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in BENCH.rglob("*.py")}
    graph = {}
    for name, p in mods.items():
        pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                    mod = ".".join([*base, mod] if mod else base)
                for a in node.names:
                    full = f"{mod}.{a.name}"
                    deps.add(full if full in mods else mod)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    g = import_graph()
    # known edges, so a broken parser cannot pass the tests below by seeing nothing
    assert "bench.results.figures" in g["bench.worker"]
    assert "bench.sweep" in g["bench.runner"]
    assert "bench.results.load" in g["bench.results.validate"]


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_results_and_derivation_never_import_the_measuring_code():
    g = import_graph()
    for name, deps in g.items():
        if name.startswith(("bench.results", "bench.econ", "bench.report", "bench.sweep",
                            "bench.roofline", "bench.models")):
            assert not deps & MEASURING, (name, deps & MEASURING)


def test_only_the_cli_imports_the_cli():
    g = import_graph()
    assert [n for n, deps in g.items() if "bench.cli" in deps] == ["bench.__main__"]


def test_sweep_is_a_leaf():
    assert import_graph()["bench.sweep"] <= {"bench.devices", "bench.errors", "bench.models"}
