"""How many local worker nodes may start at once: what this machine can start in parallel.

Every local node shares this machine's CPUs. One `ray start` of a worker is
CPU-bound for a few seconds (Python imports of the CLI, the dashboard agent,
the runtime-env agent and the log monitor, the raylet); started ten at a time
on two cores, they all come up late together, and none serves a task until
then. Started a few at a time, the first ones serve tasks within seconds and
the last one is no later (the CPU work is the same, only its order changes).

The window is the number of CPUs this process may use (its affinity mask,
capped by a cgroup v2 ``cpu.max`` quota): what the machine can run in
parallel. ``RAYSCALE_PARALLEL_STARTS`` overrides it (``0``: no limit, every
launch starts at once, as before). bench/seeds_vs_ray.py measured the choice.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

PARALLEL_STARTS_ENV = "RAYSCALE_PARALLEL_STARTS"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


class PacingError(ValueError):
    """A bad ``RAYSCALE_PARALLEL_STARTS``."""


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup CPU quota."""
    cpus = len(os.sched_getaffinity(0)) or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    try:
        limit = math.ceil(int(quota) / int(period))
    except (ValueError, ZeroDivisionError):
        return cpus
    return max(1, min(cpus, limit))


def parallel_starts(env: dict[str, str] | None = None) -> int | None:
    """Nodes that may be starting at once (None: no limit)."""
    raw = (os.environ if env is None else env).get(PARALLEL_STARTS_ENV, "").strip()
    if not raw:
        return usable_cpus()
    try:
        value = int(raw)
    except ValueError:
        raise PacingError(f"{PARALLEL_STARTS_ENV}={raw!r}: expected a whole number "
                          "(0 for no limit)") from None
    if value < 0:
        raise PacingError(f"{PARALLEL_STARTS_ENV}={raw!r}: must be 0 (no limit) or more")
    return value or None
