"""Where a benchmark's CPU time went, from /proc: the machine's busy time and each live process's.

A Ray job spreads its work over processes (the driver, raylet, GCS, workers); to say what Ray
costs, a benchmark takes `machine_busy_seconds` before and after, and `ray_processes_cpu` at the
end (a process's counters die with it, so it is read while Ray still runs).
"""

from __future__ import annotations

import os
import time
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
    if command.startswith("ray::IDLE"):
        return "idle workers"
    if command.startswith("ray::"):
        return "actors and tasks"
    if "ray/_private" in command or "ray/dashboard" in command or "ray/autoscaler" in command:
        return "other Ray services"
    return None


def ray_processes_cpu() -> dict[str, float]:
    """CPU-seconds of this machine's live Ray processes, summed by `ray_process_kind`, and of
    this process (``driver``)."""
    totals: dict[str, float] = {"driver": own_cpu_seconds()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        kind = ray_process_kind(_command(int(entry.name)))
        seconds = process_cpu_seconds(int(entry.name)) if kind else None
        if seconds is not None:
            totals[kind] = totals.get(kind, 0.0) + seconds
    return {kind: round(seconds, 1) for kind, seconds in totals.items()}


class OtherLoad:
    """From its creation to `share`: the share of all CPUs' time that processes other than this
    one were busy (a timing taken beside other work says so)."""

    def __init__(self) -> None:
        self.started, self.busy = time.perf_counter(), machine_busy_seconds()
        self.own = own_cpu_seconds()

    def share(self) -> float:
        others = (machine_busy_seconds() - self.busy) - (own_cpu_seconds() - self.own)
        return max(0.0, others) / ((time.perf_counter() - self.started) * (os.cpu_count() or 1))
