"""``bench leaderboard``: a static site over vendor submissions, each validated, then ranked.

SUBMISSIONS_DIR/<vendor>/<system>/<run>/ as ``bench submit`` writes them. Every submission
is checked with ``bench.results.validate.validate`` plus one rule of its own (the manifest
names the folder it sits in); a failing one is listed with its rule and reason, never ranked.
The index compares systems on the same model and lengths; each system has its own report.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import BenchError
from bench.report import page as P
from bench.report import plots

MAX_SIGNATURE_BYTES = 64 << 10
FINGERPRINT_HEX = 16


@dataclass
class Submission:
    """One run folder of the submissions tree and what checking it found."""

    vendor: str
    system: str
    run: str
    path: Path
    checks: list = field(default_factory=list)
    signature: str = "unsigned"
    key_fingerprint: str | None = None
    doc: dict | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def failing(self) -> list:
        return [c for c in self.checks if not c.ok]

    @property
    def slug(self) -> str:
        return f"{self.vendor}__{self.system}"


def key_fingerprint(public_key_hex: str) -> str:
    """SHA-256 of the raw ed25519 public key, first 16 hex digits.

    Raises:
        ValueError: not the hex of a 32-byte key.
    """
    raw = bytes.fromhex(public_key_hex)
    if len(raw) != 32:
        raise ValueError("an ed25519 public key is 32 bytes")
    return hashlib.sha256(raw).hexdigest()[:FINGERPRINT_HEX]


def _read_signature(run_dir: Path) -> tuple[str, str | None]:
    """(what the signature file is, its key's fingerprint) without trusting the file."""
    from bench.results.manifest import SIGNATURE

    p = run_dir / SIGNATURE
    if not p.exists():
        return "unsigned", None
    if p.is_symlink() or not p.is_file() or p.stat().st_size > MAX_SIGNATURE_BYTES:
        return "signature file is a link or too large", None
    try:
        s = json.loads(p.read_text(encoding="utf-8"))
        return f"{s['algorithm']} signature", key_fingerprint(str(s["public_key"]))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return "signature file is malformed", None


def _rule_submission(sub: Submission):
    """The leaderboard's own rule: a manifest that names this vendor, system and run."""
    from bench.results.manifest import MANIFEST, MAX_MANIFEST_BYTES
    from bench.results.validate import Check

    p = sub.path / MANIFEST
    if not p.is_file() or p.is_symlink() or p.stat().st_size > MAX_MANIFEST_BYTES:
        return Check("submission", False, f"no {MANIFEST} (not made by bench submit)")
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return Check("submission", False, f"{MANIFEST} is not valid JSON")
    want = {"vendor": sub.vendor, "system": sub.system, "run_id": sub.run}
    wrong = [k for k, v in want.items() if not isinstance(m, dict) or m.get(k) != v]
    if wrong:
        return Check("submission", False, f"the manifest's {wrong[0]} is not the folder's "
                     f"({want[wrong[0]]!r})")
    return Check("submission", True, "manifest names this vendor, system and run")


def find_submissions(root: Path) -> list[Submission]:
    """Every <vendor>/<system>/<run>/ folder under root, checked (links are not followed)."""
    from bench.results.load import Invalid, load_document
    from bench.results.submit import NAME
    from bench.results.validate import Check, validate

    subs = []
    for vendor in sorted(root.iterdir()):
        if vendor.name.startswith(".") or not vendor.is_dir() or vendor.is_symlink():
            continue
        for system in sorted(vendor.iterdir()):
            if system.name.startswith(".") or not system.is_dir() or system.is_symlink():
                continue
            for run in sorted(system.iterdir()):
                if run.name.startswith(".") or not run.is_dir() or run.is_symlink():
                    continue
                sub = Submission(vendor.name, system.name, run.name, run)
                bad = [n for n in (vendor.name, system.name, run.name) if not NAME.match(n)]
                if bad:
                    sub.checks = [Check("submission", False, f"folder name {bad[0][:40]!r} is "
                                        "not 1-64 letters, digits, '.', '_' or '-'")]
                    subs.append(sub)
                    continue
                sub.signature, sub.key_fingerprint = _read_signature(run)
                sub.checks = [_rule_submission(sub), *validate(run)]
                if sub.ok:
                    try:
                        sub.doc = load_document(run)[0]
                    except (Invalid, OSError) as exc:
                        sub.checks.append(Check("load", False, str(exc)))
                if sub.key_fingerprint and sub.ok:
                    sub.signature += ", verified"
                subs.append(sub)
    return subs


# -- comparison -------------------------------------------------------------------------

def _system_table(subs: list[Submission], scenario: str):
    """Table rows of every valid submission, with vendor, system and engine, and the RMB
    per kWh of each row under the scenario."""
    import pandas as pd

    from bench import econ
    from bench.results.table import rows_from_document

    rows = []
    for s in subs:
        if not s.ok:
            continue
        doc = s.doc
        assert doc is not None  # find_submissions loads the document of every valid one
        for r in rows_from_document(doc, str(s.path)):  # the engine is a table column
            r.update(vendor=s.vendor, system=s.system, slug=s.slug)
            rows.append(r)
    df = pd.DataFrame(rows)
    if not len(df):
        return df
    df = df[(df["status"] == "ok") & df["output_tokens_per_j"].notna()].reset_index(drop=True)
    v = econ.value_per_kwh(df, scenario, unpriced="null")
    df["rmb_per_kwh"] = pd.to_numeric(v["revenue_rmb_per_kwh"], errors="coerce").to_numpy()
    df["elec_rmb_per_kwh"] = pd.to_numeric(v["elec_rmb_per_kwh"], errors="coerce").to_numpy()
    return df


def system_curves(df) -> list[dict]:
    """Per system and batch: the median, min and max over its GPUs (and runs) of tokens/J,
    tokens/s per GPU and RMB per kWh."""
    out = []
    keys = ["model", "input_len", "output_len", "slug", "batch_size"]
    for key, g in df.groupby(keys, sort=True):
        tpj = g["output_tokens_per_j"].astype(float)
        tps = g["output_tokens_per_s"].astype(float)
        out.append({
            "model": key[0], "input_len": key[1], "output_len": key[2], "slug": key[3],
            "batch_size": int(key[4]), "vendor": g["vendor"].iloc[0],
            "system": g["system"].iloc[0], "tokens_per_j": float(tpj.median()),
            "tokens_per_j_min": float(tpj.min()), "tokens_per_j_max": float(tpj.max()),
            "tokens_per_s": float(tps.median()),
            "tokens_per_s_per_user": float(tps.median()) / float(key[4]),
            "rmb_per_kwh": float(g["rmb_per_kwh"].median()), "gpus": int(len(g)),
            "elec_rmb_per_kwh": float(g["elec_rmb_per_kwh"].median()),
            "gpu_names": ", ".join(sorted(set(map(str, g["device_name"])))),
            "engine": ", ".join(sorted(set(map(str, g["engine"])))),
            "dtype": ", ".join(sorted(set(map(str, g["dtype"])))),
            "estimate": bool((g["energy_method"] == "estimate").any()),
            "contended": bool((g["contended"] == True).any()),  # noqa: E712 (None: unknown)
            "method": ", ".join(sorted(set(map(str, g["energy_method"])))),
            "scope": ", ".join(sorted(set(map(str, g["scope"]))))})
    return out


def rank(curves: list[dict]) -> dict:
    """Per (model, input_len, output_len): each system at its best batch, best first."""
    groups: dict = {}
    for c in curves:
        k = (c["model"], c["input_len"], c["output_len"])
        cur = groups.setdefault(k, {}).get(c["slug"])
        if cur is None or c["tokens_per_j"] > cur["tokens_per_j"]:
            groups[k][c["slug"]] = c
    return {k: sorted(v.values(), key=lambda c: -c["tokens_per_j"])
            for k, v in sorted(groups.items(), key=lambda kv: str(kv[0]))}


def _references(extra_tables, model: str):
    """Published rows (imported tables) whose model matches, for reference only."""
    from bench.results.table import load_table

    if not extra_tables:
        return None
    ref = load_table(list(extra_tables))
    ref = ref[(ref["status"] == "ok") & ref["output_tokens_per_j"].notna()]
    m = plots.norm_model(model)
    return ref[[m in plots.norm_model(x) for x in ref["model"]]]


def _group_plots(key, curves, ranked, ref, out: Path, scenario: str) -> list:
    """The group's three plots: tokens/J vs batch, vs tokens/s per user, RMB/kWh at best."""
    plt = plots._plt()
    model, ilen, olen = key
    slugs = [r["slug"] for r in ranked]
    colour = {s: plots.COLOURS[i % len(plots.COLOURS)] for i, s in enumerate(slugs)}
    name = {r["slug"]: f"{r['vendor']} / {r['system']}" for r in ranked}
    tag = plots.norm_model(model).replace("/", "_") + f"_i{ilen}_o{olen}"
    mine = [c for c in curves if (c["model"], c["input_len"], c["output_len"]) == key]
    figs = []

    fig, ax = plt.subplots(figsize=plots.SIZE_IN, dpi=plots.DPI)
    for s in slugs:
        pts = sorted((c for c in mine if c["slug"] == s), key=lambda c: c["batch_size"])
        x = [c["batch_size"] for c in pts]
        est = any(c["estimate"] for c in pts)
        ax.plot(x, [c["tokens_per_j"] for c in pts], "o--" if est else "o-", color=colour[s],
                label=name[s] + (" (estimate)" if est else ""))
        ax.fill_between(x, [c["tokens_per_j_min"] for c in pts],
                        [c["tokens_per_j_max"] for c in pts], color=colour[s], alpha=0.15,
                        lw=0)
    if ref is not None and len(ref):
        for (dev, src), g in ref.groupby(["device_name", "source"]):
            ax.plot(g["batch_size"].astype(float), g["output_tokens_per_j"].astype(float), "x",
                    color=plots.REFERENCE_COLOUR, ms=7,
                    label=f"reference: {dev} ({src.removeprefix('external:')}, published)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (sequences per call)")
    ax.set_ylabel("output tokens per joule")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    figs.append(plots.Plot(
        f"lb_{tag}_batch", plots._save(fig, out / f"{tag}_tokens_per_j_vs_batch.png"),
        "Tokens per joule against batch size",
        "Higher is better; each line is a system (the median over its GPUs), the band spans "
        "its GPUs from lowest to highest, grey crosses are published reference points.",
        [name[s] for s in slugs]))

    fig, ax = plt.subplots(figsize=plots.SIZE_IN, dpi=plots.DPI)
    for s in slugs:
        pts = [c for c in mine if c["slug"] == s]
        ax.scatter([c["tokens_per_s_per_user"] for c in pts], [c["tokens_per_j"] for c in pts],
                   color=colour[s], label=name[s])
    if ref is not None and len(ref):
        per_user = ref["output_tokens_per_s"].astype(float) / ref["batch_size"].astype(float)
        ax.scatter(per_user, ref["output_tokens_per_j"].astype(float), marker="x",
                   color=plots.REFERENCE_COLOUR, label="reference (published)")
    ax.set_xscale("log")
    ax.set_xlabel("output tokens per second per user (per sequence)")
    ax.set_ylabel("output tokens per joule")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    figs.append(plots.Plot(
        f"lb_{tag}_pareto", plots._save(fig, out / f"{tag}_tokens_per_j_vs_speed.png"),
        "Tokens per joule against speed per user",
        "Up is less energy per token, right is faster for each user: a system whose points "
        "sit up and to the right of another's serves the same model better on both.",
        [name[s] for s in slugs]))

    fig, ax = plt.subplots(figsize=plots.SIZE_IN, dpi=plots.DPI)
    vals = [r["rmb_per_kwh"] for r in ranked]
    bars = ax.bar(range(len(vals)), vals, color=[colour[s] for s in slugs])
    for b, r in zip(bars, ranked, strict=True):
        if r["estimate"]:
            b.set_hatch("//")
    ax.set_xticks(range(len(vals)), [f"{name[r['slug']]}\nbatch {r['batch_size']}"
                                     for r in ranked], fontsize=7)
    elec = ranked[0]["elec_rmb_per_kwh"]  # the scenario's price (its blend if a mix)
    ax.axhline(elec, color="red", ls="--", label=f"electricity {elec:.3g} RMB/kWh")
    ax.legend(fontsize=7)
    ax.set_ylabel("RMB per kWh sold as tokens (at the utility meter)")
    figs.append(plots.Plot(
        f"lb_{tag}_rmb", plots._save(fig, out / f"{tag}_rmb_per_kwh.png"),
        "What a kWh earns at each system's best batch",
        f"RMB per kWh at the utility meter under the '{scenario}' scenario, each system at "
        "the batch where its tokens/J is highest; hatched bars are estimated energy, the red "
        "line is what the kWh costs.",
        [name[s] for s in slugs]))
    return figs


def _ranking_table(key, ranked, ref, subs_by_slug) -> str:
    head = ["Rank", "System", "GPU", "Engine", "Best output tokens/J", "At batch",
            "Output tokens/s per GPU", "Tokens/s per user", "RMB per kWh at the meter",
            "Energy", "Signing key"]
    rows = []
    for i, r in enumerate(ranked, 1):
        fps = sorted({s.key_fingerprint or "unsigned" for s in subs_by_slug[r["slug"]]})
        cls = "est" if r["estimate"] else ""
        energy = f"{r['method']}, {r['scope']}" + (" (not measured)" if r["estimate"] else "")
        if r["contended"]:
            energy += "; another process shared a GPU"
        rows.append(
            f"<tr class='{cls} ranked' data-model='{P.esc(key[0])}' "
            f"data-engine='{P.esc(r['engine'])}' data-gpu='{P.esc(r['gpu_names'])}'>"
            f"<td class='n' data-v='{i}'>{i}</td>"
            f"<td><a href='systems/{P.esc(r['slug'])}/report.html'>{P.esc(r['vendor'])} / "
            f"{P.esc(r['system'])}</a></td>"
            f"<td>{r['gpus']} × {P.esc(r['gpu_names'])}</td>"
            f"<td>{P.esc(r['engine'])}, {P.esc(r['dtype'])}</td>"
            + P.num_td(r["tokens_per_j"], 4)
            + P.num_td(r["batch_size"], 6, str(r["batch_size"]))
            + P.num_td(r["tokens_per_s"], 4) + P.num_td(r["tokens_per_s_per_user"], 3)
            + P.num_td(r["rmb_per_kwh"], 3)
            + f"<td>{P.esc(energy)}</td><td><code>{P.esc(', '.join(fps))}</code></td></tr>")
    if ref is not None and len(ref):
        for r in ref.sort_values("output_tokens_per_j", ascending=False).head(12).to_dict(
                "records"):
            tps = r.get("output_tokens_per_s")
            per_user = tps / r["batch_size"] if tps == tps and r["batch_size"] else None
            rows.append(
                f"<tr class='ref' data-model='{P.esc(key[0])}' data-engine='' "
                f"data-gpu='{P.esc(r['device_name'])}'><td data-v=''>reference</td>"
                f"<td>published: {P.esc(r['source'].removeprefix('external:'))} "
                f"({P.esc(r['model'])}), not a submission</td>"
                f"<td>{P.esc(P.fmt(r.get('num_devices')))} × {P.esc(r['device_name'])}</td>"
                f"<td>{P.esc(r.get('dtype'))}</td>" + P.num_td(r["output_tokens_per_j"], 4)
                + P.num_td(r["batch_size"], 6, str(int(r["batch_size"])))
                + P.num_td(tps, 4) + P.num_td(per_user, 3) + "<td>—</td>"
                f"<td>{P.esc(r.get('energy_method'))}, {P.esc(r.get('scope'))}</td>"
                "<td>—</td></tr>")
    return ("<div class='wide'><table class='sortable ranking'><thead><tr>"
            + "".join(f"<th>{P.esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div>")


def _submissions_table(subs: list[Submission]) -> str:
    head = ["Vendor", "System", "Run", "Verdict", "Rules", "Signature", "Key fingerprint"]
    rows = []
    for s in subs:
        if s.ok:
            verdict = (f"<span class='ok'>valid</span> — <a href='systems/{P.esc(s.slug)}/"
                       "report.html'>report</a>")
        else:
            f = s.failing[0]
            verdict = (f"<span class='bad'>FAILS rule <b>{P.esc(f.rule)}</b></span>: "
                       f"{P.esc(f.reason[:300])} — not ranked")
        rules = " ".join(f"<span class='{'ok' if c.ok else 'bad'}' title='{P.esc(c.reason)}'>"
                         f"{P.esc(c.rule)} {'✓' if c.ok else '✗'}</span>" for c in s.checks)
        rows.append(f"<tr class='{'valid' if s.ok else 'failing'}'>"
                    f"<td>{P.esc(s.vendor)}</td><td>{P.esc(s.system)}</td>"
                    f"<td>{P.esc(s.run)}</td><td>{verdict}</td><td>{rules}</td>"
                    f"<td>{P.esc(s.signature)}</td>"
                    f"<td><code>{P.esc(s.key_fingerprint or '—')}</code></td></tr>")
    return ("<div class='wide'><table id='submissions' class='sortable'><thead><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div>")


FILTER_JS = """
(function(){var f=document.getElementById('filters');if(!f)return;f.hidden=false;
function apply(){var want={};f.querySelectorAll('select').forEach(function(s){
 want[s.name]=s.value;});
 document.querySelectorAll('[data-model]').forEach(function(el){var show=true;
  for(var k in want){if(want[k]&&(el.dataset[k]||'').split(', ').indexOf(want[k])<0&&
   !(k!=='model'&&el.tagName==='SECTION'))show=false;}el.hidden=!show;});}
f.addEventListener('change',apply);})();
"""


def _filters(curves: list[dict]) -> str:
    def options(name, label, values):
        opts = "".join(f"<option value='{P.esc(v)}'>{P.esc(v)}</option>"
                       for v in sorted(set(values)))
        return (f"<label>{label} <select name='{name}'><option value=''>all</option>{opts}"
                "</select></label> ")

    gpus = [g for c in curves for g in c["gpu_names"].split(", ")]
    engines = [e for c in curves for e in c["engine"].split(", ")]
    return ("<form id='filters' hidden>" + options("model", "Model", [c["model"] for c in
                                                                      curves])
            + options("engine", "Engine", engines) + options("gpu", "GPU", gpus) + "</form>")


def build_site(submissions_dir: Path | str, out_dir: Path | str,
               scenario: str = "china-grid-reference", extra_tables=()) -> tuple[Path, list]:
    """Check every submission, write a report per system and the index; returns
    (index.html, submissions).

    Raises:
        BenchError: no submissions folder, an unwritable or misplaced --out, a missing
            table, an unknown scenario (all checked before any work).
    """
    from bench import econ
    from bench.report import check_out_dir, render_report

    root = Path(submissions_dir)
    if not root.is_dir():
        raise BenchError(f"{root}: no such folder of submissions")
    out = Path(out_dir)
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise BenchError(f"--out {out} is inside the submissions folder; choose another")
    for t in extra_tables:
        if not Path(t).is_file():
            raise BenchError(f"{t}: no such table file")
    econ.load(scenario)
    check_out_dir(out)
    systems, plot_dir = check_out_dir(out / "systems"), check_out_dir(out / "plots")

    subs = find_submissions(root)
    by_slug: dict = {}
    for s in subs:
        if s.ok:
            by_slug.setdefault(s.slug, []).append(s)
    # a page left by an earlier build must not outlive its system's validity
    for old in systems.iterdir():
        if old.name not in by_slug and old.is_dir() and not old.is_symlink() and \
                (old / "report.html").is_file():
            shutil.rmtree(old)
    for old in plot_dir.glob("*.png"):
        old.unlink()
    for slug, group in by_slug.items():
        sys_out = check_out_dir(systems / slug)
        render_report([s.path / "result.json" for s in group], [s.doc for s in group],
                      [s.path for s in group], sys_out, scenario, extra_tables,
                      title=f"{group[0].vendor} / {group[0].system}",
                      back_link="../../index.html")
    df = _system_table(subs, scenario)
    curves = system_curves(df) if len(df) else []
    ranking = rank(curves)
    n_ok = sum(s.ok for s in subs)
    body = [f"<p>{len(subs)} submission(s) in <code>{P.esc(root.name)}</code>: "
            f"<b>{n_ok} valid</b>, <a href='#all' class='bad'><b>{len(subs) - n_ok} failing"
            "</b></a> (listed with the rule they fail, never ranked). Systems are compared on "
            "the same model and the same input and output lengths. Prices: the "
            f"'{P.esc(scenario)}' scenario.</p>"]
    if curves:
        body.append(_filters(curves))
    for key, ranked in ranking.items():
        ref = _references(extra_tables, key[0])
        figs = _group_plots(key, curves, ranked, ref, plot_dir, scenario)
        body.append(f"<section class='group' data-model='{P.esc(key[0])}'>"
                    f"<h2>{P.esc(key[0])} — {key[1]} input / {key[2]} output tokens</h2>"
                    "<p class='how'>Ranked by output tokens per joule at each system's best "
                    "batch (the median over its GPUs). Published reference rows are shown "
                    "for comparison and are not ranked.</p>"
                    + _ranking_table(key, ranked, ref, by_slug)
                    + "".join(P.plot_section(f, level=3) for f in figs) + "</section>")
    if not ranking:
        body.append("<p>No valid submission to rank.</p>")
    if extra_tables and not any(_references(extra_tables, k[0]) is not None and len(
            _references(extra_tables, k[0])) for k in ranking):
        body.append("<p class='note'>The published tables given with --with have no row for "
                    "a model submitted here, so no reference point is shown.</p>")
    body += ["<h2 id='all'>Every submission and its checks</h2>",
             "<p class='how'>Each submission is checked by <code>bench validate</code>'s rules "
             "(schema, hashes and signature, figures recomputed, trace, physics, provenance, "
             "estimates) and by the leaderboard's own rule that its manifest names its folder. "
             "The key fingerprint is the first 16 hex digits of the SHA-256 of the raw ed25519 "
             "public key: a valid signature shows the files are unchanged since signing; "
             "whose key it is, is for you to trust.</p>", _submissions_table(subs)]
    html = P.page("joulebench leaderboard", body, sub="Tokens per joule of submitted systems, "
                  "checked and compared").replace("</body>", f"<script>{FILTER_JS}</script>"
                                                  "</body>")
    index = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(index)
    return index, subs

