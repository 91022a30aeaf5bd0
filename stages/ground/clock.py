"""How long a stage's work took: wall seconds, this process's CPU seconds, and how busy the rest of the machine was.

Wall time alone says little on a shared machine: two trainings on two cores each take longer than one alone.
CPU seconds (user + sys, every thread of this process) are inflated far less by other work, and the load beside
them says whether the wall time can be read as the machine's (README, docs: cost).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# Above this, a timing is marked as made under load: another process kept a quarter of a core busy on average.
LOADED = 0.25


def _busy_and_total_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat's first line; None where unreadable."""
    try:
        with open(PROC_STAT, encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return total - idle, total


@dataclass(frozen=True)
class Took:
    seconds: float  # wall
    cpu_seconds: float  # this process: user + sys, every thread
    other_cores_busy: float | None  # cores the rest of the machine kept busy, on average; None where unknown

    def record(self) -> dict:
        """The fields every timing record holds (stages.lib.shapes.CLOCK)."""
        return {"seconds": round(self.seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2),
                "other_cores_busy": None if self.other_cores_busy is None else round(self.other_cores_busy, 2)}


class Stopwatch:
    """Started when made; ``took()`` reads it (any number of times)."""

    def __init__(self) -> None:
        self._wall, self._cpu, self._ticks = time.perf_counter(), time.process_time(), _busy_and_total_ticks()

    def took(self) -> Took:
        wall, cpu, ticks = time.perf_counter() - self._wall, time.process_time() - self._cpu, _busy_and_total_ticks()
        return Took(wall, cpu, other_cores_busy(self._ticks, ticks, wall, cpu, os.cpu_count() or 1))


def other_cores_busy(before: tuple[int, int] | None, after: tuple[int, int] | None, wall: float, cpu: float,
                     cores: int) -> float | None:
    """Cores kept busy by everything but this process, on average over ``wall`` seconds.

    Args:
        before, after: (busy, total) ticks of all CPUs (``_busy_and_total_ticks``) at the start and the end.
        wall, cpu: this process's wall and CPU seconds over the same span.
        cores: CPUs on the machine.
    """
    if before is None or after is None or after[1] <= before[1] or wall <= 0:
        return None
    machine = cores * (after[0] - before[0]) / (after[1] - before[1])
    return max(machine - cpu / wall, 0.0)
