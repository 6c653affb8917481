"""Where a benchmark's CPU time went, from /proc: the machine's busy time and each live process's.

A Ray job spreads its work over processes (the driver, raylet, GCS, workers); to say what Ray
costs, a benchmark takes `machine_busy_seconds` before and after, and a `ProcessCpuSampler` runs
beside the job to say which processes spent it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU-seconds all cores have spent not idle since boot (/proc/stat: idle and iowait excluded)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU-seconds of one process (its threads included); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 0
    return (int(fields[11]) + int(fields[12])) / TICKS


def own_cpu_seconds() -> float:
    """User + system CPU-seconds of this process so far (all its threads)."""
    return process_cpu_seconds(os.getpid())


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ray_process_kind(command: str) -> str | None:
    """The role of a Ray process from its command line (None: not Ray's)."""
    if "gcs_server" in command:
        return "gcs"
    if "raylet" in command.split(" ", 1)[0]:
        return "raylet"
    if command.startswith("ray::IDLE") or "ray/_private/workers/default_worker.py" in command:
        return "idle workers"
    if command.startswith("ray::"):
        return "actors and tasks"
    if "ray/_private" in command or "ray/dashboard" in command or "ray/autoscaler" in command:
        return "other Ray services"
    return None


def _role(pid: int, command: str) -> str:
    if pid == os.getpid():
        return "driver"
    return ray_process_kind(command) or "other processes"


def _processes() -> dict[int, float]:
    """CPU-seconds of every live process (kernel threads included)."""
    seconds = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            value = process_cpu_seconds(int(entry.name))
            if value is not None:
                seconds[int(entry.name)] = value
    return seconds


class ProcessCpuSampler:
    """From `start` to `stop`: the CPU-seconds every process on this machine spent, summed by
    role (``driver``: this process; Ray's by `ray_process_kind`; ``other processes``).

    Sampled every ``interval`` seconds on a thread: a process's counters die with it, and Ray
    Data ends its actors with the dataset, before a reader at the end could see them (such a
    process counts up to its last sample). A process keeps the most telling role it was seen
    in: a Ray worker starts idle and becomes an actor or runs tasks.
    """

    def __init__(self, interval: float = 0.5, role: Callable[[int, str], str] = _role) -> None:
        self.interval, self.role = interval, role
        self._before: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._roles: dict[int, str] = {}
        self._names: dict[int, str] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "ProcessCpuSampler":
        self._before = _processes()
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stopped.set()
        self._thread.join()
        self._sample()
        totals: dict[str, float] = {}
        for pid, seconds in self._spent().items():
            totals[self._roles[pid]] = totals.get(self._roles[pid], 0.0) + seconds
        return {role: round(seconds, 1) for role, seconds in totals.items()}

    def busiest(self, count: int = 3) -> list[tuple[str, float]]:
        """After `stop`: the ``count`` processes that spent the most, as (command line, CPU-s)."""
        spent = sorted(self._spent().items(), key=lambda item: -item[1])[:count]
        return [(self._names.get(pid, "") or f"pid {pid}", round(seconds, 1)) for pid, seconds in spent]

    def _spent(self) -> dict[int, float]:
        return {pid: seconds - self._before.get(pid, 0.0) for pid, seconds in self._last.items()}

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        for pid, seconds in _processes().items():
            self._last[pid] = seconds
            command = _command(pid)  # read once: it names the process and gives its role
            self._names[pid] = command[:100].strip() or self._names.get(pid, "")
            role = self.role(pid, command)
            if self._roles.get(pid) != "actors and tasks":
                self._roles[pid] = role


class OtherLoad:
    """From its creation to `share`: the share of all CPUs' time that processes other than this
    one were busy (a timing taken beside other work says so)."""

    def __init__(self) -> None:
        self.started, self.busy = time.perf_counter(), machine_busy_seconds()
        self.own = own_cpu_seconds()

    def share(self) -> float:
        others = (machine_busy_seconds() - self.busy) - (own_cpu_seconds() - self.own)
        return max(0.0, others) / ((time.perf_counter() - self.started) * (os.cpu_count() or 1))
