"""CPU per group of processes over time, while a benchmark runs beside it: every INTERVAL
seconds, each group's share of one core since the last line (read from /proc), and how busy
the machine's cores were in all (200% is two full cores). Lines where nothing ran are left
out. Stop it with Ctrl-C (or a signal) once the benchmark is done.

    .venv/bin/python bench/cpu_timeline.py --interval 0.25 > timeline.txt &
    .venv/bin/python bench/e2e.py --scenario single --events 10000 --direct
    kill %1

Groups: `roles` (webhook-router processes, and the peers' of `--vs-peers`), `broker`
(RabbitMQ's beam.smp), `db` (PostgreSQL's processes), `receiver` (bench/receiver.py) and
`bench` (bench/e2e.py itself: the publisher).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

GROUPS = ("roles", "broker", "db", "receiver", "bench")
TICKS = os.sysconf("SC_CLK_TCK")


def group_of(command: str) -> str | None:
    if "beam.smp" in command:
        return "broker"
    if command.startswith("postgres"):
        return "db"
    if "receiver.py" in command:
        return "receiver"
    if "e2e.py" in command:
        return "bench"
    if "webhook_router" in command or "faststream" in command or "celery" in command:
        return "roles"
    return None


def snapshot() -> tuple[dict[str, int], int, int]:
    """CPU ticks per group, and the machine's idle and total ticks."""
    ticks = dict.fromkeys(GROUPS, 0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        group = group_of(command)
        if group is not None:
            ticks[group] += int(fields[11]) + int(fields[12])  # utime + stime
    cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks, cpu[3] + cpu[4], sum(cpu[:8])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between lines")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cores = os.cpu_count() or 1
    print("     s " + " ".join(f"{g:>8}" for g in GROUPS) + "  machine", flush=True)
    began = time.monotonic()
    before, idle_before, total_before = snapshot()
    at = began
    try:
        while True:
            time.sleep(args.interval)
            now = time.monotonic()
            after, idle, total = snapshot()
            shares = [100 * (after[g] - before[g]) / TICKS / (now - at) for g in GROUPS]
            busy = 100 * cores * (1 - (idle - idle_before) / max(total - total_before, 1))
            if max(shares) > 3:
                row = " ".join(f"{max(share, 0):7.0f}%" for share in shares)
                print(f"{now - began:6.2f} {row} {busy:7.0f}%", flush=True)
            before, idle_before, total_before, at = after, idle, total, now
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
