"""Human output: tables of cells on the terminal (SI in files; prefixes only here)."""

from __future__ import annotations

from rich.console import Console, JustifyMethod
from rich.table import Table


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"


# (header, alignment) of cells_table's columns, in order
_CELL_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("model", "left"), ("device", "left"), ("batch", "right"), ("in/out", "right"),
    ("status", "left"), ("out tok/s", "right"), ("energy J", "right"), ("out tok/J", "right"),
    ("interval (coverage)", "right"), ("power W", "right"), ("method", "left"), ("scope", "left"))


def cells_table(cells: list[dict], title: str | None = None) -> Table:
    """One row per cell: the figures the run reports, with method and scope beside them."""
    t = Table(title=title, header_style="bold")
    for col, justify in _CELL_COLUMNS:
        t.add_column(col, justify=justify)
    for c in cells:
        f = c.get("figures") or {}
        u = c.get("uncertainty") or {}
        ci = u.get("output_tokens_per_j_ci")
        level = u.get("ci_level")
        method = c.get("energy_method") or "-"
        if method == "estimate":
            method = "[yellow]estimate[/yellow]"
        t.add_row(
            c["model"], c["device"], str(c["batch_size"]), f"{c['input_len']}/{c['output_len']}",
            c["status"], _fmt(f.get("output_tokens_per_s")), _fmt(f.get("energy_j")),
            _fmt(f.get("output_tokens_per_j")),
            f"{_fmt(ci[0])}-{_fmt(ci[1])} ({level:.0%})" if ci and level else "-",
            _fmt(f.get("mean_power_w")), method, c.get("scope") or "-",
        )
    return t


def print_table(table: Table, file=None) -> None:
    """Print a rich table (plain text when not on a terminal)."""
    Console(file=file, width=140, highlight=False).print(table)


def measure_table(rep: dict) -> Table:
    """``bench measure``'s report: one row per GPU, then CPU and DRAM."""
    t = Table(title=f"{rep['duration_s']:.3f} s, exit code {rep['exit_code']}",
              header_style="bold")
    for col in ("device", "name", "energy J", "method", "mean W", "max W", "samples",
                "rate Hz", "note"):
        t.add_column(col)
    for d in rep["devices"]:
        t.add_row(f"gpu{d['index']}", d["name"], _fmt(d["energy_j"], 5), d["method"] or "-",
                  _fmt(d["mean_power_w"], 4), _fmt(d["max_power_w"], 4),
                  _fmt(d["samples"]), _fmt(d["sample_rate_hz"], 4), d["reason"] or "")
    for scope in ("cpu", "dram"):
        r = rep[scope]
        method = r["method"] or "not measured"
        if method == "estimate":
            method = "[yellow]estimate[/yellow]"
        t.add_row(scope, "", _fmt(r["energy_j"], 5), method, "-", "-", "-", "-",
                  r.get("reason") or r.get("note") or "")
    return t


def econ_table(df, scenario: str) -> Table:
    """``bench econ``'s rows: the measurement and what it is worth.

    Model and device names are shown whole: a long name folds onto more lines, never cut.
    """
    from rich import box

    t = Table(title=f"scenario {scenario}", header_style="bold", box=box.SIMPLE_HEAD,
              padding=(0, 1, 0, 0), pad_edge=False, show_edge=False)
    recs = df.to_dict("records")
    # as wide as the longest name up to a cap (the table fits 140 columns); longer names
    # fold onto more lines
    widths = {"device": min(14, max([len(str(r.get("device_name"))) for r in recs] + [6])),
              "model": min(30, max([len(str(r.get("model"))) for r in recs] + [5]))}
    for col in ("device", "GPUs", "model", "batch", "method", "tok/J", "price\nRMB/Mtok",
                "RMB/kWh", "x elec", "elec\nRMB/Mtok", "all-in\nRMB/Mtok", "margin\nRMB/kWh",
                "best"):
        if col in ("device", "model"):
            t.add_column(col, justify="left", overflow="fold", width=widths[col])
        else:
            t.add_column(col, justify="left" if col == "method" else "right", overflow="fold")
    for r in recs:
        method = r.get("energy_method")
        method = method if isinstance(method, str) and method else "-"  # NaN: not stated
        if r.get("estimate"):
            method = "[yellow]estimate[/yellow]"
        n = r.get("num_devices")
        n = 1 if n is None or n != n else n  # rows without the column ran on one device
        t.add_row(str(r.get("device_name")), _num(n), str(r.get("model")),
                  str(r.get("batch_size")), method, _num(r.get("tokens_per_j")),
                  _num(r.get("price_rmb_per_mtok")), _num(r.get("revenue_rmb_per_kwh")),
                  _num(r.get("multiple_over_elec")), _num(r.get("elec_cost_rmb_per_mtok")),
                  _num(r.get("allin_cost_rmb_per_mtok")), _num(r.get("margin_rmb_per_kwh")),
                  "*" if r.get("best_batch") else "")
    return t


def _num(x) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "-"
    return "-" if v != v else _fmt(v)


class RunProgress:
    """A progress bar per device (cells done, current cell and window, ETA) on stderr, plus
    a line per finished cell."""

    def __init__(self, todo: list) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("{task.fields[device]:<6}"), BarColumn(),
                                 MofNCompleteColumn(), TimeRemainingColumn(),
                                 TextColumn("{task.description}"),
                                 console=Console(stderr=True, highlight=False))
        self.tasks: dict[str, TaskID] = {}
        for c in todo:
            label = c.device.label
            if label not in self.tasks:
                n = sum(1 for x in todo if x.device.label == label)
                self.tasks[label] = self.progress.add_task(c.cell_id, total=n, device=label)

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def update(self, rec: dict) -> None:
        if rec.get("type") == "progress":
            task = self.tasks.get(rec["device"])
            if task is not None:
                self.progress.update(task, description=f"{rec['cell_id']} {rec['what']}")
            return
        if rec.get("type") != "cell":
            return
        f = rec.get("figures") or {}
        tpj = f.get("output_tokens_per_j")
        self.progress.console.print(
            f"  {rec['cell_id']}: {rec['status']}"
            + (f", {tpj:.4g} output tokens/J ({rec['energy_method']})" if tpj else "")
            + (" [contended]" if rec.get("contended") else ""))
        task = self.tasks.get(rec["device"])
        if task is not None:
            self.progress.update(task, advance=1, description=rec["cell_id"])
