"""The report page: header, summary, plots with how to read them, methods and caveats, cells.

Plain HTML and CSS, images inline as data URIs, one small script to sort tables by clicking
a header (the page reads the same without it). Numbers are formatted here, for screens only.
"""

from __future__ import annotations

import base64
import html
import math
import re
from math import comb

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1d1d1f;
 max-width:980px;margin:2em auto;padding:0 1em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;
 border-bottom:1px solid #ddd;padding-bottom:.2em}h3{font-size:1.05em}
.sub{color:#555;margin-top:0}img{max-width:100%;border:1px solid #eee}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}
td,th{border:1px solid #d0d0d0;padding:3px 7px;vertical-align:top}
th{background:#f3f4f6;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
table.sortable th{cursor:pointer}table.sortable th:after{content:' \\2195';color:#aaa}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;font-size:14px}
dl.meta dt{color:#555}dl.meta dd{margin:0}
.est{color:#a35b00}.bad{color:#b00020}.ok{color:#116611}.ref{color:#555;font-style:italic}
.how{color:#333;background:#f7f7f9;border-left:3px solid #9ab;padding:.3em .7em}
.lines{font-size:12px;color:#444}.note{font-size:13px}
.wide{overflow-x:auto}table.small{font-size:12px}
"""

SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
  var b=t.tBodies[0],rows=Array.prototype.slice.call(b.rows),asc=th.dataset.asc!=='1';
  t.querySelectorAll('th').forEach(function(h){delete h.dataset.asc});
  th.dataset.asc=asc?'1':'0';
  rows.sort(function(x,y){var a=x.cells[i].dataset.v,c=y.cells[i].dataset.v;
   if(a===undefined){a=x.cells[i].textContent;c=y.cells[i].textContent;
    return asc?a.localeCompare(c):c.localeCompare(a);}
   a=a===''?-Infinity:+a;c=c===''?-Infinity:+c;return asc?a-c:c-a;});
  rows.forEach(function(r){b.appendChild(r)});});});});
"""


def esc(x) -> str:
    """HTML-escaped text of any value ('—' for None/NaN)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return html.escape(str(x))


def fmt(x, digits: int = 3) -> str:
    """A number with ``digits`` significant figures for the screen ('—' when missing)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(v):
        return "—"
    if v == 0:
        return "0"
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    s = f"{v:#.{digits}g}".rstrip(".")  # '#': keep trailing zeros (3.00, not 3)
    if "e" in s:  # very small: keep the significant figures, no exponent
        decimals = digits - 1 - math.floor(math.log10(abs(v)))
        s = f"{v:.{decimals}f}"
    return s


def num_td(x, digits: int = 3, text: str | None = None) -> str:
    """A right-aligned numeric cell that sorts by its value."""
    v: float | None
    try:
        v = float(x)
        v = v if math.isfinite(v) else None
    except (TypeError, ValueError):
        v = None
    shown = text if text is not None else fmt(v, digits)
    return f"<td class='n' data-v='{'' if v is None else repr(v)}'>{esc(shown)}</td>"


def img(path) -> str:
    """An <img> with the PNG inline."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{esc(path.stem)}' src='data:image/png;base64,{data}'>"


def plot_section(p, level: int = 2) -> str:
    """A plot's section: title, one sentence on reading it, the image, its lines, notes."""
    parts = [f"<section id='{esc(p.name)}'><h{level}>{esc(p.title)}</h{level}>",
             f"<p class='how'>{esc(p.how_to_read)}</p>", img(p.path)]
    if p.series:
        parts.append("<p class='lines'>Lines: " + "; ".join(esc(s) for s in p.series)
                     + "</p>")
    parts.extend(f"<p class='note'>{esc(n)}</p>" for n in p.notes)
    parts.append("</section>")
    return "\n".join(parts)


def page(title: str, body: list[str], sub: str = "") -> str:
    """A whole self-contained HTML page."""
    return "\n".join([
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>", f"<p class='sub'>{sub}</p>" if sub else "", *body,
        f"<script>{SORT_JS}</script></body></html>"])


# -- what a document says ---------------------------------------------------------------

def engine_of(doc: dict, cell: dict | None = None) -> str:
    """The engine of a cell (or the run): the table's ``engine`` column
    (``bench.results.table.cell_engine``)."""
    from bench.results.table import cell_engine

    return cell_engine(doc, cell or {})


def _gpu_line(d: dict) -> str:
    if d.get("kind") == "cuda":
        bits = [f"gpu{d.get('index')} {d.get('name')}"]
        if d.get("power_limit_w"):
            bits.append(f"power limit {fmt(d['power_limit_w'])} W")
        if d.get("driver"):
            bits.append(f"driver {d['driver']}")
        if d.get("mig"):
            bits.append("MIG")
        return ", ".join(bits)
    return f"CPU {d.get('name')} ({d.get('logical_cpus', '?')} logical CPUs)"


def when(utc) -> str:
    """'2026-11-30T04:23:32.510404Z' as '2026-11-30 04:23:32 UTC' (as given if not that)."""
    m = re.match(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)", str(utc))
    return f"{m.group(1)} {m.group(2)} UTC" if m else str(utc)


def header(docs: list[dict]) -> str:
    """Runs, machine, devices, engine and versions, harness, dates, as a definition list."""
    rows = []
    for d in docs:
        prov = d.get("provenance") or {}
        h = prov.get("harness") or {}
        host = prov.get("host") or {}
        libs = prov.get("libraries") or {}
        engines = sorted({engine_of(d, c) for c in d.get("cells", [])} or {engine_of(d)})
        commit = h.get("commit")
        commit_s = (str(commit)[:12] + (" (uncommitted changes)" if h.get("dirty") else "")
                    if commit else f"unknown ({h.get('reason') or 'no reason given'})")
        lib_s = ", ".join(f"{k} {libs[k]}" for k in ("torch", "transformers", "vllm",
                                                      "python") if libs.get(k))
        cpu = host.get("cpu") or {}
        rows += [("Run", d.get("run_id")),
                 ("Machine", f"{host.get('hostname', '?')} — {cpu.get('model', '?')}, "
                  f"{host.get('os', '?')}"),
                 ("Devices", "; ".join(_gpu_line(x) for x in d.get("devices", [])
                                       if isinstance(x, dict)) or "none recorded"),
                 ("Engine", f"{', '.join(engines)} ({lib_s})"),
                 ("Harness", f"joulebench {h.get('version', '?')}, commit {commit_s}"),
                 ("When", f"{when(d.get('started_utc'))} to {when(d.get('finished_utc'))}"
                  f" ({d.get('status', '?')})")]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    return f"<dl class='meta'>{dl}</dl>"


def summary_rows(df, scenario: str) -> list[dict]:
    """The best output tokens/J per model, GPU and lengths, with what a kWh then earns."""
    from bench import econ

    ok = df[(df["source"] == "joulebench") & (df["status"] == "ok")
            & df["output_tokens_per_j"].notna()]
    if not len(ok):
        return []
    multi = ok["run_id"].nunique() > 1
    keys = ["run_id", "device", "device_name", "model", "dtype", "input_len", "output_len"]
    out = []
    for _, g in ok.groupby(keys, sort=True, dropna=False):
        best = g.loc[g["output_tokens_per_j"].astype(float).idxmax()]
        v = econ.value_per_kwh(g.loc[[best.name]], scenario, unpriced="null").iloc[0]
        dev = best["device"] if best["device"] != "cpu" else ""
        out.append({
            "run": str(best["run_id"]) if multi else "", "device":
            f"{dev} {best['device_name']}".strip(), "model": best["model"],
            "dtype": best["dtype"], "lengths": f"{best['input_len']} / {best['output_len']}",
            "tokens_per_j": float(best["output_tokens_per_j"]),
            "batch_size": int(best["batch_size"]),
            "tokens_per_s": best["output_tokens_per_s"],
            "rmb_per_kwh": v["revenue_rmb_per_kwh"], "rmb_per_kwh_gpu":
            v["revenue_rmb_per_kwh_gpu"], "price": v["price_rmb_per_mtok"],
            "meter_basis": v["meter_basis"], "method": best["energy_method"],
            "scope": best["scope"]})
    return out


def summary_table(rows: list[dict], scenario: str) -> str:
    """The summary as an HTML table."""
    if not rows:
        return "<p>No cell finished with a measured tokens/J.</p>"
    multi = any(r["run"] for r in rows)
    head = (["Run"] if multi else []) + [
        "Device", "Model", "dtype", "Input / output tokens", "Best output tokens/J",
        "At batch", "Output tokens/s", f"RMB per kWh at the meter ({scenario})",
        "RMB per kWh at measured scope", "Energy method", "Scope"]
    body = []
    for r in rows:
        cls = " class='est'" if r["method"] == "estimate" else ""
        tds = ([f"<td>{esc(r['run'])}</td>"] if multi else []) + [
            f"<td>{esc(r['device'])}</td>", f"<td>{esc(r['model'])}</td>",
            f"<td>{esc(r['dtype'])}</td>", f"<td>{esc(r['lengths'])}</td>",
            num_td(r["tokens_per_j"], 4), num_td(r["batch_size"], 6, str(r["batch_size"])),
            num_td(r["tokens_per_s"], 4), num_td(r["rmb_per_kwh"], 3),
            num_td(r["rmb_per_kwh_gpu"], 3),
            f"<td>{esc(r['method'])}{' (not measured)' if r['method'] == 'estimate' else ''}"
            "</td>", f"<td>{esc(r['scope'])}</td>"]
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    price = sorted({fmt(r["price"]) for r in rows})
    basis = sorted({r["meter_basis"] for r in rows})
    return ("<table id='summary' class='sortable'><thead><tr>"
            + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(body) + "</tbody></table>"
            f"<p class='note'>RMB per kWh = 3.6 × tokens/J × token price "
            f"({', '.join(price)} RMB per million output tokens); at the meter the measured "
            f"energy is scaled: {esc('; '.join(basis))}.</p>")


def _repeat_tpj(c: dict) -> list[float]:
    from bench.results import figures

    vals = []
    for r in c.get("repeats", []):
        try:
            v = figures.repeat_figures(r, c["scope"])["output_tokens_per_j"]
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return []
        if v is None:
            return []
        vals.append(v)
    return sorted(vals)


def interval_coverage(values: list[float], ci) -> float | None:
    """The real coverage of an interval for the median whose ends are order statistics.

    If the ends are the j-th and k-th smallest of n values (1-based), the interval holds the
    true median with probability sum_{i=j}^{k-1} C(n, i) / 2^n (any continuous
    distribution). With n = 3 and ends [min, max] that is 75%. None when an end is not one
    of the values (an interpolated bootstrap quantile).
    """
    n = len(values)
    if n < 2 or not isinstance(ci, list | tuple) or len(ci) != 2:
        return None

    def pos(x):
        for i, v in enumerate(values, 1):
            if math.isclose(v, x, rel_tol=1e-9, abs_tol=1e-15):
                return i
        return None

    j, k = pos(ci[0]), pos(ci[1])
    if j is None or k is None or k <= j:
        return None
    return sum(comb(n, i) for i in range(j, k)) / 2 ** n


def _ci_level(doc: dict, c: dict) -> float:
    for src in (c.get("uncertainty") or {}, doc.get("uncertainty") or {}, doc):
        v = src.get("ci_level") if isinstance(src, dict) else None
        if isinstance(v, int | float) and 0 < v < 1:
            return float(v)
    return 0.95


def _edge_bound(obj: dict, energy_j) -> float | None:
    """An edge bound stated in obj, relative to the window's energy (None if none)."""
    for k, v in obj.items():
        if not str(k).startswith("edge_bound") or isinstance(v, bool) or \
                not isinstance(v, int | float):
            continue
        if k.endswith("_j"):
            if isinstance(energy_j, int | float) and energy_j > 0:
                return v / energy_j
        elif k.endswith(("_fraction", "_rel", "_ratio")):
            return float(v)
    return None


def _edge_bounds(c: dict) -> list[float]:
    """Relative edge bounds (bound / energy) stated anywhere in a cell's repeats: on the
    repeat, its readings or their sample statistics (edge_bound_j, edge_bound_fraction)."""
    out = []
    for r in c.get("repeats", []):
        if not isinstance(r, dict):
            continue
        e = ((r.get("energy") or {}).get(c.get("scope")) or {}).get("energy_j")
        places = [(r, e)]
        for rd in r.get("readings", []):
            if isinstance(rd, dict):
                places += [(rd, rd.get("energy_j")), (rd.get("stats") or {}, rd.get("energy_j"))]
        for obj, energy in places:
            b = _edge_bound(obj, energy) if isinstance(obj, dict) else None
            if b is not None:
                out.append(b)
    return out


def methods(docs: list[dict]) -> str:
    """Methods and caveats: what the energy covers, the interval's real coverage, estimates,
    edge bounds, contention, idle baselines."""
    cells = [(d, c) for d in docs for c in d.get("cells", []) if isinstance(c, dict)]
    ok = [(d, c) for d, c in cells if c.get("status") == "ok" and c.get("figures")]
    items = []
    scopes = sorted({c["scope"] for _, c in ok if c.get("scope")})
    meanings = {"gpu": "only the GPUs the cell ran on (NVML; idle GPUs are never summed in)",
                "cpu": "the CPU package (RAPL), or an estimate where no counter is readable",
                "dram": "DRAM (RAPL)", "node": "the whole node at its BMC",
                "system": "the whole system"}
    items.append("<b>What the energy covers.</b> " + "; ".join(
        f"scope <code>{esc(s)}</code>: {esc(meanings.get(s, s))}" for s in scopes)
        + ". Tokens/J divides output tokens (batch × output length × calls, EOS ignored) "
        "by that energy; it does not include host, network or cooling unless the scope "
        "says so. RMB per kWh at the meter scales it as stated under the summary.")
    srcs = sorted({s.get("description") or s.get("name") or "" for d in docs
                   for s in d.get("energy_sources", []) if isinstance(s, dict)} - {""})
    if srcs:
        items.append("<b>Energy sources.</b> " + "; ".join(esc(s) for s in srcs) + ".")
    # the interval
    groups: dict = {}
    for d, c in ok:
        u = c.get("uncertainty") or {}
        ci = u.get("output_tokens_per_j_ci")
        if not ci:
            continue
        n = u.get("repeats")
        cov = interval_coverage(_repeat_tpj(c), ci)
        key = (n, _ci_level(d, c), None if cov is None else round(cov, 4))
        groups[key] = groups.get(key, 0) + 1
    if groups:
        lines = []
        for (n, level, cov), count in sorted(groups.items(), key=lambda kv: str(kv[0])):
            s = (f"{count} cell(s) with {n} repeats: the interval of the median is "
                 f"labelled {level:.0%}")
            if cov is not None and n and cov < level - 1e-9:
                ends = "[min, max] of the repeats" if math.isclose(
                    cov, 1 - 2 ** (1 - n)) else "between two of the repeats"
                s += (f", but with so few repeats it is {ends} and covers the true median "
                      f"only {cov:.1%} of the time (order statistics: "
                      f"1 − 2^(1−n) for [min, max])")
            elif cov is not None:
                s += f"; its ends are repeats and its real coverage is {cov:.1%}"
            else:
                s += "; its ends are interpolated, so its coverage is only approximately that"
            lines.append(s + ".")
        items.append("<b>Intervals.</b> " + " ".join(esc(x) for x in lines)
                     + " More repeats give a real 95% interval; read the bands as the range "
                     "seen, not as a guarantee.")
    else:
        items.append("<b>Intervals.</b> No cell has two or more repeats, so no interval is "
                     "shown.")
    est = [c for _, c in ok if c.get("energy_method") == "estimate"]
    if est:
        items.append(f"<b class='est'>Estimates.</b> {len(est)} of {len(ok)} cell(s) have "
                     "estimated energy (no readable sensor): they are not measurements, and "
                     "are dashed, hatched or marked 'estimate' everywhere on this page.")
    else:
        items.append("<b>Estimates.</b> None: every figure comes from a measured counter or "
                     "sampled power.")
    bounds = [b for _, c in ok for b in _edge_bounds(c)]
    if bounds:
        items.append(f"<b>Window edges.</b> Each window states the most a power step at an "
                     f"edge can bias its energy: the largest here is {max(bounds):.2%} of the "
                     f"window's energy (median {sorted(bounds)[len(bounds) // 2]:.2%}).")
    else:
        items.append("<b>Window edges.</b> These documents record no edge bound; a counter "
                     "read at the edges can be off by up to half an update period times a "
                     "power step, which long windows keep small.")
    cont = [c for _, c in cells if c.get("contended")]
    if cont:
        items.append("<b class='bad'>Contention.</b> Another process computed on the GPU "
                     "during " + ", ".join(esc(c.get("cell_id")) for c in cont[:8])
                     + (f" and {len(cont) - 8} more" if len(cont) > 8 else "")
                     + ": its energy counts against those cells, whose tokens/J is low.")
    else:
        items.append("<b>Contention.</b> No other process computed on a measured GPU.")
    idle = [(i.get("device"), i.get("power_w")) for d in docs for i in d.get("idle", [])
            if isinstance(i, dict)]
    if idle:
        items.append("<b>Idle baseline.</b> " + ", ".join(
            f"{esc(dv)} {fmt(p)} W" for dv, p in idle) + "; tokens/J above is total energy, "
            "the cells table also gives it above idle.")
    bad = [c for _, c in cells if c.get("status") != "ok"]
    if bad:
        items.append(f"<b>Cells not measured.</b> {len(bad)}: " + ", ".join(
            f"{esc(c.get('cell_id'))} ({esc(c.get('status'))})" for c in bad[:8]) + ".")
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"


def _v(r, key, scale: float = 1.0) -> float | None:
    try:
        x = float(r.get(key)) * scale
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _int_text(x) -> str | None:
    return None if x is None else str(int(x))


def _device(r) -> str:
    dev = r.get("device")
    return f"{dev} {r.get('device_name')}" if isinstance(dev, str) and dev != "cpu" else str(
        r.get("device_name"))


# (header, text of a row or None for a number, value to sort by (None: by text))
CELL_COLUMNS = (
    ("Run", lambda r: r.get("run_id"), None),
    ("Device", _device, None),
    ("Model", lambda r: r.get("model"), None),
    ("dtype", lambda r: r.get("dtype"), None),
    ("Batch", lambda r: _int_text(_v(r, "batch_size")), lambda r: _v(r, "batch_size")),
    ("Input / output tokens", lambda r: f"{_int_text(_v(r, 'input_len')) or '—'} / "
     f"{_int_text(_v(r, 'output_len')) or '—'}", None),
    ("Status", lambda r: r.get("status"), None),
    ("Energy (method, scope)", lambda r: f"{r.get('energy_method')}, {r.get('scope')}", None),
    ("Output tokens/J", None, lambda r: _v(r, "output_tokens_per_j")),
    ("Interval (tokens/J)", lambda r: f"{fmt(_v(r, 'output_tokens_per_j_ci_low'))} – "
     f"{fmt(_v(r, 'output_tokens_per_j_ci_high'))}"
     if _v(r, "output_tokens_per_j_ci_low") is not None else "—",
     lambda r: _v(r, "output_tokens_per_j_ci_low")),
    ("Output tokens/s", None, lambda r: _v(r, "output_tokens_per_s")),
    ("Mean power (W)", None, lambda r: _v(r, "mean_power_w")),
    ("Energy per output token (mJ)", None, lambda r: _v(r, "j_per_output_token", 1e3)),
    ("Tokens/J above idle", None, lambda r: _v(r, "incremental_output_tokens_per_j")),
    ("Time to first token (ms)", None, lambda r: _v(r, "ttft_s", 1e3)),
    ("Roofline fraction (%)", None, lambda r: _v(r, "roofline_fraction", 100.0)),
    ("Contended", lambda r: {True: "yes", False: "no"}.get(r.get("contended"), "—"), None),
    ("Source", lambda r: r.get("source") if r.get("source") == "joulebench"
     else f"{r.get('source')} (published)", None))


def cells_table(df) -> str:
    """Every cell, one row each, formatted with units in the headers, sortable."""
    drop = set()
    if df["run_id"].nunique() <= 1:
        drop.add("Run")
    if (df["source"] == "joulebench").all():
        drop.add("Source")
    cols = [c for c in CELL_COLUMNS if c[0] not in drop]
    parts = ["<div class='wide'><table id='cells' class='sortable small'><thead><tr>"
             + "".join(f"<th>{esc(h)}</th>" for h, _, _ in cols) + "</tr></thead><tbody>"]
    for r in df.to_dict("records"):
        cls = " class='est'" if r.get("energy_method") == "estimate" else (
            " class='ref'" if r.get("source") != "joulebench" else "")
        tds = []
        for _, text, value in cols:
            if text is None:
                assert value is not None  # CELL_COLUMNS: a column without text has a value
                tds.append(num_td(value(r), 4))
            elif value is not None:
                tds.append(num_td(value(r), 4, text=text(r)))
            else:
                tds.append(f"<td>{esc(text(r))}</td>")
        parts.append(f"<tr{cls}>{''.join(tds)}</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)
