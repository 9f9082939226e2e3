"""The empirical table and ML.ENERGY import: columns, round trips, known published figures."""

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.results import mlenergy, table
from bench.results.table import COLUMN_NAMES, load_table

MLENERGY = Path(__file__).resolve().parents[2] / "shared" / "reference" / "mlenergy"
PUBLISHED = MLENERGY.parent / "published_tokens_per_joule.csv"


def fake_doc(run_id="r1"):
    rep = {"duration_s": 2.0, "output_tokens": 100, "input_tokens": 50,
           "energy": {"gpu": {"energy_j": 20.0, "method": "counter", "reason": None}}}
    from bench.results import figures as F

    figures, unc = F.cell_figures([rep, dict(rep, energy={"gpu": {"energy_j": 25.0}})],
                                       "gpu")
    return {"schema": "joulebench/result", "schema_version": 1, "run_id": run_id,
            "provenance": {"harness": {"version": "0.1.0", "commit": "abc"}},
            "idle": [{"device": "gpu0", "power_w": 70.0}],
            "cells": [{"cell_id": "gpu0/m/bf16/b4/i8/o4", "device": "gpu0", "device_name": "G",
                       "model": "m", "dtype": "bf16", "batch_size": 4, "input_len": 8,
                       "output_len": 4, "status": "ok", "scope": "gpu",
                       "energy_method": "counter", "figures": figures, "uncertainty": unc}]}


def test_rows_have_every_column_and_known_figures(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "result.json").write_text(json.dumps(fake_doc()))
    df = load_table([tmp_path])
    assert tuple(df.columns) == COLUMN_NAMES
    row = df.iloc[0]
    assert row["output_tokens_per_j"] == pytest.approx((100 / 20 + 100 / 25) / 2)
    assert row["idle_power_w"] == 70.0 and row["git_commit"] == "abc"
    assert row["table_schema_version"] == table.TABLE_SCHEMA_VERSION


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_round_trip_through_files(tmp_path, fmt):
    (tmp_path / "result.json").write_text(json.dumps(fake_doc()))
    out = tmp_path / f"t.{fmt}"
    assert main(["table", str(tmp_path / "result.json"), "--out", str(out)]) == 0
    if fmt == "json":
        back = pd.DataFrame(json.loads(out.read_text()))
    else:
        back = load_table([out])
    assert list(back.columns) == list(COLUMN_NAMES)
    assert back["output_tokens_per_j"].iloc[0] == pytest.approx(4.5)


def test_bad_inputs_are_one_line(tmp_path, capsys):
    (tmp_path / "x.json").write_text("{not json")
    (tmp_path / "y.json").write_text('{"schema": "other"}')
    for bad in ("x.json", "y.json", "missing"):
        assert main(["table", str(tmp_path / bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("bench table: error:")
    assert main(["table", str(tmp_path / "y.json"), "--format", "parquet"]) == 2


def test_bad_mlenergy_file(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"configurations": [{"gpu_model": "H100"}]}))
    with pytest.raises(BenchError, match="energy_per_token_joules"):
        mlenergy.rows_from_mlenergy(p)


@pytest.mark.skipif(not MLENERGY.is_dir(), reason="../shared/reference/mlenergy is absent")
def test_mlenergy_import_matches_the_published_figures(tmp_path, capsys):
    files = sorted(MLENERGY.glob("*.json"))
    assert main(["import", "mlenergy", *map(str, files)]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert rows and all(r["source"] == "external:ml.energy" for r in rows)
    with open(PUBLISHED) as f:
        published = [r for r in csv.DictReader(f) if r["source"] == "ML.ENERGY leaderboard v3"]
    checked = 0
    for pub in published:
        model = pub["model"]
        match = [r for r in rows if r["model"].endswith(model) and r["device_name"] ==
                 pub["hardware"] and r["batch_size"] == pub["batch"]
                 and r["num_devices"] == pub["gpus"]]
        if match:
            assert float(match[0]["output_tokens_per_j"]) == pytest.approx(
                float(pub["tokens_per_j"]), rel=0.01)
            checked += 1
    assert checked >= 5
    out = tmp_path / "ml.parquet"
    assert main(["import", "mlenergy", *map(str, files), "--out", str(out)]) == 0
    both = load_table([out])
    assert len(both) == len(rows)
