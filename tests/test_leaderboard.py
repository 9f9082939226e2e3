"""``bench leaderboard``: valid submissions ranked, a tampered one listed with its failing
rule and never ranked, signing keys fingerprinted, the site read in headless Chromium."""

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main

SMALL = ["--gpu", "none", "--input-len", "8", "--output-len", "4", "--min-window-s", "0.2",
         "--repeats", "2", "--quiet"]

_spec = importlib.util.spec_from_file_location(
    "report_tests", Path(__file__).resolve().parent / "test_report.py")
rt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rt)


def _key(path: Path) -> str:
    """Write a new ed25519 private key (PEM); returns the hex of its raw public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    k = Ed25519PrivateKey.generate()
    path.write_bytes(k.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return k.public_key().public_bytes(serialization.Encoding.Raw,
                                       serialization.PublicFormat.Raw).hex()


@pytest.fixture(scope="module")
def subs(tmp_path_factory):
    """Two real runs submitted by two vendors (signed), and a third copy tampered with."""
    base = tmp_path_factory.mktemp("lb")
    runs = {}
    for name, batch in (("a", "1,2"), ("b", "1")):
        runs[name] = base / f"run-{name}"
        assert main(["run", *SMALL, "--batch", batch, "--out", str(runs[name])]) == 0
    dest = base / "submissions"
    pubs = {}
    for vendor, system, run in (("acme", "a1", "a"), ("zenith", "z1", "b"),
                                ("mallory", "m1", "b")):
        pubs[vendor] = _key(base / f"{vendor}.pem")
        assert main(["submit", str(runs[run]), "--vendor", vendor, "--system", system,
                     "--key", str(base / f"{vendor}.pem"), "--dest", str(dest)]) == 0
    tampered = next((dest / "mallory" / "m1").iterdir()) / "result.json"
    doc = json.loads(tampered.read_text())
    for c in doc["cells"]:
        c["figures"]["output_tokens_per_j"] *= 3  # a better number than was measured
    tampered.write_text(json.dumps(doc))
    docs = {v: json.loads(next((dest / v / s).iterdir()).joinpath("result.json").read_text())
            for v, s in (("acme", "a1"), ("zenith", "z1"))}
    return {"dest": dest, "pubs": pubs, "docs": docs, "base": base}


@pytest.fixture(scope="module")
def site(subs):
    import pandas as pd

    from bench.results.table import COLUMN_NAMES

    row = {c: None for c in COLUMN_NAMES}
    row.update(table_schema_version=1, source="external:ml.energy",
               model="org/tiny-llama-Instruct", device_name="H100", num_devices=1,
               batch_size=4, status="ok", scope="gpu", energy_method="counter",
               output_tokens_per_j=50.0, output_tokens_per_s=400.0)
    table = subs["base"] / "published.csv"
    pd.DataFrame([row]).to_csv(table, index=False)
    out = subs["base"] / "site"
    stale = out / "systems" / "gone__old"  # a page from an earlier build: must not survive
    stale.mkdir(parents=True)
    (stale / "report.html").write_text("old")
    assert main(["leaderboard", str(subs["dest"]), "--out", str(out), "--with",
                 str(table)]) == 0
    return out


def _rows(table):
    head = [t for t, _ in table[0]]
    return [dict(zip(head, r, strict=True)) for r in table[1:]]


def _best(doc):
    """(best output tokens/J, its batch) of a one-device document, worked out here."""
    c = max((c for c in doc["cells"] if c["status"] == "ok"),
            key=lambda c: c["figures"]["output_tokens_per_j"])
    return c["figures"]["output_tokens_per_j"], c["batch_size"]


def _check_index(html: str, subs):
    tables = rt.tables_of(html)
    ranking = _rows(next(t for k, t in tables.items() if k != "submissions"))
    ranked = [r for r in ranking if r["Rank"][0] != "reference"]
    best = {v: _best(d) for v, d in subs["docs"].items()}
    order = sorted(best, key=lambda v: -best[v][0])
    assert [r["System"][0].split(" / ")[0] for r in ranked] == order
    assert [r["Rank"][0] for r in ranked] == ["1", "2"]
    for r in ranked:
        vendor = r["System"][0].split(" / ")[0]
        assert float(r["Best output tokens/J"][1]) == pytest.approx(best[vendor][0],
                                                                   rel=1e-12)
        assert int(r["At batch"][0]) == best[vendor][1]
        fp = hashlib.sha256(bytes.fromhex(subs["pubs"][vendor])).hexdigest()[:16]
        assert r["Signing key"][0] == fp
    assert not any("mallory" in r["System"][0] for r in ranking)  # never ranked
    ref = [r for r in ranking if r["Rank"][0] == "reference"]
    assert len(ref) == 1 and "not a submission" in ref[0]["System"][0]
    listed = {r["Vendor"][0]: r for r in _rows(tables["submissions"])}
    assert set(listed) == {"acme", "zenith", "mallory"}
    bad = listed["mallory"]
    assert bad["Verdict"][0].startswith("FAILS rule hashes")
    assert "result.json does not match the manifest's SHA-256" in bad["Verdict"][0]
    assert "not ranked" in bad["Verdict"][0]
    assert listed["acme"]["Verdict"][0].startswith("valid")
    mfp = hashlib.sha256(bytes.fromhex(subs["pubs"]["mallory"])).hexdigest()[:16]
    assert listed["mallory"]["Key fingerprint"][0] == mfp


def test_index_ranks_the_valid_and_lists_the_tampered(site, subs):
    html = (site / "index.html").read_text()
    _check_index(html, subs)
    assert "http://" not in html and "https://" not in html
    # one page per valid system, none for the failing one
    assert sorted(p.name for p in (site / "systems").iterdir()) == ["acme__a1", "zenith__z1"]
    assert "acme / a1" in (site / "systems" / "acme__a1" / "report.html").read_text()
    # the index's plots are inline, present and not blank
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(imgs) == 3
    for p in (site / "plots").glob("*.png"):
        img = rt.png_pixels(p)
        assert float(np.std(img[..., :3])) > 0.05, p.name
        assert rt.colour_pixels(img, rt.TAB10_BLUE) > 50, p.name  # the first system drawn


def test_index_in_headless_chromium(site, subs):
    dom = rt.chromium_dom(site / "index.html")
    _check_index(dom, subs)
    assert "<form id=\"filters\">" in dom or "id=\"filters\"" in dom
    assert "id=\"filters\" hidden" not in dom  # the script showed the filters


def test_leaderboard_bad_input_is_one_line_exit_2(subs, tmp_path, capsys):
    assert main(["leaderboard", str(tmp_path / "missing"), "--out", str(tmp_path / "s")]) == 2
    afile = tmp_path / "f"
    afile.write_text("x")
    assert main(["leaderboard", str(subs["dest"]), "--out", str(afile / "s")]) == 2
    assert main(["leaderboard", str(subs["dest"]), "--out", str(subs["dest"] / "site")]) == 2
    assert main(["leaderboard", str(subs["dest"]), "--out", str(tmp_path / "s"),
                 "--scenario", "no-such-scenario"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(e.startswith("bench leaderboard: error: ") for e in err)
    assert not (subs["dest"] / "site").exists()


def test_key_fingerprint_is_sha256_of_the_raw_key():
    from bench.report.leaderboard import key_fingerprint

    raw = bytes(range(32))
    assert key_fingerprint(raw.hex()) == hashlib.sha256(raw).hexdigest()[:16]
    with pytest.raises(ValueError):
        key_fingerprint("abcd")
