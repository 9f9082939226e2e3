"""The report's plots as PNGs (matplotlib, Agg): one line per GPU, estimates dashed or hatched.

Each function returns a :class:`Plot`: the file, a human title, one sentence on how to read
it, and the names of the lines drawn (the page lists them under the image).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

DPI = 100
SIZE_IN = (8.0, 5.0)  # 800 x 500 pixels
# tab10: distinct colours, one per line (GPU); the order is fixed so tests can find them
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P")
REFERENCE_COLOUR = "#444444"


@dataclass
class Plot:
    """One plot of a page: its PNG, what it shows, how to read it, and its lines."""

    name: str
    path: Path
    title: str
    how_to_read: str
    series: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def norm_model(model: str) -> str:
    """A model name without organisation and '-Instruct', lower case (to match imports)."""
    m = str(model).lower().split("/")[-1]
    return re.sub(r"-instruct$", "", m)


def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def series_label(row, multi_run: bool) -> str:
    """The line of a joulebench row: its GPU (index and name), model and, if several, run."""
    dev = str(row["device"]) if row["device"] == row["device"] else ""
    name = str(row["device_name"])
    label = f"{dev} {name}" if dev and dev != "cpu" else name
    label += f" · {row['model']}"
    limit = _num(row.get("power_limit_w"))  # issue 15: a line per power limit
    if limit is not None:
        label += f" · {limit:g} W"
    if multi_run:
        label += f" · run {str(row['run_id'])[:15]}"
    return label


def _ours(df):
    ok = df[(df["source"] == "joulebench") & (df["status"] == "ok")].copy()
    ok = ok[ok["output_tokens_per_j"].notna()]
    multi = ok["run_id"].nunique() > 1
    ok["series"] = [series_label(r, multi) for _, r in ok.iterrows()]
    return ok


def _published(df, models) -> pd.DataFrame:
    ext = df[(df["source"] != "joulebench") & df["output_tokens_per_j"].notna()]
    wanted = {norm_model(m) for m in models}
    keep = [any(w and w in norm_model(m) for w in wanted) for m in ext["model"]]
    return ext[keep] if len(ext) else ext


def _style(i: int, est: bool) -> dict:
    return {"color": COLOURS[i % len(COLOURS)], "linestyle": "--" if est else "-",
            "marker": MARKERS[(i // len(COLOURS)) % len(MARKERS)]}


MAX_GPU_LINES = 4  # more GPUs of one name than this: a median line and a band, not N lines
FAMILY = ["device_name", "model", "input_len", "output_len", "run_id"]


def draw_gpu_lines(ax, ours, ycol: str, lo_col: str | None = None,
                   hi_col: str | None = None) -> list[str]:
    """Draw ``ycol`` against batch size: a line per GPU (band: lo..hi where given), or,
    for more than MAX_GPU_LINES GPUs of one name, model and lengths, their median with a
    band from the lowest to the highest GPU. Returns the legend names in order."""
    names: list[str] = []
    i = 0
    if not len(ours):
        return names
    for _, fam in ours.groupby(FAMILY, sort=True, dropna=False):
        est = bool((fam["energy_method"] == "estimate").any())
        gpus = fam["device"].nunique()
        if gpus > MAX_GPU_LINES:
            per_b = fam.groupby("batch_size")[ycol].agg(["median", "min", "max"]).sort_index()
            first = fam.iloc[0]
            name = (f"median of {gpus} × {first['device_name']} · {first['model']} "
                    "(band: lowest to highest GPU)") + (" (estimate)" if est else "")
            st = _style(i, est)
            x = per_b.index.astype(float)
            ax.plot(x, per_b["median"].astype(float), label=name, **st)
            ax.fill_between(x, per_b["min"].astype(float), per_b["max"].astype(float),
                            color=st["color"], alpha=0.2, lw=0)
            names.append(name)
            i += 1
            continue
        for label, g in fam.groupby("series", sort=True):
            g = g.sort_values("batch_size")
            x = g["batch_size"].astype(float)
            name = label + (" (estimate)" if est else "")
            st = _style(i, est)
            ax.plot(x, g[ycol].astype(float), label=name, **st)
            if lo_col and g[lo_col].notna().any():
                ax.fill_between(x, g[lo_col].astype(float), g[hi_col].astype(float),
                                color=st["color"], alpha=0.15, lw=0)
            names.append(name)
            i += 1
    return names


def gpu_spread(ours) -> list[str]:
    """Sentences on the spread between GPUs of the same name, model and lengths.

    At each batch size the spread is (max - min) / median of the GPUs' tokens/J; the
    sentence gives the largest over batch sizes.
    """
    out = []
    keys = ["device_name", "model", "input_len", "output_len"]
    for key, g in ours.groupby(keys, sort=True, dropna=False):
        devs = g["device"].nunique()
        if devs < 2:
            continue
        worst, at = 0.0, None
        for b, gb in g.groupby("batch_size"):
            v = gb["output_tokens_per_j"].astype(float)
            if len(v) > 1 and v.median() > 0:
                s = (v.max() - v.min()) / v.median()
                if s >= worst:
                    worst, at = s, b
        if at is not None:
            out.append(f"{devs} GPUs named {key[0]} on {key[1]} differ by up to "
                       f"{worst:.1%} in tokens/J (at batch {at}; spread = (max − min) / "
                       f"median across GPUs). " + (
                           "Each GPU is drawn as its own line." if devs <= MAX_GPU_LINES else
                           "The plot draws their median with a band from lowest to highest."))
    return out


def plot_tokens_per_j(df, out: Path) -> Plot:
    """Output tokens/J against batch size: a line per GPU and model with its interval band,
    and published points (imported rows) where the model matches."""
    plt = _plt()
    ours = _ours(df)
    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    names = draw_gpu_lines(ax, ours, "output_tokens_per_j", "output_tokens_per_j_ci_low",
                           "output_tokens_per_j_ci_high")
    pub = _published(df, ours["model"].unique())
    for (dev, model, src), g in pub.groupby(["device_name", "model", "source"]):
        name = f"reference: {dev} {model} ({src.removeprefix('external:')}, published)"
        ax.plot(g["batch_size"].astype(float), g["output_tokens_per_j"].astype(float), "x",
                color=REFERENCE_COLOUR, ms=8, label=name)
        names.append(name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (sequences per call)")
    ax.set_ylabel("output tokens per joule")
    ax.grid(True, alpha=0.3)
    _legend_or_say(ax, names, "no cell finished with a measured tokens/J")
    path = _save(fig, out / "tokens_per_j_vs_batch.png")
    return Plot("tokens_per_j_vs_batch", path, "Energy efficiency against batch size",
                "Higher is better: each line is one GPU running one model (with more than "
                f"{MAX_GPU_LINES} GPUs of one name: their median, the band spanning them), the "
                "shaded band is the interval over repeats (see Methods for its real coverage), "
                "dashed lines are estimated energy and grey crosses are published reference "
                "points.",
                names, gpu_spread(ours))


def plot_pareto(df, out: Path) -> Plot:
    """Tokens/J against output tokens/s per user (per sequence), with the Pareto front."""
    plt = _plt()
    ok = df[(df["status"] == "ok") & df["output_tokens_per_j"].notna()].copy()
    ok["per_user"] = ok["output_tokens_per_s"].astype(float) / ok["batch_size"].astype(float)
    ok = ok[ok["per_user"].notna()]
    ours = _ours(ok) if len(ok) else ok.assign(series=[])
    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    names = []
    for i, (label, g) in enumerate(ours.groupby("series", sort=True)):
        est = bool((g["energy_method"] == "estimate").any())
        name = label + (" (estimate)" if est else "")
        st = _style(i, est)
        ax.scatter(g["per_user"], g["output_tokens_per_j"].astype(float), color=st["color"],
                   marker=st["marker"], facecolors="none" if est else st["color"], label=name)
        names.append(name)
    pub = _published(ok, ours["model"].unique() if len(ours) else [])
    for (dev, model, src), g in pub.groupby(["device_name", "model", "source"]):
        name = f"reference: {dev} {model} ({src.removeprefix('external:')}, published)"
        ax.scatter(g["per_user"], g["output_tokens_per_j"].astype(float), marker="x",
                   color=REFERENCE_COLOUR, label=name)
        names.append(name)
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
    ax.set_xlabel("output tokens per second per user (per sequence)")
    ax.set_ylabel("output tokens per joule")
    ax.grid(True, alpha=0.3)
    _legend_or_say(ax, names, "no cell finished with a measured tokens/J")
    path = _save(fig, out / "pareto.png")
    return Plot("pareto", path, "Energy efficiency against speed per user",
                "Up is cheaper energy per token, right is faster for each user; points on the "
                "black line (the Pareto front) are not beaten on both at once — larger batches "
                "usually move up and to the left.", names)


def plot_rmb_per_kwh(df, out: Path, scenario: str) -> Plot:
    """Revenue in RMB per kWh at the best batch per GPU and model, with the electricity
    price as a line."""
    from bench import econ

    plt = _plt()
    ours = _ours(df)
    rows = [*ours.to_dict("records"),
            *_published(df, ours["model"].unique()).to_dict("records")]
    import pandas as pd

    table = pd.DataFrame(rows, columns=[*df.columns, "series"]) if rows else df.iloc[:0]
    v = econ.value_per_kwh(table, scenario, unpriced="null")
    # value_per_kwh picks the best batch per (source, device name, model); per GPU here
    v["series"] = [r.get("series") if isinstance(r.get("series"), str) else
                   f"reference: {r['device_name']} {r['model']}" for r in rows] if rows else []
    rev = pd.to_numeric(v["revenue_rmb_per_kwh"], errors="coerce")
    best_idx = [rev.loc[idx].idxmax() for _, idx in rev.dropna().groupby(v["series"]).groups
                .items()] if rev.notna().any() else []
    best = v.loc[best_idx]
    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    labels = [f"{s.replace(' · ', chr(10))}\nbatch {b}" for s, b in
              zip(best["series"], best["batch_size"], strict=True)]
    vals = [float(x) for x in best["revenue_rmb_per_kwh"]]
    bars = ax.bar(range(len(vals)), vals, color=[
        REFERENCE_COLOUR if str(s).startswith("reference") else COLOURS[i % len(COLOURS)]
        for i, s in enumerate(best["series"])])
    for b, est in zip(bars, best["estimate"], strict=True):
        if est:
            b.set_hatch("//")
            b.set_label("estimated energy")
    elec = float(best["elec_rmb_per_kwh"].iloc[0]) if len(best) else econ.load(
        scenario).value("elec_rmb_per_kwh")
    ax.axhline(elec, color="red", ls="--", label=f"electricity {elec:.3g} RMB/kWh")
    ax.set_xticks(range(len(vals)), labels, fontsize=6)
    ax.set_ylabel("RMB per kWh sold as tokens (at the utility meter)")
    handles, names = ax.get_legend_handles_labels()
    keep = dict(zip(names, handles, strict=True))
    ax.legend(keep.values(), keep.keys(), fontsize=7)
    path = _save(fig, out / "rmb_per_kwh.png")
    return Plot("rmb_per_kwh", path, "What a kWh is worth sold as tokens",
                f"Each bar is one GPU and model at its best batch, priced under the "
                f"'{scenario}' scenario and brought to the utility meter; the red line is "
                "what the kWh costs, so the gap above it is the gross margin on electricity.",
                list(best["series"]))


def plot_roofline(df, out: Path) -> Plot:
    """Fraction of the energy roofline each cell reached, by batch, a line per GPU/model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    ours = _ours(df)
    ours = ours[ours["roofline_fraction"].notna()]
    names = draw_gpu_lines(ax, ours, "roofline_fraction")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (sequences per call)")
    ax.set_ylabel("fraction of the energy roofline at TDP")
    ax.grid(True, alpha=0.3)
    _legend_or_say(ax, names, "no cell on a device of the table (no roofline)")
    path = _save(fig, out / "roofline.png")
    return Plot("roofline", path, "How close each GPU came to its energy ceiling",
                "1.0 would be the tokens/J the device could reach at its TDP if it ran at its "
                "peak compute or memory bandwidth, whichever binds; low values at small batch "
                "are expected (the GPU waits on memory).", names)


def plot_power_timeline(docs: list[dict], run_dirs: list[Path], out: Path) -> Plot:
    """One GPU cell's sampled power over its first window, with call starts and
    first-token marks."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
    names = []
    for d, rd in zip(docs, run_dirs, strict=True):
        tr = d.get("trace") or {}
        gpu_cells = [c for c in d.get("cells", []) if c.get("scope") == "gpu"
                     and c.get("status") == "ok" and str(c.get("device", "")).startswith("gpu")]
        if not tr.get("file") or not gpu_cells:
            continue
        import pandas as pd

        from bench.results import io, load

        t = pd.DataFrame(io.read_trace(load.safe_member(Path(rd), tr["file"])))
        # the largest batch, on the lowest-numbered GPU (drawn in that GPU's colour elsewhere)
        # (a group of GPUs, gpu0+1: its first GPU's power)
        def first(x: dict) -> int:
            return int(str(x["device"])[3:].split("+")[0])

        c = max(gpu_cells, key=lambda x: (x["batch_size"], -first(x)))
        r = c["repeats"][0]
        idx = first(c)
        s = t[(t["device_index"] == idx) & (t["t_ns"] >= r["t0_ns"]) &
              (t["t_ns"] <= r["t1_ns"]) & (t["power_status"] == 0)]
        name = f"{c['device']} {c['device_name']} · {c['model']} · batch {c['batch_size']}"
        ax.plot((s["t_ns"] - r["t0_ns"]) * 1e-9, s["power_w"], lw=0.8, color=COLOURS[0],
                label=name)
        names.append(name)
        for i, (start, first, _end) in enumerate(r.get("calls_ns", [])):
            ax.axvline((start - r["t0_ns"]) * 1e-9, color="green", lw=0.5,
                       label="call start" if i == 0 else None)
            ax.axvline((first - r["t0_ns"]) * 1e-9, color="orange", lw=0.5, ls="--",
                       label="first token" if i == 0 else None)
        break
    if not names:
        ax.text(0.5, 0.5, "no power trace: only sampled GPUs have one\n"
                "(CPU energy is an estimate read at window edges)", ha="center",
                va="center", transform=ax.transAxes)
    ax.set_xlabel("seconds into the window")
    ax.set_ylabel("power (W)")
    if names:
        ax.legend(fontsize=7)
    path = _save(fig, out / "power_timeline.png")
    return Plot("power_timeline", path, "Power during one measured window",
                "The sampled power of one GPU over the first window of the largest batch: "
                "green lines are the starts of generate calls, orange dashes the first "
                "token (prefill ends there, decode follows); the energy is the area under it.",
                names)


def plot_power_limit(df, out: Path) -> Plot | None:
    """Tokens/J and tokens/s against the power limit, a line per GPU, model and batch, the
    highest tokens/J of each line marked (a star); None unless a run set more than one limit
    (issue 15)."""
    ours = _ours(df)
    ours = ours[ours["power_limit_w"].notna()] if "power_limit_w" in ours else ours.iloc[0:0]
    if ours["power_limit_w"].nunique() < 2 if len(ours) else True:
        return None
    plt = _plt()
    fig, (ax_j, ax_s) = plt.subplots(1, 2, figsize=(SIZE_IN[0] * 1.5, SIZE_IN[1]), dpi=DPI)
    names: list[str] = []
    keys = ["device", "device_name", "model", "input_len", "output_len", "run_id",
            "batch_size"]
    for i, (key, g) in enumerate(ours.groupby(keys, sort=True, dropna=False)):
        g = g.sort_values("power_limit_w")
        est = bool((g["energy_method"] == "estimate").any())
        name = f"{key[0]} {key[1]} · {key[2]} · batch {int(key[6])}" + \
            (" (estimate)" if est else "")
        st = _style(i, est)
        x = g["power_limit_w"].astype(float)
        tpj = g["output_tokens_per_j"].astype(float)
        ax_j.plot(x, tpj, label=name, **st)
        ax_s.plot(x, g["output_tokens_per_s"].astype(float), label=name, **st)
        best = tpj.idxmax()
        ax_j.plot([float(g.loc[best, "power_limit_w"])], [float(tpj[best])], "*",
                  color=st["color"], ms=16, mec="black")
        names.append(name)
    for ax, ylabel in ((ax_j, "output tokens per joule"), (ax_s, "output tokens per second")):
        ax.set_xlabel("enforced power limit, W")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    ax_j.legend(fontsize=7)
    path = _save(fig, out / "power_limit.png")
    return Plot("power_limit", path, "Efficiency and throughput against the power limit",
                "Left: output tokens per joule at each power limit the run set, a line per "
                "GPU, model and batch; the star marks the limit with the most tokens per "
                "joule. Right: output tokens per second at the same limits, what a lower "
                "limit costs in throughput. bench econ optimize prices the trade-off.", names)


def _legend_or_say(ax, names: list, empty: str) -> None:
    """A legend where something was drawn, else the reason written across the axes."""
    if names:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
