"""Progress of a long Spark stage, on stderr, in lines a person can follow (and a log can keep).

    with progress.report(spark, "clean"):
        manifest = job.run(spark, config, root, ...)

prints, at most every ``every`` seconds while Spark is working, one line per active Spark stage::

    [im2vec] clean 2:41 | stage 1 parquet: 37/120 tasks (+2 running), 1,234,567 rows read, ETA 4:10

Tasks report what they have done while they run, not only when they finish (Spark's accumulators
and task metrics reach the driver at task end, or every heartbeat at best, and the features
stage's input is read long before its images are done): a task calls :func:`task_counter` and
``add(n)`` as it goes, which sends a small UDP datagram to the driver at most once a second; the
reporter listens on the driver's address, which tasks learn from a Spark local property. The
line then says ``1,234 images done, 15.2 images/s`` and, when the job said how many to expect
(:func:`expect`), ETA from that rate; otherwise the ETA extrapolates the stage's finished tasks.
Counts are a best effort: a lost datagram is made good by the next (each carries the task's
total so far), and where executors cannot reach the driver the line falls back to tasks.
Rows read by Spark's own readers come from the driver's status REST API, when the Spark UI is on.
"""
from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from typing import Iterator, TextIO

POLL_SECONDS = 1.0
SEND_SECONDS = 1.0                 # a task reports at most this often
ADDRESS_PROPERTY = "im2vec.progress.address"   # Spark local property: where tasks send their counts
_expected: dict = {}               # what the running job said to expect: {"total": n, "unit": "images"}


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
        self.counts = TaskCounts()
        self.listener = self.counts.listen(spark)

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
            # Spark's status store writes a stage's running count at most every 100 ms
            # (spark.ui.liveUpdate.period): tasks that start together can show as 0 running for
            # as long as they run. Tasks that report counts say themselves that they run.
            running = max(stage.numActiveTasks, min(self.counts.running(stage.stageId), total - done))
            parts = [f"{done}/{total} tasks (+{running} running)"]
            if stage.numFailedTasks:
                parts.append(f"{stage.numFailedTasks} failed")
            if rows.get(stage.stageId):
                parts.append(f"{rows[stage.stageId]:,} rows read")
            left = eta(done, total, now - self.first_seen[stage.stageId])
            reported = self.counts.stage(stage.stageId)
            if reported:
                count, unit, rate = reported
                shown = "" if not rate else f", {rate:,.1f} {unit}/s" if rate < 100 else f", {rate:,.0f} {unit}/s"
                parts.append(f"{count:,} {unit} done{shown}")
                expected = _expected.get("total") if _expected.get("unit") == unit else None
                if expected and rate:
                    left = max(0.0, expected - count) / rate
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
        self.counts.close()
        _expected.clear()


@contextmanager
def report(spark, label: str, every: float = 5.0, stream: TextIO | None = None) -> Iterator[Reporter]:
    """Report the progress of the Spark work done inside the ``with`` block (see :class:`Reporter`)."""
    reporter = Reporter(spark, label, every, stream)
    reporter.start()
    try:
        yield reporter
    finally:
        reporter.stop()


def expect(total: int, unit: str) -> None:
    """Tell the progress line how many ``unit`` (e.g. "images") the next job's tasks will report in all."""
    _expected.update(total=int(total), unit=unit)


class TaskCounts:
    """The driver's side: a UDP socket tasks send their counts to, and the latest count of each task.

    Datagrams are JSON: ``{"stage": id, "partition": p, "attempt": task attempt id, "n": done so
    far, "unit": "rows", "final": whether the task has finished}``. A partition's latest attempt
    counts (a retry starts again from 0).
    """

    def __init__(self):
        # (stage, partition) -> (attempt, n, unit, final)
        self.by_task: dict[tuple[int, int], tuple[int, int, str, bool]] = {}
        self.history: dict[int, list[tuple[float, int]]] = {}           # stage -> [(time, total)]
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.context = None

    def listen(self, spark) -> threading.Thread | None:
        """Bind a UDP socket on the driver's address and tell the jobs of this thread where it is."""
        context = spark.sparkContext
        host = context.getConf().get("spark.driver.host", "127.0.0.1")
        try:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((host, 0))
        except OSError:
            self.sock = None
            return None
        context.setLocalProperty(ADDRESS_PROPERTY, "%s:%d" % self.sock.getsockname()[:2])
        self.context = context
        thread = threading.Thread(target=self._receive, name="im2vec-progress-counts", daemon=True)
        thread.start()
        return thread

    def _receive(self) -> None:
        while self.sock is not None:
            try:
                data = self.sock.recv(65536)
                report = json.loads(data)
                key = (int(report["stage"]), int(report["partition"]))
                value = (int(report["attempt"]), int(report["n"]), str(report["unit"]), bool(report.get("final")))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                if self.sock is None or self.sock.fileno() < 0:
                    return
                continue
            with self.lock:
                old = self.by_task.get(key)
                # Datagrams may arrive out of order: a task's count only grows, and its last one is final.
                if old is None or old[0] != value[0] or value[1] > old[1] or (value[1] == old[1] and value[3]):
                    self.by_task[key] = value

    def stage(self, stage_id: int) -> tuple[int, str, float | None] | None:
        """(done so far, unit, per second over the last minute or None) for a stage; None before any report."""
        with self.lock:
            mine = [v for (s, _), v in self.by_task.items() if s == stage_id]
        if not mine:
            return None
        total, now = sum(v[1] for v in mine), time.time()
        history = self.history.setdefault(stage_id, [])
        history.append((now, total))
        while len(history) > 2 and now - history[1][0] >= 60:
            history.pop(0)
        (then, before) = history[0]
        rate = (total - before) / (now - then) if now - then >= 1 and total > before else None
        return total, mine[0][2], rate

    def running(self, stage_id: int) -> int:
        """How many of a stage's tasks have reported work and not yet their last count."""
        with self.lock:
            return sum(1 for (s, _), v in self.by_task.items() if s == stage_id and not v[3])

    def close(self) -> None:
        """Stop listening; later jobs of this thread no longer report (call from the thread that listened)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()
        if self.context is not None:
            self.context.setLocalProperty(ADDRESS_PROPERTY, None)


class TaskCounter:
    """A task's side: ``add(n)`` as work gets done; sends the running total at most every SEND_SECONDS.

    Use :func:`task_counter`; call :meth:`close` (or use it as a context manager) at the task's end.
    """

    def __init__(self, address: tuple[str, int], stage: int, partition: int, attempt: int, unit: str):
        self.address, self.unit = address, unit
        self.key = {"stage": stage, "partition": partition, "attempt": attempt, "unit": unit}
        self.n, self.sent = 0, 0.0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def add(self, n: int) -> None:
        self.n += int(n)
        if time.monotonic() - self.sent >= SEND_SECONDS:
            self.send()

    def send(self, final: bool = False) -> None:
        self.sent = time.monotonic()
        try:
            self.sock.sendto(json.dumps({**self.key, "n": self.n, "final": final}).encode(), self.address)
        except OSError:   # the driver is unreachable: progress is not worth failing a task over
            pass

    def close(self) -> None:
        self.send(final=True)
        self.sock.close()

    def __enter__(self) -> "TaskCounter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _NoCounter:
    def add(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def task_counter(unit: str = "rows"):
    """Inside a Spark task: a counter reporting to the driver's progress line (a no-op without one)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    address = context.getLocalProperty(ADDRESS_PROPERTY) if context is not None else None
    if not address:
        return _NoCounter()
    host, _, port = address.rpartition(":")
    return TaskCounter((host, int(port)), context.stageId(), context.partitionId(), context.taskAttemptId(), unit)
