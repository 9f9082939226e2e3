"""Reports: every plot present and not blank, the page self-contained, and what a reader sees
(summary figures, per-GPU lines, the interval's real coverage) equal to the document."""

import base64
import copy
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.report import PLOTS

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "report_screenshot.sh"
TAB10_BLUE, TAB10_ORANGE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "run"
    assert main(["run", "--gpu", "none", "--batch", "1,2", "--input-len", "8",
                 "--output-len", "4", "--min-window-s", "0.2", "--repeats", "2", "--quiet",
                 "--report", "--out", str(out)]) == 0
    return out


def gpu_document(cpu_run: Path, out: Path, scales=(1.0, 0.8)) -> dict:
    """The CPU run hand-edited into GPUs of the same name, gpu<i> at scales[i] x the
    tokens/J (for rendering only: it does not validate)."""
    doc = json.loads((cpu_run / "result.json").read_text())
    cells = []
    for idx, scale in enumerate(scales):
        for c in copy.deepcopy(doc["cells"]):
            c.update(device=f"gpu{idx}", device_name="NVIDIA H200", scope="gpu",
                     energy_method="counter", contended=idx == 1,
                     cell_id=c["cell_id"].replace("cpu/", f"gpu{idx}/"))
            for r in c["repeats"]:
                e = r["energy"].pop("cpu")
                e.update(method="counter", energy_j=e["energy_j"] / scale)
                r["energy"]["gpu"] = e
            c["figures"]["output_tokens_per_j"] *= scale
            c["roofline"]["fraction"] *= scale
            u = c["uncertainty"]
            u["output_tokens_per_j_min"] *= scale
            u["output_tokens_per_j_max"] *= scale
            u["output_tokens_per_j_ci"] = [x * scale for x in u["output_tokens_per_j_ci"]]
            cells.append(c)
    doc["cells"] = cells
    doc["devices"] = [{"kind": "cuda", "index": i, "name": "NVIDIA H200", "uuid": f"GPU-{i}",
                       "power_limit_w": 700.0} for i in range(len(scales))]
    doc["idle"] = [{"device": f"gpu{i}", "power_w": 70.0} for i in range(len(scales))]
    out.mkdir(parents=True)
    (out / "result.json").write_text(json.dumps(doc))
    return doc


class Tables(HTMLParser):
    """Each <table id=...>'s rows as lists of (text, data-v) of its cells."""

    def __init__(self):
        super().__init__()
        self.tables, self._cur, self._cell, self._row = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._cur = self.tables.setdefault(a.get("id") or f"t{len(self.tables)}", [])
        elif tag == "tr" and self._cur is not None:
            self._row = []
            self._cur.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ["", a.get("data-v")]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append((self._cell[0].strip(), self._cell[1]))
            self._cell = None
        elif tag == "table":
            self._cur = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data


def tables_of(html: str) -> dict:
    p = Tables()
    p.feed(html)
    return p.tables


def browser() -> str:
    b = shutil.which("chromium") or shutil.which("chromium-browser")
    if not b:
        pytest.skip("chromium is not installed (apt-get install chromium); "
                    "the browser checks cannot run here")
    return b


def chromium_dom(page: Path) -> str:
    """The page's DOM after headless Chromium rendered it (and ran its scripts)."""
    with tempfile.TemporaryDirectory() as profile:
        p = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu",
                            "--no-first-run", "--disable-background-networking",
                            f"--user-data-dir={profile}", "--dump-dom",
                            f"file://{page.resolve()}"],
                           capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def png_pixels(path):
    import matplotlib.image as mpimg

    return mpimg.imread(path)


def colour_pixels(img, rgb) -> int:
    target = np.array(rgb) / 255.0
    return int((np.abs(img[..., :3] - target).max(axis=-1) < 0.02).sum())


def test_run_report_writes_every_plot(cpu_run):
    rep = cpu_run / "report"
    for name in PLOTS:
        img = png_pixels(rep / f"{name}.png")
        assert img.shape[:2] == (500, 800), name
        assert float(np.std(img[..., :3])) > 0.01, f"{name} is blank"
    page = (rep / "report.html").read_text()
    imgs = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(imgs) == len(PLOTS)
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    assert "http://" not in page and "https://" not in page  # no network
    assert "Estimated energy" in page  # the CPU run is an estimate, and says so
    # human titles, not file names
    assert "Energy efficiency against batch size" in page
    assert "<h2>tokens per j vs batch</h2>" not in page


def test_report_command_with_published_points(cpu_run, tmp_path):
    table = tmp_path / "pub.csv"
    from bench.results.table import COLUMN_NAMES

    row = {c: None for c in COLUMN_NAMES}
    row.update(table_schema_version=1, source="external:test", model="org/tiny-llama-Instruct",
               device_name="H100", batch_size=2, status="ok", scope="gpu",
               energy_method="counter", output_tokens_per_j=5.0, output_tokens_per_s=100.0)
    import pandas as pd

    pd.DataFrame([row]).to_csv(table, index=False)
    assert main(["report", str(cpu_run), "--with", str(table), "--out",
                 str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert "reference: H100 org/tiny-llama-Instruct (test, published)" in page
    cells = tables_of(page)["cells"]
    assert any("external:test (published)" in t for r in cells for t, _ in r)


def test_report_bad_input_is_one_line_exit_2(cpu_run, tmp_path, capsys):
    assert main(["report", str(tmp_path / "empty-nothing")]) == 2
    afile = tmp_path / "file"
    afile.write_text("x")
    assert main(["report", str(cpu_run), "--out", str(afile)]) == 2
    assert main(["report", str(cpu_run), "--out", str(afile / "sub")]) == 2
    assert main(["report", str(cpu_run), "--with", str(tmp_path / "no.csv"), "--out",
                 str(tmp_path / "r")]) == 2
    bad = json.loads((cpu_run / "result.json").read_text())
    bad["provenance"] = ["not", "an", "object"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "result.json").write_text(json.dumps(bad))
    assert main(["report", str(tmp_path / "bad"), "--out", str(tmp_path / "rb")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 5 and all(e.startswith("bench report: error: ") for e in err)
    assert not (tmp_path / "r" / "tokens_per_j_vs_batch.png").exists()  # checked first


def test_interval_coverage_is_the_order_statistics():
    from bench.report.page import interval_coverage

    # [min, max] of 3: P(all three on one side of the median) = 2/8, so 75%
    assert interval_coverage([1.0, 2.0, 3.0], [1.0, 3.0]) == 0.75
    assert interval_coverage([1.0, 2.0], [1.0, 2.0]) == 0.5
    # 2nd to 4th of 5: P(2 <= below-median count <= 3) = (10 + 10) / 32
    assert interval_coverage([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0]) == 20 / 32
    assert interval_coverage([1.0, 2.0, 3.0], [1.5, 3.0]) is None  # interpolated end


def test_every_cells_column_has_a_text_or_a_value():
    from bench.report.page import CELL_COLUMNS

    # cells_table relies on it: a column without text is shown and sorted by its value
    assert all(text is not None or value is not None for _, text, value in CELL_COLUMNS)


def test_two_gpu_report_shows_each_gpu_and_the_documents_figures(cpu_run, tmp_path):
    from bench import econ
    from bench.report import make_report

    doc = gpu_document(cpu_run, tmp_path / "two")
    doc["cells"][0]["uncertainty"]["ci_level"] = 0.9  # a document that states its level
    (tmp_path / "two" / "result.json").write_text(json.dumps(doc))
    page = make_report([tmp_path / "two"], tmp_path / "rep")
    html = page.read_text()
    sc = econ.load("china-grid-reference")
    price = sc.prices["small"].value
    meter = sc.value("pue") / sc.value("gpu_share_of_it_power")
    want = {}
    for c in doc["cells"]:
        f = c["figures"]
        if c["device"] not in want or f["output_tokens_per_j"] > want[c["device"]][0]:
            want[c["device"]] = (f["output_tokens_per_j"], c["batch_size"],
                                 f["output_tokens_per_s"])
    assert want["gpu1"][0] == pytest.approx(0.8 * want["gpu0"][0])

    # the per-GPU lines: two legend entries, two colours drawn
    lines = re.search(r"<p class='lines'>Lines: ([^<]*)</p>", html).group(1)
    assert lines == "gpu0 NVIDIA H200 · tiny-llama; gpu1 NVIDIA H200 · tiny-llama"
    img = png_pixels(tmp_path / "rep" / "tokens_per_j_vs_batch.png")
    assert colour_pixels(img, TAB10_BLUE) > 200 and colour_pixels(img, TAB10_ORANGE) > 200
    roof = png_pixels(tmp_path / "rep" / "roofline.png")
    assert colour_pixels(roof, TAB10_BLUE) > 200 and colour_pixels(roof, TAB10_ORANGE) > 200
    assert "2 GPUs named NVIDIA H200 on tiny-llama differ by up to 22.2%" in html.replace(
        "</p>", "")  # (1 - 0.8) / 0.9: max - min over the median of two

    dom = chromium_dom(page)
    summary = tables_of(dom)["summary"]
    head = [t for t, _ in summary[0]]
    rows = {r[0][0]: r for r in summary[1:]}
    assert set(rows) == {"gpu0 NVIDIA H200", "gpu1 NVIDIA H200"}
    for dev, (tpj, batch, tps) in want.items():
        r = {h: cell for h, cell in zip(head, rows[f"{dev} NVIDIA H200"], strict=True)}
        assert float(r["Best output tokens/J"][1]) == pytest.approx(tpj, rel=1e-12)
        assert float(r["Best output tokens/J"][0]) == pytest.approx(tpj, rel=1e-3)
        assert int(r["At batch"][0]) == batch
        assert float(r["Output tokens/s"][1]) == pytest.approx(tps, rel=1e-12)
        rmb = 3.6 * tpj * price / meter  # RMB/kWh = 3.6 x tokens/J x RMB per Mtok, at meter
        assert float(r["RMB per kWh at the meter (china-grid-reference)"][1]) == \
            pytest.approx(rmb, rel=1e-9)
        assert float(r["RMB per kWh at the meter (china-grid-reference)"][0]) == \
            pytest.approx(rmb, rel=1e-2)
        assert r["Energy method"][0] == "counter" and r["Scope"][0] == "gpu"
    # methods: 2 repeats, so the interval is [min, max] with 50% coverage, as stated
    text = re.sub(r"<[^>]+>", "", dom)
    assert "with 2 repeats: the interval of the median is labelled 50%; its ends are " \
        "repeats and its real coverage is 50.0%" in text
    assert "[min, max] of the repeats and covers the true median only 50.0%" in text
    assert "labelled 90%" in text  # a document claiming more than its repeats give
    assert "Contention." in text and "gpu1/" in text
    # the cells table has units in its headers and one row per cell
    cells = tables_of(dom)["cells"]
    assert "Mean power (W)" in [t for t, _ in cells[0]] and len(cells) == 1 + len(doc["cells"])


def test_many_gpus_of_one_name_are_a_median_and_a_band(cpu_run, tmp_path):
    from bench.report import make_report

    gpu_document(cpu_run, tmp_path / "six", scales=(1.0, 0.95, 0.9, 0.85, 0.8, 0.75))
    html = make_report([tmp_path / "six"], tmp_path / "rep").read_text()
    lines = re.findall(r"<p class='lines'>Lines: ([^<]*)</p>", html)
    band = "median of 6 × NVIDIA H200 · tiny-llama (band: lowest to highest GPU)"
    assert lines[0] == band  # tokens/J
    assert band in lines  # and the roofline
    # (1.0 - 0.75) / median(0.875) at every batch
    assert "6 GPUs named NVIDIA H200 on tiny-llama differ by up to 28.6%" in html
    img = png_pixels(tmp_path / "rep" / "tokens_per_j_vs_batch.png")
    assert colour_pixels(img, TAB10_BLUE) > 200 and colour_pixels(img, TAB10_ORANGE) == 0
    rows = tables_of(html)["summary"][1:]
    assert len(rows) == 6  # the summary still gives every GPU


def test_report_opens_in_headless_chromium(cpu_run, tmp_path):
    browser()
    shot = tmp_path / "shot.png"
    p = subprocess.run(["bash", str(SCRIPT), str(cpu_run / "report" / "report.html"),
                        str(shot)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    img = png_pixels(shot)
    assert img.shape[0] >= 2000
    # the plots are drawn: the screenshot has more than a page of plain text
    assert float(np.std(img[..., :3])) > 0.1


def test_report_of_a_gpu_run_draws_the_power_timeline(fake_nvml_dir, tmp_path, monkeypatch):
    from bench import runner
    from bench.devices import Device
    from bench.report import make_report

    monkeypatch.setenv("LD_LIBRARY_PATH", str(fake_nvml_dir))
    monkeypatch.setenv("FAKE_NVML_DEVICES", "base_w=200,amp_w=80,period_s=0.05,"
                       "power_update_ms=0")
    monkeypatch.setenv("JOULEBENCH_MODEL_DEVICE", "cpu")
    monkeypatch.setenv("JOULEBENCH_LOCK_DIR", str(tmp_path))
    cfg = runner.SweepConfig(batch_sizes=(2,), input_lens=(8,), output_lens=(4,),
                             dtype="fp32", min_window_s=0.3, repeats=1, idle_s=0.2,
                             phases=False)
    run = runner.start_run(cfg, [Device("cuda", 0, "NVIDIA H200", "GPU-x")], tmp_path / "g")
    runner.execute(run)
    page = make_report([tmp_path / "g"], tmp_path / "rep")
    img = png_pixels(tmp_path / "rep" / "power_timeline.png")
    assert float(np.std(img[..., :3])) > 0.05
    doc = json.loads((tmp_path / "g" / "result.json").read_text())
    assert doc["cells"][0]["roofline"]["device_spec"] == "H200"
    assert "gpu0 NVIDIA H200 · tiny-llama · batch 2" in page.read_text()
