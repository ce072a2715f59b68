"""How many CPUs this process may use: its affinity (what SLURM's cpusets and ``taskset`` set)
and a cgroup CPU quota (what ``docker --cpus`` and Kubernetes limits set)."""

from __future__ import annotations

import math
import os
from pathlib import Path


def cpu_affinity() -> set[int] | None:
    """Logical CPU ids this process may run on (``None`` where the platform cannot tell)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return None


def cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup-v2 quota (``cpu.max``), or ``None`` when unlimited or unknown."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """Whole CPUs this process may keep busy at once: its affinity's CPUs (else the CPU count),
    at most the cgroup quota rounded up; at least 1."""
    affinity = cpu_affinity()
    n = len(affinity) if affinity is not None else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, math.ceil(limit))
    return max(1, n)
