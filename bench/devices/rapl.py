"""CPU package and DRAM energy from Linux powercap (RAPL), with counter wraparound."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.errors import NoSensor, SensorError

POWERCAP_ROOT = Path("/sys/class/powercap")


@dataclass(frozen=True)
class RaplZone:
    """One readable RAPL zone (package-N or dram) of the powercap tree."""

    path: Path
    name: str
    max_energy_range_uj: int

    @property
    def scope(self) -> str:
        """``dram`` for DRAM zones, ``cpu`` for packages."""
        return "dram" if self.name.startswith("dram") else "cpu"


def _read_int(path: Path) -> int:
    with open(path, encoding="ascii") as f:
        return int(f.read().strip())


def discover(root: Path | str = POWERCAP_ROOT) -> tuple[list[RaplZone], str | None]:
    """Find readable package and DRAM zones.

    Returns:
        (zones, reason): the zones, and where there are none the reason why.
        Core/uncore subzones are skipped: they are inside the package figure.
    """
    root = Path(root)
    if not root.is_dir():
        return [], f"no powercap interface ({root} does not exist)"
    zones: list[RaplZone] = []
    unreadable: list[str] = []
    for zdir in sorted(root.glob("intel-rapl:*")):
        name_file = zdir / "name"
        if not name_file.is_file():
            continue
        name = name_file.read_text(encoding="ascii").strip()
        if not (name.startswith("package") or name.startswith("dram")):
            continue
        try:
            _read_int(zdir / "energy_uj")
            max_uj = _read_int(zdir / "max_energy_range_uj")
        except (OSError, ValueError) as exc:
            unreadable.append(f"{zdir.name}: {exc.__class__.__name__}")
            continue
        zones.append(RaplZone(zdir, name, max_uj))
    if zones:
        return zones, None
    if unreadable:
        return [], "RAPL counters not readable (" + "; ".join(unreadable) + "; needs root)"
    return [], f"no RAPL zones under {root}"


class RaplSource:
    """A cumulative energy reading in J from one RAPL zone, unwrapping its counter.

    The kernel's counter wraps at ``max_energy_range_uj``; each read that sees a smaller
    value than the last adds one range. Reads must come at least once per wrap period
    (minutes at hundreds of watts), which windows of seconds always do.
    """

    method = "counter"

    def __init__(self, zone: RaplZone) -> None:
        self.zone = zone
        self.name = f"rapl-{zone.name}"
        self.device = zone.name
        self.scope = zone.scope
        self.description = f"RAPL {zone.name} counter ({zone.path})"
        self._last_uj: int | None = None
        self._wraps = 0

    def read_j(self) -> float:
        """Cumulative energy in J since this source was made (wraparound unwrapped)."""
        try:
            raw = _read_int(self.zone.path / "energy_uj")
        except OSError as exc:
            raise SensorError(f"{self.name}: {exc}") from exc
        if self._last_uj is not None and raw < self._last_uj:
            self._wraps += 1
        self._last_uj = raw
        return (raw + self._wraps * self.zone.max_energy_range_uj) * 1e-6


def sources(root: Path | str = POWERCAP_ROOT) -> tuple[list[RaplSource], str | None]:
    """RAPL energy sources for every readable zone, or none and the reason."""
    if os.name != "posix":
        raise NoSensor("RAPL is Linux only")
    zones, reason = discover(root)
    return [RaplSource(z) for z in zones], reason
