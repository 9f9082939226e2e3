"""The host CPU: what it is, and an energy estimate where no RAPL counter is readable."""

from __future__ import annotations

import os
import platform
import time

# Assumed average power of one busy logical CPU (hardware thread), in W. Server parts run
# about 2-4 W per thread at TDP (EPYC 9654: 360 W / 192; Xeon 8480+: 350 W / 112), desktop
# parts about 4 W (125 W / 32). An assumption, not a measurement: results made from it are
# labelled energy_method = "estimate" everywhere they appear.
DEFAULT_W_PER_LOGICAL_CPU = 4.0
# Relative uncertainty stated for the estimate. The true figure can be off by more.
ESTIMATE_RELATIVE_UNCERTAINTY = 0.5


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo, or platform.processor() elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def logical_cpu_count() -> int:
    """Logical CPUs this process may run on (affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cpu_info() -> dict:
    """Provenance facts about the host CPU."""
    return {
        "model": cpu_model_name(),
        "logical_cpus": logical_cpu_count(),
        "machine": platform.machine(),
    }


class CpuTimeEstimateSource:
    """Estimated CPU energy: assumed watts per logical CPU x this process's CPU seconds.

    The cumulative reading is ``w_per_logical_cpu * process_cpu_time_s``; a window's
    energy is the difference at its edges. It counts only this process (all its
    threads), not other load on the machine and not idle power.
    """

    scope = "cpu"
    method = "estimate"

    def __init__(self, w_per_logical_cpu: float = DEFAULT_W_PER_LOGICAL_CPU) -> None:
        if not w_per_logical_cpu > 0:
            raise ValueError("w_per_logical_cpu must be positive")
        self.w_per_logical_cpu = float(w_per_logical_cpu)
        self.name = "cpu-estimate"
        self.device = "cpu"
        self.description = (
            f"estimate: {self.w_per_logical_cpu:g} W per busy logical CPU x process CPU "
            f"time (assumed, not measured; +/-{ESTIMATE_RELATIVE_UNCERTAINTY:.0%} stated)"
        )

    def read_j(self) -> float:
        """Cumulative estimated energy of this process in J."""
        return self.w_per_logical_cpu * time.process_time()
