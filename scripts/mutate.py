"""A small AST mutation tester: mutate figure-deriving code, run its tests, list survivors.

Each mutant changes one node of one module (+ <-> -, * <-> /, // -> /, < <-> <=,
> <-> >=, a number n -> n + 1, the first two positional arguments of a call swapped,
``return x`` -> ``return None``) and is run by forking a parent that has already imported
the third-party libraries: the child re-executes the mutated module source in the
module's own namespace (so ``module.function`` lookups see the mutant) and runs the
group's tests with pytest ``-x``. A failing run kills the mutant; a run past the timeout
counts as killed (an endless loop is a detected change). Run with NUMBA_DISABLE_JIT=1 so
a mutant in a kernel runs as plain Python at once.

Usage: mutate.py --group "MODULE[:func,func] ...|TEST ..." [--group ...]
       [--equivalent FILE] [--timeout-factor F] [--list] [--only FILE]

MODULE is a path from the repository root (kernels/x.py is bench.kernels.x). Survivors
listed in the equivalent file (one id a line, then `  # why`) are reported apart and
left out of the score.

A mutant's id reads ``path::func:line:col what | source text`` (``| occurrence N`` added
when the same text, column and mutation appear more than once in one function). The
line number is for people only: a listed id matches a mutant by path, function, the
stripped text of the mutated line (comments left out), column, mutation and occurrence,
so code that moves keeps its entries, and a line whose text changed must be judged again
(its entry is then reported as not matched).
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib
import io
import os
import re
import signal
import sys
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SWAP_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
              ast.FloorDiv: ast.Div}
SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
          ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


@dataclass(frozen=True)
class Mutant:
    path: str
    func: str
    line: int
    col: int
    what: str
    index: int  # the n-th mutation point of the module, in walk order
    text: str = ""  # the mutated line, stripped, comments left out
    occurrence: int = 1  # the n-th mutant with this key in its function

    @property
    def ident(self) -> str:
        extra = f" | occurrence {self.occurrence}" if self.occurrence > 1 else ""
        return f"{self.path}::{self.func}:{self.line}:{self.col} {self.what} | {self.text}{extra}"

    @property
    def key(self) -> tuple[str, str, str, int, str, int]:
        """What identifies the mutant in the equivalent list: no line number."""
        return (self.path, self.func, self.text, self.col, self.what, self.occurrence)


_IDENT = re.compile(r"^(?P<path>\S+?)::(?P<func>[^:\s]+):(?P<line>\d+):(?P<col>\d+) "
                    r"(?P<what>.+?) \| (?P<text>.*?)(?: \| occurrence (?P<occ>\d+))?$")


def parse_ident(ident: str) -> tuple[str, str, str, int, str, int]:
    """The key (see :attr:`Mutant.key`) of an id as printed; ValueError if malformed."""
    m = _IDENT.match(ident.strip())
    if m is None:
        raise ValueError(f"not a mutant id (path::func:line:col what | text): {ident!r}")
    return (m["path"], m["func"], m["text"], int(m["col"]), m["what"], int(m["occ"] or 1))


def line_texts(source: str) -> list[str]:
    """Each line of the source, stripped, with its comment left out (index 0 is line 1)."""
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col]
    return [line.strip() for line in lines]


def _points(tree: ast.AST):
    """Yield (node, function name, description, apply) for every mutation point, in order.

    ``apply(node)`` mutates the node in place. Docstrings, decorators, annotations,
    f-strings and raise statements (error messages) are skipped.
    """

    def walk(node, func):
        if isinstance(node, (ast.JoinedStr, ast.Raise)):
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(
                    getattr(body[0], "value", None), ast.Constant):
                body = body[1:]  # the docstring
            for child in body:
                yield from walk(child, node.name)
            return
        if isinstance(node, ast.BinOp) and type(node.op) in SWAP_BINOP:
            new = SWAP_BINOP[type(node.op)]
            yield (node, func, f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}",
                   lambda n, new=new: setattr(n, "op", new()))
        if isinstance(node, ast.AugAssign) and type(node.op) in SWAP_BINOP:
            new = SWAP_BINOP[type(node.op)]
            yield (node, func, f"{SYMBOL[type(node.op)]}= -> {SYMBOL[new]}=",
                   lambda n, new=new: setattr(n, "op", new()))
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in SWAP_CMP:
                    new = SWAP_CMP[type(op)]

                    def apply(n, i=i, new=new):
                        n.ops[i] = new()
                    which = f" (comparison {i + 1})" if len(node.ops) > 1 else ""
                    yield node, func, f"{SYMBOL[type(op)]} -> {SYMBOL[new]}{which}", apply
        if (isinstance(node, ast.Constant) and type(node.value) in (int, float)):
            yield (node, func, f"{node.value!r} -> {node.value + 1!r}",
                   lambda n: setattr(n, "value", n.value + 1))
        if isinstance(node, ast.Call) and len(node.args) >= 2 and not any(
                isinstance(a, ast.Starred) for a in node.args[:2]):
            def swap(n):
                n.args[0], n.args[1] = n.args[1], n.args[0]
            yield node, func, f"swap args of {ast.unparse(node.func)}()", swap
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            yield node, func, "return -> return None", lambda n: setattr(n, "value", None)
        for name, value in ast.iter_fields(node):
            if name in ("decorator_list", "annotation", "returns"):
                continue
            for child in value if isinstance(value, list) else [value]:
                if isinstance(child, ast.AST):
                    yield from walk(child, func)

    yield from walk(tree, "<module>")


def mutants_of(path: str, funcs: set[str] | None, source: str | None = None) -> list[Mutant]:
    """The module's mutants (of the listed functions only, if any); source: the file's."""
    if source is None:
        source = (ROOT / path).read_text()
    texts = line_texts(source)
    seen: dict[tuple, int] = {}
    out = []
    for i, (node, func, what, _) in enumerate(_points(ast.parse(source))):
        text = texts[node.lineno - 1]
        n = seen[func, text, node.col_offset, what] = seen.get(
            (func, text, node.col_offset, what), 0) + 1
        if funcs is None or func in funcs:
            out.append(Mutant(path, func, node.lineno, node.col_offset, what, i, text, n))
    return out


def mutated_source(path: str, index: int) -> str:
    tree = ast.parse((ROOT / path).read_text())
    for i, (node, _, _, apply) in enumerate(_points(tree)):
        if i == index:
            apply(node)
            break
    return ast.unparse(ast.fix_missing_locations(copy.deepcopy(tree)))


def module_name(path: str) -> str:
    p = Path(path).with_suffix("")
    parts = list(p.parts)
    if parts[0] == "kernels":
        parts = ["bench", "kernels"] + parts[1:]
    return ".".join(parts)


def _child(path: str, source: str | None, tests: list[str]) -> None:
    """In a forked child: install the mutant (if any), run the tests, exit with their code."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        import pytest
        from hypothesis import settings

        settings.register_profile("mutation", database=None, derandomize=True)
        settings.load_profile("mutation")
        if source is not None:
            mod = importlib.import_module(module_name(path))
            exec(compile(source, str(ROOT / path), "exec"), mod.__dict__)
        rc = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          *tests])
        os._exit(int(rc))
    except BaseException:
        os._exit(99)


def run(path: str, source: str | None, tests: list[str], timeout_s: float) -> str:
    """'survived', 'killed' or 'timeout' (killed by the clock)."""
    pid = os.fork()
    if pid == 0:
        _child(path, source, tests)
    end = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return "survived" if os.waitstatus_to_exitcode(status) == 0 else "killed"
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.01)


def read_equivalent(path: Path | None) -> dict[tuple, tuple[str, str]]:
    """Key -> (id as listed, why) for each entry of the file (one id a line, "  # why")."""
    out = {}
    if path and path.exists():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip() and not line.startswith("#"):
                ident, _, why = line.rpartition("  # ") if "  # " in line else (line, "", "")
                try:
                    out[parse_ident(ident)] = (ident.strip(), why.strip())
                except ValueError as e:
                    raise SystemExit(f"{path}:{n}: {e}") from None
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--group", action="append", required=True,
                    help='"MODULE[:func,...] ...|TEST ..."')
    ap.add_argument("--equivalent", type=Path)
    ap.add_argument("--timeout-factor", type=float, default=4.0)
    ap.add_argument("--list", action="store_true", help="list the mutants and stop")
    ap.add_argument("--only", type=Path,
                    help="run only the mutants whose ids this file lists (one a line)")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    for lib in ("numpy", "numba", "pytest", "hypothesis", "pandas"):
        importlib.import_module(lib)  # once, in the parent: children start warm
    equivalent = read_equivalent(args.equivalent)
    only = set(read_equivalent(args.only)) if args.only else None
    total = killed = 0
    survivors, equiv_seen = [], []
    listed: set[tuple] = set()  # the keys of every mutant of the modules run
    t_start = time.monotonic()
    for group in args.group:
        mods, _, tests = group.partition("|")
        tests = tests.split()
        t0 = time.monotonic()
        if run("", None, tests, 600) != "survived":
            print(f"the unmutated tests fail: {' '.join(tests)}", file=sys.stderr)
            return 2
        timeout_s = max(10.0, args.timeout_factor * (time.monotonic() - t0))
        for spec in mods.split():
            path, _, funcs = spec.partition(":")
            ms = mutants_of(path, set(funcs.split(",")) if funcs else None)
            if only is not None:
                ms = [m for m in ms if m.key in only]
            listed.update(m.key for m in mutants_of(path, None))  # the whole module's
            print(f"{path}{':' + funcs if funcs else ''}: {len(ms)} mutants, tests "
                  f"{' '.join(tests)} (timeout {timeout_s:.0f} s)", flush=True)
            for m in ms:
                if args.list:
                    print("  ", m.ident)
                    continue
                outcome = run(path, mutated_source(path, m.index), tests, timeout_s)
                if outcome == "survived" and m.key in equivalent:
                    equiv_seen.append(m)
                    continue
                total += 1
                if outcome == "survived":
                    survivors.append(m)
                    print(f"  SURVIVED {m.ident}", flush=True)
                else:
                    killed += 1
    if args.list:
        return 0
    score = 100.0 * killed / total if total else 100.0
    print(f"\nmutation score {score:.1f}%: {killed} killed of {total} "
          f"({len(equiv_seen)} equivalent left out) in {time.monotonic() - t_start:.0f} s")
    for m in survivors:
        print(f"survived: {m.ident}")
    for m in equiv_seen:
        print(f"equivalent: {m.ident}  # {equivalent[m.key][1]}")
    # entries for the modules run that name no mutant: their line's text changed (judge
    # the mutant again) or it is gone; shown, not counted
    paths = {k[0] for k in listed}
    for key, (ident, _) in equivalent.items():
        if key[0] in paths and key not in listed and only is None:
            print(f"not matched (line changed or gone): {ident}")
    return 0 if not survivors else 1


if __name__ == "__main__":
    sys.exit(main())
