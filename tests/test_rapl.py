"""RAPL from a fake powercap tree: discovery, scopes, wraparound, unreadable zones."""

import pytest

from bench.devices import rapl


def make_zone(root, name, zone, energy_uj, max_uj=1000):
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(zone + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def test_discovers_package_and_dram_skips_core(tmp_path):
    make_zone(tmp_path, "intel-rapl:0", "package-0", 10)
    make_zone(tmp_path, "intel-rapl:0:0", "core", 5)
    make_zone(tmp_path, "intel-rapl:0:1", "dram", 7)
    srcs, why = rapl.sources(tmp_path)
    assert why is None
    assert sorted((s.zone.name, s.scope) for s in srcs) == [("dram", "dram"),
                                                            ("package-0", "cpu")]


def test_wraparound_is_unwrapped(tmp_path):
    d = make_zone(tmp_path, "intel-rapl:0", "package-0", 900, max_uj=1000)
    (src,), _ = rapl.sources(tmp_path)
    e0 = src.read_j()
    (d / "energy_uj").write_text("100\n")  # wrapped: 900 -> 1000 -> 100
    e1 = src.read_j()
    assert e1 - e0 == pytest.approx(200e-6)


def test_unreadable_gives_reason(tmp_path):
    d = make_zone(tmp_path, "intel-rapl:0", "package-0", 1)
    (d / "energy_uj").unlink()
    srcs, why = rapl.sources(tmp_path)
    assert srcs == [] and "not readable" in why


def test_absent_powercap(tmp_path):
    srcs, why = rapl.sources(tmp_path / "nope")
    assert srcs == [] and "does not exist" in why
