"""CPU time of a process tree, for benchmarks on a shared machine.

Wall-clock ratios between a 2-core Spark stage and a reference penalize whichever side ran
while other work held a core; CPU seconds of every process involved (the driver, the JVM,
Python workers) do not, so benchmarks print both.
"""
from __future__ import annotations

import os
from pathlib import Path


def tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process and every descendant (the JVM, Python workers),
    from /proc; reaped children count through their parents' cutime/cstime."""
    parents, times = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(f) for f in fields[11:15])
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier += children
    return sum(times.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")
