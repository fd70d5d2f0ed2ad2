"""Progress lines count the work of running tasks (pipeline.progress.task_counter), not only finished tasks."""
import io
import re
import time

from pipeline import progress


def test_running_tasks_report_done_rate_and_eta(spark):
    def slow(rows):
        counter = progress.task_counter("images")
        for _ in range(10):
            time.sleep(0.5)
            counter.add(4)
        counter.close()
        yield 40

    out = io.StringIO()
    with progress.report(spark, "demo", every=1, stream=out):
        progress.expect(80, "images")
        assert spark.sparkContext.parallelize(range(2), 2).mapPartitions(slow).sum() == 80
    lines = out.getvalue().splitlines()
    # Neither task finished yet, and both say they run (Spark's own running count may lag: its
    # status store writes it at most every 100 ms, and both tasks start within that).
    running = [line for line in lines if "0/2 tasks (+2 running)" in line]
    # Before either task finished: images done, a rate and an ETA from them.
    counted = [m for m in (re.search(r"(\d+) images done, ([\d.]+) images/s, ETA (\d+):(\d\d)$", line)
                           for line in running) if m]
    assert counted, lines
    assert any(0 < int(m.group(1)) < 80 for m in counted), lines   # the last datagram may beat the task's end
    assert all(0 < int(m.group(1)) <= 80 and 0 < float(m.group(2)) < 100 for m in counted), lines
    # No address is left behind for later jobs.
    assert spark.sparkContext.getLocalProperty(progress.ADDRESS_PROPERTY) is None


def test_without_a_reporter_tasks_count_nowhere(spark):
    def count(rows):
        counter = progress.task_counter()
        counter.add(3)
        counter.close()
        yield type(counter).__name__

    assert spark.sparkContext.parallelize(range(2), 2).mapPartitions(count).collect() == ["_NoCounter"] * 2
