"""Reports people look at: PNG plots and one self-contained HTML page (images inline).

matplotlib with the Agg backend; nothing is fetched from the network. Estimated energy is
marked on every plot (dashed lines, hatched bars, "estimate" in the legend).
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

PLOTS = ("tokens_per_j_vs_batch", "power_timeline", "pareto", "rmb_per_kwh", "roofline")
DPI = 100
SIZE_IN = (8.0, 5.0)  # 800 x 500 pixels


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _norm(model: str) -> str:
    m = str(model).lower().split("/")[-1]
    return re.sub(r"-instruct$", "", m)


def _label(device, model, estimate: bool) -> str:
    return f"{device} {model}" + (" (estimate)" if estimate else "")


def plot_tokens_per_j(df, out: Path) -> Path:
    """Output tokens/J against batch size per model: a line per device, 95% bands, and
    published points (imported rows) where the model matches."""
    plt = _plt()
    ours = df[df["source"] == "joulebench"]
    ext = df[df["source"] != "joulebench"]
    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    for (device, model), g in ours.groupby(["device_name", "model"], sort=True):
        g = g[g["status"] == "ok"].sort_values("batch_size")
        x = g["batch_size"].astype(float)
        y = g["output_tokens_per_j"].astype(float)
        est = bool((g["energy_method"] == "estimate").any())
        line, = ax.plot(x, y, "o--" if est else "o-", label=_label(device, model, est))
        lo = g["output_tokens_per_j_ci95_low"].astype(float)
        hi = g["output_tokens_per_j_ci95_high"].astype(float)
        if lo.notna().any():
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
        for _, r in ext.iterrows():
            if _norm(model) and _norm(model) in _norm(r["model"]):
                ax.plot(float(r["batch_size"]), float(r["output_tokens_per_j"]), "x",
                        color="black")
    if len(ext):
        shown = ext[[any(_norm(m) in _norm(r) for m in ours["model"].unique())
                     for r in ext["model"]]]
        for (dev, model), g in shown.groupby(["device_name", "model"]):
            ax.plot(g["batch_size"].astype(float), g["output_tokens_per_j"].astype(float),
                    "x", label=f"published: {dev} {model} ({g['source'].iloc[0]})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("output tokens per joule")
    ax.set_title("Tokens per joule against batch size (bands: 95% interval over repeats)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "tokens_per_j_vs_batch.png")


def plot_pareto(df, out: Path) -> Path:
    """Tokens/J against tokens/s per user (output tokens/s / batch), with the Pareto front."""
    plt = _plt()
    ok = df[(df["status"] == "ok") & df["output_tokens_per_j"].notna()].copy()
    ok["per_user"] = ok["output_tokens_per_s"].astype(float) / ok["batch_size"].astype(float)
    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    for (src, device, model), g in ok.groupby(["source", "device_name", "model"]):
        est = bool((g["energy_method"] == "estimate").any())
        ax.scatter(g["per_user"], g["output_tokens_per_j"].astype(float),
                   marker="s" if est else "o", label=_label(device, model, est)
                   + ("" if src == "joulebench" else f" [{src}]"))
    pts = sorted(zip(ok["per_user"], ok["output_tokens_per_j"].astype(float), strict=True),
                 key=lambda p: -p[0])
    front, best = [], -math.inf
    for x, y in pts:  # walking from fast to slow, keep points that beat every faster one
        if y > best:
            front.append((x, y))
            best = y
    if front:
        ax.plot([p[0] for p in front], [p[1] for p in front], "k-", lw=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("output tokens per second per user")
    ax.set_ylabel("output tokens per joule")
    ax.set_title("Energy efficiency against speed per user")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out / "pareto.png")


def plot_rmb_per_kwh(df, out: Path, scenario: str) -> Path:
    """Revenue in RMB per kWh at the best batch per device and model, with the electricity
    price as a line."""
    from bench import econ

    plt = _plt()
    v = econ.value_per_kwh(df, scenario)
    best = v[v["best_batch"]]
    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    labels = [f"{r.device_name}\n{str(r.model).split('/')[-1]}\nb{r.batch_size}"
              for r in best.itertuples()]
    vals = [float(x) for x in best["revenue_rmb_per_kwh"]]
    bars = ax.bar(range(len(vals)), vals)
    for b, est in zip(bars, best["estimate"], strict=True):
        if est:
            b.set_hatch("//")
            b.set_label("estimate")
    elec = float(best["elec_rmb_per_kwh"].iloc[0]) if len(best) else econ.load(
        scenario).value("elec_rmb_per_kwh")
    ax.axhline(elec, color="red", ls="--", label=f"electricity {elec:.3g} RMB/kWh")
    ax.set_xticks(range(len(vals)), labels, fontsize=6)
    ax.set_ylabel("RMB per kWh sold as tokens (at the meter)")
    ax.set_title(f"What a kWh is worth as tokens ({scenario})")
    handles, names = ax.get_legend_handles_labels()
    keep = dict(zip(names, handles, strict=True))
    ax.legend(keep.values(), keep.keys(), fontsize=7)
    return _save(fig, out / "rmb_per_kwh.png")


def plot_roofline(docs: list[dict], out: Path) -> Path:
    """Fraction of the energy roofline each cell reached, by batch, a line per device/model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    series: dict = {}
    for d in docs:
        for c in d.get("cells", []):
            rf = c.get("roofline") or {}
            if c.get("status") == "ok" and rf.get("fraction") is not None:
                key = (c["device_name"], c["model"], c.get("energy_method") == "estimate")
                series.setdefault(key, []).append((c["batch_size"], rf["fraction"]))
    for (device, model, est), pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o--" if est else "o-",
                label=_label(device, model, est))
    if not series:
        ax.text(0.5, 0.5, "no cell on a device of the table", ha="center",
                transform=ax.transAxes)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("fraction of the energy roofline at TDP")
    ax.set_title("How close each cell came to its device's energy roofline")
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    return _save(fig, out / "roofline.png")


def plot_power_timeline(docs: list[dict], run_dirs: list[Path], out: Path) -> Path:
    """One GPU cell's sampled power over its first window, with call starts and
    first-token marks."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    shown = False
    for d, rd in zip(docs, run_dirs, strict=True):
        tr = d.get("trace") or {}
        gpu_cells = [c for c in d.get("cells", []) if c.get("scope") == "gpu"
                     and c.get("status") == "ok"]
        if not tr.get("file") or not gpu_cells:
            continue
        import pyarrow.parquet as pq

        from bench.results.validate import _safe_member

        t = pq.read_table(_safe_member(Path(rd), tr["file"])).to_pandas()
        c = max(gpu_cells, key=lambda x: x["batch_size"])
        r = c["repeats"][0]
        idx = int(c["device"][3:])
        s = t[(t["device_index"] == idx) & (t["t_ns"] >= r["t0_ns"]) &
              (t["t_ns"] <= r["t1_ns"]) & (t["power_status"] == 0)]
        ax.plot((s["t_ns"] - r["t0_ns"]) * 1e-9, s["power_w"], lw=0.8,
                label=f"{c['device_name']} {c['model']} b{c['batch_size']}")
        for i, (start, first, _end) in enumerate(r.get("calls_ns", [])):
            ax.axvline((start - r["t0_ns"]) * 1e-9, color="green", lw=0.5,
                       label="call start" if i == 0 else None)
            ax.axvline((first - r["t0_ns"]) * 1e-9, color="orange", lw=0.5, ls="--",
                       label="first token" if i == 0 else None)
        shown = True
        break
    if not shown:
        ax.text(0.5, 0.5, "no power trace: only sampled GPUs have one\n"
                "(CPU energy is an estimate read at window edges)", ha="center",
                va="center", transform=ax.transAxes)
    ax.set_xlabel("seconds into the window")
    ax.set_ylabel("power (W)")
    ax.set_title("Power timeline of one cell, with phase marks")
    if shown:
        ax.legend(fontsize=7)
    return _save(fig, out / "power_timeline.png")


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)
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
    from bench.errors import BenchError
    from bench.results.table import _result_files, load_table
    from bench.results.validate import Invalid, load_document

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [f for p in paths for f in _result_files(Path(p))]
    if not files:
        raise BenchError("no result documents to report on")
    docs, dirs = [], []
    for f in files:
        try:
            doc, rd = load_document(f)
        except Invalid as exc:
            raise BenchError(str(exc)) from None
        docs.append(doc)
        dirs.append(rd)
    df = load_table([*files, *extra_tables])
    pngs = [plot_tokens_per_j(df, out), plot_power_timeline(docs, dirs, out),
            plot_pareto(df, out), plot_rmb_per_kwh(df, out, scenario), plot_roofline(docs, out)]
    est = bool((df["energy_method"] == "estimate").any())
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             "<title>joulebench report</title><style>body{font-family:sans-serif;"
             "max-width:900px;margin:2em auto}img{max-width:100%}table{border-collapse:"
             "collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}"
             ".est{color:#a60}</style></head><body>",
             "<h1>joulebench report</h1>",
             f"<p>{len(docs)} run(s): " + ", ".join(html.escape(str(d.get('run_id')))
                                                   for d in docs) + "</p>"]
    if est:
        parts.append("<p class='est'><b>Estimated energy</b>: rows marked estimate are "
                     "not measurements (no readable sensor); they are dashed or hatched "
                     "on every plot.</p>")
    for p in pngs:
        data = base64.b64encode(p.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(p.stem.replace('_', ' '))}</h2>"
                     f"<img alt='{p.stem}' src='data:image/png;base64,{data}'>")
    cols = ["source", "device_name", "model", "batch_size", "energy_method",
            "output_tokens_per_j", "output_tokens_per_s", "mean_power_w"]
    parts.append("<h2>cells</h2><table><tr>" + "".join(f"<th>{c}</th>" for c in cols)
                 + "</tr>")
    for r in df[cols].itertuples(index=False):
        cls = " class='est'" if r.energy_method == "estimate" else ""
        cells = "".join(f"<td>{html.escape(f'{v:.4g}' if isinstance(v, float) else str(v))}"
                        "</td>" for v in r)
        parts.append(f"<tr{cls}>{cells}</tr>")
    parts.append("</table></body></html>")
    page = out / "report.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page
