"""CPU time and memory of a process tree, for benchmarks on a shared machine.

Wall-clock ratios between a 2-core Spark stage and a reference penalize whichever side ran
while other work held a core; CPU seconds of every process involved (the driver, the JVM,
Python workers) do not, so benchmarks print both.

Two ways to count, for two kinds of run:

* :func:`tree_cpu_seconds`: one look at /proc, each live process's own time plus what its reaped
  children used (cutime, cstime). Exact when every process that exits is reaped by one that is
  still in the tree at the end (a short benchmark in one Spark session).
* :class:`TreeCpu`: a sampler's running total of each process's own time, kept after the process
  is gone. A process whose parent leaves the tree before it (a Python worker when Spark replaces
  its daemon, a child re-parented to init) takes its time out of the first count, which then
  went negative for the scale ladder's sample stage; this one never decreases. It misses what a
  process used after its last sample and processes shorter than one interval.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import NamedTuple

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Process(NamedTuple):
    parent: int
    name: str          # the command name (/proc/PID/comm)
    rss: int           # resident bytes
    own_ticks: int     # user + system time of the process itself
    child_ticks: int   # ... of its reaped children (cutime + cstime)
    started: int       # start time in ticks after boot: with the pid, tells a reused pid apart


def process_table() -> dict[int, Process]:
    """{pid: Process} of every process we can read now."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
            fields = tail.split()
            table[int(stat.parent.name)] = Process(
                int(fields[1]), head.split("(", 1)[1], int(fields[21]) * PAGE, int(fields[11]) + int(fields[12]),
                int(fields[13]) + int(fields[14]), int(fields[19]))
        except (OSError, ValueError, IndexError):   # gone meanwhile
            continue
    return table


def children(table: dict[int, Process]) -> dict[int, list[int]]:
    """{pid: the pids of its children} of ``table``."""
    found: dict[int, list[int]] = {}
    for pid, process in table.items():
        found.setdefault(process.parent, []).append(pid)
    return found


def tree(table: dict[int, Process], root: int) -> set[int]:
    """``root`` and the pids of all its descendants in ``table``."""
    below = children(table)
    found, frontier = {root}, [root]
    while frontier:
        for child in below.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def tree_cpu_seconds(root: int | None = None) -> float:
    """CPU seconds used so far by ``root`` (default: this process) and every live descendant (the JVM,
    Python workers), each with its reaped children's."""
    table = process_table()
    return sum(table[pid].own_ticks + table[pid].child_ticks
               for pid in tree(table, os.getpid() if root is None else root) if pid in table) / TICK


class TreeCpu:
    """CPU seconds of a process tree that counts processes after they exit (see the module docstring).

    Call :meth:`sample` often (a thread every 0.2 s, and once at each point you read); :meth:`seconds`
    is the total own time of every process seen in the tree since the first sample. A stage's CPU time
    is the difference of two readings, each right after a sample.
    """

    def __init__(self, root: int):
        self.root = root
        self.last: dict[tuple[int, int], int] = {}    # (pid, started) -> own ticks when last seen
        self.lock = threading.Lock()

    def sample(self, table: dict[int, Process] | None = None) -> dict[int, Process]:
        """Look at /proc (or use ``table``, one look taken by the caller) and update each process's total."""
        table = process_table() if table is None else table
        with self.lock:
            for pid in tree(table, self.root):
                if pid in table:
                    process = table[pid]
                    self.last[(pid, process.started)] = process.own_ticks
        return table

    def seconds(self) -> float:
        with self.lock:
            return sum(self.last.values()) / TICK
