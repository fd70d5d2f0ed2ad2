"""Progress of a long Spark stage, on stderr, in lines a person can follow (and a log can keep).

    with progress.report(spark, "clean"):
        manifest = job.run(spark, config, root, ...)

prints, at most every ``every`` seconds while Spark is working, one line per active Spark stage::

    [im2vec] clean 2:41 | stage 1 parquet: 37/120 tasks (+2 running), 1,234,567 rows read, ETA 4:10

The ETA extrapolates the stage's finished tasks at the rate since the stage was first seen.
Rows read come from the driver's status REST API, when the Spark UI is on.
"""
from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from typing import Iterator, TextIO

POLL_SECONDS = 1.0


def clock(seconds: float) -> str:
    """``75.2`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def eta(done: int, total: int, seconds: float) -> float | None:
    """Seconds left when ``done`` of ``total`` tasks took ``seconds``; None before the first is done."""
    if done <= 0 or seconds <= 0:
        return None
    return (total - done) * seconds / done


class Reporter(threading.Thread):
    """A daemon thread that polls ``spark.sparkContext.statusTracker()`` and prints progress lines.

    Args:
        spark: the session whose jobs to follow.
        label: what is running, e.g. the stage name ``"clean"``.
        every: at most one report per this many seconds.
        stream: where the lines go (stderr: stdout may be data).
    """

    def __init__(self, spark, label: str, every: float = 5.0, stream: TextIO | None = None):
        super().__init__(name=f"im2vec-progress-{label}", daemon=True)
        self.context = spark.sparkContext
        self.label, self.every = label, every
        self.stream = stream or sys.stderr
        self.started = time.time()
        self.first_seen: dict[int, float] = {}
        self.stopping = threading.Event()
        self.lines = 0

    def run(self) -> None:
        last = 0.0
        while not self.stopping.wait(POLL_SECONDS):
            try:
                stages = self.active_stages()
                if stages and time.time() - last >= self.every:
                    last = time.time()
                    for line in self.format(stages):
                        print(line, file=self.stream, flush=True)
                        self.lines += 1
            except Exception:  # noqa: BLE001 - the context went away under us: progress is not worth a crash
                return

    def active_stages(self) -> list:
        """SparkStageInfo of the running stages, oldest first; remembers when each was first seen."""
        tracker = self.context.statusTracker()
        stages = [s for s in (tracker.getStageInfo(i) for i in sorted(tracker.getActiveStageIds())) if s]
        now = time.time()
        for stage in stages:
            self.first_seen.setdefault(stage.stageId, now)
        return stages

    def format(self, stages: list) -> list[str]:
        """One line per stage: tasks done/total, running, failed, rows read, ETA."""
        now = time.time()
        rows = self.rows_read()
        lines = []
        for stage in stages:
            done, total = stage.numCompletedTasks, stage.numTasks
            parts = [f"{done}/{total} tasks (+{stage.numActiveTasks} running)"]
            if stage.numFailedTasks:
                parts.append(f"{stage.numFailedTasks} failed")
            if rows.get(stage.stageId):
                parts.append(f"{rows[stage.stageId]:,} rows read")
            left = eta(done, total, now - self.first_seen[stage.stageId])
            parts.append(f"ETA {clock(left)}" if left is not None else "ETA ?")
            name = stage.name.split(" at ")[0]
            lines.append(f"[im2vec] {self.label} {clock(now - self.started)} | stage {stage.stageId} {name}: "
                         + ", ".join(parts))
        return lines

    def rows_read(self) -> dict[int, int]:
        """{stage id: input records of its finished tasks}, from the UI's REST API; {} without a UI."""
        url = self.context.uiWebUrl
        if not url:
            return {}
        try:
            with urllib.request.urlopen(f"{url}/api/v1/applications/{self.context.applicationId}/stages"
                                        "?status=active", timeout=2) as response:
                return {s["stageId"]: int(s.get("inputRecords", 0)) for s in json.load(response)}
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


@contextmanager
def report(spark, label: str, every: float = 5.0, stream: TextIO | None = None) -> Iterator[Reporter]:
    """Report the progress of the Spark work done inside the ``with`` block (see :class:`Reporter`)."""
    reporter = Reporter(spark, label, every, stream)
    reporter.start()
    try:
        yield reporter
    finally:
        reporter.stop()
