"""The ML.ENERGY reference table: contents, provenance, inclusion by default, packaging."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import econ
from bench.cli import main
from bench.results import load_table, reference
from bench.results.table import COLUMN_NAMES

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "reference" / "mlenergy"
if not SHARED.is_dir():  # a worktree sits one level deeper than the main checkout
    SHARED = ROOT.parents[1] / "shared" / "reference" / "mlenergy"


def test_reference_rows_and_columns():
    df = reference.load_reference()
    assert list(df.columns) == list(COLUMN_NAMES)
    assert len(df) == 838 and df["run_id"].nunique() == 50  # PROVENANCE.md
    assert set(df["source"]) == {"external:ml.energy"}
    assert set(df["scope"]) == {"gpu"} and set(df["status"]) == {"ok"}
    assert (df["output_tokens_per_j"] > 0).all()
    assert not df["run_id"].str.contains("text-to-image|text-to-video").any()


def test_provenance_names_repository_commit_and_paper():
    text = (ROOT / "results" / "reference" / "PROVENANCE.md").read_text()
    for needle in ("https://github.com/ml-energy/leaderboard",
                   "0cd52dab897c5d91a45f4d413038f3b8b4251b0f", "2026-02-27",
                   "public/data/models", "The {ML.ENERGY Benchmark}", "NeurIPS"):
        assert needle in text, needle


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/reference/mlenergy is absent")
def test_reference_reproduces_the_published_energy_per_token():
    df = reference.load_reference()
    for f in SHARED.glob("*.json"):
        doc = json.loads(f.read_text())
        rows = df[df["run_id"] == f.name]
        assert len(rows) == len(doc["configurations"])
        for conf in doc["configurations"]:
            r = rows[(rows["device_name"] == conf["gpu_model"])
                     & (rows["num_devices"] == conf["num_gpus"])
                     & (rows["batch_size"] == conf["max_num_seqs"])]
            assert len(r) == 1
            assert r["output_tokens_per_j"].iloc[0] == pytest.approx(
                1 / conf["energy_per_token_joules"], rel=1e-9)


def test_every_reference_model_has_a_price_class():
    df = reference.load_reference()
    for name in econ.builtin_names():
        v = econ.value_per_kwh(df, name)  # raises on a model of unknown size
        assert "unknown" not in set(v["price_class"])


def test_load_table_includes_reference_once(tmp_path):
    assert len(load_table([], include_reference=True)) == 838
    assert len(load_table([])) == 0
    path = tmp_path / "t.csv"
    load_table([], include_reference=True).to_csv(path, index=False)
    both = load_table([path], include_reference=True)
    assert len(both) == 838  # a table that already holds them is not doubled


def test_cli_table_and_econ_include_reference_by_default(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a fresh clone without results/
    assert main(["table"]) == 0
    out = capsys.readouterr().out
    assert len(pd.read_csv(pd.io.common.StringIO(out))) == 838
    assert main(["table", "--no-reference"]) == 0
    assert capsys.readouterr().out.strip() == ",".join(COLUMN_NAMES)
    assert main(["econ", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(rows) == 838 and rows[0]["source"] == "external:ml.energy"
    assert main(["econ", "--no-reference"]) == 2
    assert "no rows" in capsys.readouterr().err


@pytest.mark.slow
def test_reference_is_package_data_of_a_wheel(tmp_path):
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for d in ("bench", "kernels", "results/reference"):
        shutil.copytree(ROOT / d, src / d, ignore=ignore)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(src)], check=True, capture_output=True, timeout=300)
    whl = next(wheels.glob("*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(whl)],
                   check=True, capture_output=True, timeout=300)
    code = ("from bench.results import reference as r; "
            "print(r.reference_path()); print(len(r.load_reference()))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin"},
                       timeout=120)
    assert p.returncode == 0, p.stderr
    where, n = p.stdout.split()
    assert where.startswith(str(target)) and n == "838"


def test_import_skips_diffusion_files_with_a_note(tmp_path, capsys):
    img = tmp_path / "img.json"
    img.write_text(json.dumps({"model_id": "x/flux", "task": "text-to-image", "configurations": [
        {"gpu_model": "H100", "num_gpus": 1, "batch_size": 1, "energy_per_image_joules": 900}]}))
    tok = tmp_path / "tok.json"
    tok.write_text(json.dumps({"model_id": "x/m-8B", "task": "chat", "configurations": [
        {"gpu_model": "H100", "num_gpus": 2, "max_num_seqs": 64, "energy_per_token_joules": 0.25,
         "output_throughput_tokens_per_sec": 1000.0, "avg_power_watts": 250.0}]}))
    assert main(["import", "mlenergy", str(img), str(tok)]) == 0
    out, err = capsys.readouterr()
    rows = pd.read_csv(pd.io.common.StringIO(out))
    assert len(rows) == 1 and rows["output_tokens_per_j"].iloc[0] == 4.0  # 1 / 0.25
    assert rows["num_devices"].iloc[0] == 2
    assert err.count("skipped") == 1 and "text-to-image" in err
