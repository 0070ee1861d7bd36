"""Keep other processes out of the measurements.

On 2 cores any other busy process (a test run, a second benchmark) slows a
measurement several-fold, and torch's spinning threads make it worse. So
before every timed section, while our own processes are idle, we wait (up
to a limit) until the CPUs are quiet; during it we count the CPU time that
processes outside our own tree used, and a measurement that shared the
machine is thrown away and taken again (up to a limit). What was seen is
reported with the results.
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Callable, TypeVar

T = TypeVar("T")

QUIET_BELOW = 0.15  # fraction of all CPUs busy that still counts as quiet
PROBE_S = 1.0
FOREIGN_LIMIT = 0.10  # share of the machine others may use during a measurement before it is retaken


def cpu_busy(seconds: float = PROBE_S) -> float:
    """Fraction of all CPUs busy over ``seconds`` (Linux /proc/stat; 0 where unavailable)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        time.sleep(seconds)
        return 0.0
    return round(1 - (idle1 - idle0) / max(1, total1 - total0), 3)


def _busy_cpu_seconds() -> float | None:
    try:
        with open("/proc/stat") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float | None:
    """CPU seconds used by this process and everything below it (reaped children included)."""
    try:
        import psutil
    except ImportError:
        return None
    total = 0.0
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            t = process.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass  # exited meanwhile: its time shows up in its parent's children times
    return total


class Meter:
    """Wall time and the share of all CPUs that processes outside our tree used meanwhile."""

    def __enter__(self) -> "Meter":
        self._busy, self._own = _busy_cpu_seconds(), _own_cpu_seconds()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._started
        busy, own = _busy_cpu_seconds(), _own_cpu_seconds()
        if None in (busy, own, self._busy, self._own):
            self.foreign = 0.0  # cannot tell here
            return
        others = (busy - self._busy) - (own - self._own)
        self.foreign = max(0.0, others / (self.wall * (os.cpu_count() or 1)))


def busiest_processes(count: int = 3) -> str:
    try:
        lines = subprocess.run(["ps", "-eo", "pid,pcpu,etime,args", "--sort=-pcpu"], capture_output=True,
                               text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "(ps unavailable)"
    return "\n  ".join(line[:160] for line in lines[: count + 1])


class Settler:
    """Runs measurements on a quiet machine: ``measure(label, fn)`` settles, times, and retakes if disturbed."""

    def __init__(self, log, max_wait_s: float = 180.0, retries: int = 2):
        self.log = log
        self.max_wait_s = max_wait_s
        self.retries = retries
        self.worst = 0.0  # busiest background seen when starting a measurement
        self.waited_s = 0.0
        self.noisy = 0  # measurements started on a busy machine (waited max_wait_s in vain)
        self.retaken = 0
        self.disturbed: list[str] = []  # kept although others used the machine meanwhile
        self.foreign_max = 0.0  # worst share of the machine others used during a kept measurement

    def measure(self, label: str, fn: Callable[[], T], *, retries: int | None = None) -> T:
        retries = self.retries if retries is None else retries
        for attempt in range(retries + 1):
            self.settle()
            with Meter() as meter:
                result = fn()
            if meter.foreign <= FOREIGN_LIMIT:
                break
            if attempt < retries:
                self.retaken += 1
                self.log(f"{label}: other processes used {meter.foreign:.0%} of the CPUs meanwhile; measuring again")
        if meter.foreign > FOREIGN_LIMIT:
            self.disturbed.append(label)
            self.log(f"WARNING: {label}: other processes used {meter.foreign:.0%} of the CPUs during it; kept anyway")
        self.foreign_max = max(self.foreign_max, meter.foreign)
        return result

    def settle(self) -> None:
        started = time.perf_counter()
        busy = cpu_busy()
        if busy >= QUIET_BELOW:
            self.log(f"machine {busy:.0%} busy by other processes; waiting for it to calm down:\n  "
                     f"{busiest_processes()}")
            while busy >= QUIET_BELOW and time.perf_counter() - started < self.max_wait_s:
                busy = cpu_busy()
            if busy >= QUIET_BELOW:
                self.noisy += 1
                self.log(f"WARNING: still {busy:.0%} busy after {self.max_wait_s:.0f} s; measuring anyway "
                         "(this number will be distorted)")
        self.worst = max(self.worst, busy)
        self.waited_s += time.perf_counter() - started
