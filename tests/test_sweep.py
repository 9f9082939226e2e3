"""The sweep model: one precedence (flags > sweep file > per-device defaults), cells, plan."""

import pytest

from bench.devices import Device
from bench.errors import BenchError
from bench.sweep import DEVICE_DEFAULTS, SweepConfig, load_config_file, plan

CPU = Device("cpu", None, "cpu")
GPU0 = Device("cuda", 0, "H200", "GPU-a")
GPU1 = Device("cuda", 1, "H200", "GPU-b")


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    f = tmp_path / "sweep.toml"
    f.write_text('batch_sizes = [2, 8]\nrepeats = 5\nseed = 7\nmodels = ["gpt2"]\n')
    c = SweepConfig.from_sources({"repeats": 4, "seed": None, "dtype": "fp16"}, str(f))
    assert c.repeats == 4  # flag over file
    assert c.seed == 7  # a flag given as None is not given: the file's value stays
    assert c.batch_sizes == (2, 8) and c.models == ("gpt2",)  # file over defaults
    assert c.dtype == "fp16"
    assert c.input_lens == (32,) and c.idle_s == 3.0  # defaults where nothing is given
    assert c.min_window_s is None and c.warmup is None  # per-device: resolved later


def test_resolved_fills_the_device_defaults_and_is_recorded():
    c = SweepConfig()
    cpu = c.resolved("cpu")
    assert (cpu.dtype, cpu.min_window_s, cpu.warmup) == ("fp32", 2.0, 1)
    gpu = c.resolved("cuda")
    # compiling on a GPU: the first call compiles, the second records the CUDA graphs
    assert (gpu.dtype, gpu.min_window_s, gpu.warmup) == ("bf16", 5.0, 2)
    assert SweepConfig(compile=False).resolved("cuda").warmup == 1
    assert SweepConfig(warmup=0).resolved("cuda").warmup == 2  # floor under compile
    assert SweepConfig(warmup=0).resolved("cpu").warmup == 0
    given = SweepConfig(dtype="fp16", min_window_s=0.5, warmup=3).resolved("cuda")
    assert (given.dtype, given.min_window_s, given.warmup) == ("fp16", 0.5, 3)
    assert gpu.is_resolved and not c.is_resolved
    assert SweepConfig.from_dict(gpu.to_dict()) == gpu
    assert DEVICE_DEFAULTS["cuda"].min_window_s == 5.0


def test_plan_groups_by_device_and_model_with_batches_ascending():
    c = SweepConfig(models=("a", "b"), batch_sizes=(4, 1), input_lens=(8,),
                    output_lens=(2, 3)).resolved("cuda")
    cells = plan(c, [GPU0, GPU1])
    assert len(cells) == 2 * 2 * 2 * 2
    ids = [x.cell_id for x in cells[:4]]
    assert ids == ["gpu0/a/bf16/b1/i8/o2", "gpu0/a/bf16/b4/i8/o2",
                   "gpu0/a/bf16/b1/i8/o3", "gpu0/a/bf16/b4/i8/o3"]
    assert {x.device.label for x in cells[8:]} == {"gpu1"}


@pytest.mark.parametrize("text, fragment", [
    ("repeats = '3'\n", "repeats"),
    ("batch_sizes = [1, 'x']\n", "batch_sizes"),
    ("batch_sizes = 4\n", "batch_sizes"),
    ("phases = 1\n", "phases"),
    ("models = 'gpt2'\n", "models"),
    ("bogus = 1\n", "unknown key 'bogus'"),
    ("repeats = [\n", "not valid TOML"),
    ("repeats = 0\n", "repeats must be 1 or more"),
    ("idle_s = -1.0\n", "idle window"),
    ("dtype = 'int3'\n", "unknown dtype"),
])
def test_a_bad_sweep_file_is_one_clear_error(tmp_path, text, fragment):
    f = tmp_path / "s.toml"
    f.write_text(text)
    with pytest.raises(BenchError, match=fragment):
        SweepConfig.from_sources({}, str(f))


def test_missing_sweep_file():
    with pytest.raises(BenchError, match="cannot read sweep file"):
        load_config_file("/nonexistent/sweep.toml")


def test_unknown_flag_key_is_refused():
    with pytest.raises(BenchError, match="unknown sweep setting"):
        SweepConfig.from_sources({"batch": (1,)})
