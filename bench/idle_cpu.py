"""Benchmark helper: how much of this machine's CPU a running lab uses while nothing happens.

Usage (by hand, never in tests)::

    .venv/bin/python -m bench.idle_cpu [--seconds 60]

or ``bench/scale_out.py --idle-cpu S``, which samples the cluster it made after its first
provision. It reads ``/proc/stat`` (the whole machine, short-lived processes included) and
every process's ``/proc/PID/stat`` (user + system ticks) at the start and the end, and prints
the machine's busy share of its cores and the programs that used the most CPU, by name,
in per cent of one core. Processes that ended during the sample count only in the total.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[int, int]:
    """(busy, total) ticks of every core since boot, from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])  # guest time is already in user and nice
    return total - idle, total


def _processes() -> dict[tuple[int, int], tuple[str, int]]:
    """(pid, start time) -> (program name, user + system ticks) of every process now; the
    start time tells a reused pid apart (kernel threads change their names as they work)."""
    out: dict[tuple[int, int], tuple[str, int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        # The name is in parentheses and may hold spaces or parentheses itself.
        name, rest = raw[raw.index("(") + 1:raw.rindex(")")], raw[raw.rindex(")") + 2:].split()
        # utime and stime are fields 14 and 15, starttime 22 (rest starts at field 3).
        out[(int(d), int(rest[19]))] = (name, int(rest[11]) + int(rest[12]))
    return out


def sample(seconds: float, top: int = 12) -> str:
    """One line with the machine's busy share, then the ``top`` programs by CPU used."""
    b0, t0 = _machine()
    p0 = _processes()
    time.sleep(seconds)
    b1, t1 = _machine()
    p1 = _processes()
    by_name: Counter[str] = Counter()
    for key, (name, ticks) in p1.items():
        before = p0.get(key)
        by_name[name.split("-", 1)[0] if name.startswith("kworker") else name] += \
            ticks - (before[1] if before else 0)
    cores = os.cpu_count() or 1
    wall = seconds * TICKS
    lines = [f"idle cluster over {seconds:.0f}s: the machine busy "
             f"{100 * (b1 - b0) / max(t1 - t0, 1):.0f}% of {cores} cores "
             f"({100 * (b1 - b0) / wall:.0f}% of one core)"]
    lines += [f"  {name}: {100 * ticks / wall:.1f}% of one core"
              for name, ticks in by_name.most_common(top) if ticks > 0]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    print(sample(args.seconds, args.top))


if __name__ == "__main__":
    main()
