"""Reports people read: one self-contained HTML page per set of runs, and a leaderboard site.

matplotlib with the Agg backend; nothing is fetched from the network. Estimated energy is
marked on every plot (dashed lines, hatched bars, "estimate" in the legend).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.errors import BenchError
from bench.report import page as P
from bench.report import plots

PLOTS = ("tokens_per_j_vs_batch", "power_timeline", "pareto", "rmb_per_kwh", "roofline")
__all__ = ["PLOTS", "check_out_dir", "load_runs", "make_report", "render_report"]


def check_out_dir(out: Path | str) -> Path:
    """Make ``out`` (a folder) and check it can be written, before any work starts.

    Raises:
        BenchError: it is a file, or cannot be created or written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BenchError(f"{out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BenchError(f"cannot write to {out}: {exc.strerror or exc}") from None
    return out


def load_runs(paths) -> tuple[list[Path], list[dict], list[Path]]:
    """(result files, documents, run dirs) for files, run dirs or folders, via the safe
    loader.

    Raises:
        BenchError: nothing found, or a document cannot be loaded.
    """
    from bench.results.load import Invalid, load_document
    from bench.results.table import result_files

    files = [f for p in paths for f in result_files(Path(p))]
    if not files:
        raise BenchError("no result documents to report on")
    docs, dirs = [], []
    for f in files:
        try:
            doc, rd = load_document(f)
        except Invalid as exc:
            raise BenchError(str(exc)) from None
        except OSError as exc:
            raise BenchError(f"{f}: cannot read ({exc.strerror or exc})") from None
        docs.append(doc)
        dirs.append(rd)
    return files, docs, dirs


def render_report(files, docs, dirs, out: Path, scenario: str, extra_tables=(),
                  title: str = "joulebench report", back_link: str | None = None) -> Path:
    """Draw the plots and write out/report.html for loaded documents; returns its path."""
    from bench.results.table import load_table

    for t in extra_tables:
        if not Path(t).is_file():
            raise BenchError(f"{t}: no such table file")
    df = load_table([*files, *extra_tables])
    figs = [plots.plot_tokens_per_j(df, out), plots.plot_power_timeline(docs, dirs, out),
            plots.plot_pareto(df, out), plots.plot_rmb_per_kwh(df, out, scenario),
            plots.plot_roofline(df, out)]
    pl = plots.plot_power_limit(df, out)  # issue 15: only for runs with several limits
    if pl is not None:
        figs.append(pl)
    est = bool((df[df["source"] == "joulebench"]["energy_method"] == "estimate").any())
    body = []
    if back_link:
        body.append(f"<p><a href='{P.esc(back_link)}'>← all submissions</a></p>")
    body += ["<h2>What was measured</h2>", P.header(docs)]
    if est:
        body.append("<p class='est'><b>Estimated energy</b>: rows marked estimate are "
                    "not measurements (no readable sensor); they are dashed or hatched "
                    "on every plot.</p>")
    body += ["<h2>Summary: the best tokens per joule of each GPU and model</h2>",
             P.summary_table(P.summary_rows(df, scenario), scenario)]
    body += [P.plot_section(f) for f in figs]
    body += ["<h2 id='methods'>Methods and caveats</h2>", P.methods(docs),
             "<h2 id='cells'>Every cell</h2>",
             "<p class='how'>One row per measured cell (and published rows, marked); click a "
             "header to sort. Tokens/J is the median over repeats; the interval columns are "
             "the bootstrap interval of the median (see Methods for its real coverage).</p>",
             P.cells_table(df)]
    runs = ", ".join(str(d.get("run_id")) for d in docs)
    html = P.page(title, body, sub=P.esc(f"{len(docs)} run(s): {runs}"))
    path = out / "report.html"
    tmp = out / ".report.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path


def make_report(paths, out_dir: Path | str, scenario: str = "china-grid-reference",
                extra_tables=()) -> Path:
    """Write the PNGs and report.html for result documents (files, run dirs, folders).

    Args:
        extra_tables: table files (.csv/.parquet, e.g. ``bench import`` output) whose rows
            are drawn as published reference points.

    Returns:
        The path of report.html.
    """
    from bench import econ

    out = check_out_dir(out_dir)
    econ.load(scenario)  # a bad scenario name stops here, before any plot
    files, docs, dirs = load_runs(paths)
    try:
        return render_report(files, docs, dirs, out, scenario, extra_tables)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # the documents are read, not validated: a malformed one ends here, in one line
        raise BenchError(f"cannot report on these documents ({exc.__class__.__name__}: "
                         f"{str(exc)[:120]}); bench validate says which rule they fail") \
            from None
