"""The runner's GPU path with the stand-in NVML: the model runs on the CPU, energy is the GPU's."""

import pytest

from bench import runner
from bench.devices import Device


def gpu_env(monkeypatch, fake_nvml_dir, spec):
    """The worker processes load the stand-in by name and run the model on the CPU."""
    monkeypatch.setenv("LD_LIBRARY_PATH", str(fake_nvml_dir))
    monkeypatch.setenv("FAKE_NVML_DEVICES", spec)
    monkeypatch.setenv("JOULEBENCH_MODEL_DEVICE", "cpu")
    monkeypatch.setenv("JOULEBENCH_LOCK_DIR", str(fake_nvml_dir))


def test_gpu_cells_use_the_sampled_counter_and_idle_baseline(fake_nvml, fake_nvml_dir,
                                                             monkeypatch, tmp_path):
    fake_nvml("base_w=250,update_ms=100")
    gpu_env(monkeypatch, fake_nvml_dir, "base_w=250,update_ms=100")
    dev = Device("cuda", 0, "Fake GPU 0", "GPU-fake")
    cfg = runner.SweepConfig(batch_sizes=(1, 2), input_lens=(8,), output_lens=(4,),
                             dtype="fp32", min_window_s=0.5, repeats=2, idle_s=0.5)
    run = runner.start_run(cfg, [dev], tmp_path / "run")
    runner.execute(run)
    doc = run.document("complete")
    (idle,) = doc["idle"]
    assert idle["power_w"] == pytest.approx(250, rel=5e-3) and idle["method"] == "counter"
    for cell in doc["cells"]:
        assert cell["status"] == "ok" and cell["scope"] == "gpu"
        assert cell["energy_method"] == "counter"
        # constant 250 W: mean power is known, so tokens/J = tokens/s / 250. Windows here
        # are 0.5 s while torch loads both cores, so sampling jitter of a few ms at the
        # counter's updates allows ~1% (the 0.1% figure holds for 2 s windows).
        f = cell["figures"]
        assert f["mean_power_w"] == pytest.approx(250, rel=1e-2)
        assert f["output_tokens_per_j"] == pytest.approx(f["output_tokens_per_s"] / 250,
                                                         rel=1e-2)
        ph = cell["phases"]
        assert ph["ttft_s"] > 0
        tl, sub = ph["timeline"], ph["subtraction"]
        assert tl["reason"] is None and sub["reason"] is None
        # constant power: the timeline's phases add up to 250 W x the calls' time
        calls = [c for r in cell["repeats"] for c in r["calls_ns"]]
        busy_s = sum((e - s) * 1e-9 for s, _, e in calls)
        b, n_in, n_out = cell["batch_size"], 8, 4
        total = len(calls) * b * (tl["prefill_j_per_input_token"] * n_in
                                  + tl["decode_j_per_output_token"] * (n_out - 1))
        assert total == pytest.approx(250 * busy_s, rel=1e-2)
        # subtraction, by hand from the windows: a prefill-only call's energy, and a full
        # call's energy minus it per decode token (its sign is not asserted: with both
        # cores loaded a prefill-only window can run slower per call than the repeats)
        pw = sub["prefill_window"]
        e_pre = pw["energy"]["gpu"]["energy_j"] / pw["generate_calls"]
        e_calls = sorted(r["energy"]["gpu"]["energy_j"] / r["generate_calls"]
                         for r in cell["repeats"])
        e_call = (e_calls[0] + e_calls[1]) / 2  # the median of two repeats
        assert sub["prefill_j_per_input_token"] == pytest.approx(e_pre / (b * n_in), rel=1e-9)
        assert sub["decode_j_per_output_token"] == pytest.approx(
            (e_call - e_pre) / (b * (n_out - 1)), rel=1e-9)
        assert e_pre > 0 and e_call > 0
        assert cell["roofline"]["fraction"] is None  # "Fake GPU 0" is in no device table
        assert "incremental_output_tokens_per_j" in f and cell["idle_power_w"] > 0
        for rep in cell["repeats"]:
            (gpu,) = [r for r in rep["readings"] if r["scope"] == "gpu"]
            st = gpu["stats"]
            assert st["counter_edges"] == "fitted"  # refreshes on their fitted 100 ms grid
            assert st["counter_period_s"] == pytest.approx(0.1, rel=1e-3)
            # constant power: the interval holds the truth, 250 W x the window
            true_j = 250 * rep["duration_s"]
            assert st["energy_low_j"] <= true_j * (1 + 1e-9) + 1e-3
            assert st["energy_high_j"] >= true_j * (1 - 1e-9) - 1e-3
            assert st["edge_bound_j"] == pytest.approx(
                max(gpu["energy_j"] - st["energy_low_j"], st["energy_high_j"] - gpu["energy_j"]))
            assert gpu["stats"]["samples"] > 400
