"""Reports: every PNG exists at its size and is not blank; the HTML is self-contained."""

import base64
import json
import re

import numpy as np
import pytest

from bench.cli import main
from bench.report import PLOTS


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "run"
    assert main(["run", "--gpu", "none", "--batch", "1,2", "--input-len", "8",
                 "--output-len", "4", "--min-window-s", "0.2", "--repeats", "2", "--quiet",
                 "--report", "--out", str(out)]) == 0
    return out


def png_pixels(path):
    import matplotlib.image as mpimg

    return mpimg.imread(path)


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


def test_report_command_with_published_points(cpu_run, tmp_path, capsys):
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
    assert (tmp_path / "r" / "report.html").exists()
    assert main(["report", str(tmp_path / "empty-nothing")]) == 2


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
    assert page.exists()


def test_report_opens_in_headless_chromium(cpu_run, tmp_path):
    import shutil
    import subprocess
    from pathlib import Path

    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium is not installed (apt-get install chromium)")
    script = Path(__file__).resolve().parent.parent / "scripts" / "report_screenshot.sh"
    shot = tmp_path / "shot.png"
    p = subprocess.run(["bash", str(script), str(cpu_run / "report" / "report.html"),
                        str(shot)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    img = png_pixels(shot)
    assert img.shape[0] >= 2000
    # the plots are drawn: the screenshot has more than a page of plain text
    assert float(np.std(img[..., :3])) > 0.1
