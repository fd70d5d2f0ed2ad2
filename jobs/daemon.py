"""The Python daemon Spark forks every stage's Python workers from: pyspark's own, without the
CPU a reused worker spends between two tasks. Spark runs it because ``defaults.yaml`` sets
``spark.python.daemon.module: jobs.daemon``.

With pyspark 3.5 on Python 3.11, a reused worker spends 0.2-0.45 CPU-seconds around every task
that are not the task's, next to ~1.1 CPU-s for a clean task of 121 MB:

* pyspark's worker calls ``importlib.invalidate_caches()`` before every task, and on Python
  3.10-3.11 each zip importer answers by reading its archive's directory again (CPython
  gh-103200; lazy from 3.12, and SPARK-54744 calls it less often after 3.5): pyspark.zip once
  per subpackage imported from it, py4j's zip and the Spark core jar, ~15k entries per task.
  Here an archive is read again only when its size or modification time changed
  (:func:`invalidate_when_changed`); Spark's own archives never change while a worker lives, and
  a ``--py-files`` archive that is replaced is still read again.
* the daemon calls ``gc.collect()`` after every task, over every object the worker's imports made
  (numpy, pyarrow, numba, TensorFlow). After a worker's first task those are moved out of the
  collector's sight (``gc.freeze()``, as pre-forking servers do), so later collections look only
  at what later tasks made (:func:`freezing_after_first_task`).

Workers also keep the memory they free (:func:`model.memory.keep_freed_heap_memory`, set in the
daemon and inherited by every worker it forks): by default glibc maps a block of more than a few
MB afresh and unmaps it when freed, and a clean task allocates and frees tens of MB per chunk.
Its workers' system time went from 0.54-0.65 to 0.20-0.30 CPU-s per 2M rows (of ~7.5 CPU-s).

Measured with 200 one-row tasks on 2 cores (``tests/benchmarks/bench_worker.py``): 209-245
CPU-ms per task with pyspark's daemon, 23-26 with this one. Nothing here is imported by the
driver; the module must stay importable without ``pipeline`` (whose import starts a thread,
which must not happen before the daemon forks).
"""
from __future__ import annotations

import gc
import os
import zipimport
from typing import Callable

_read_directory_again = zipimport.zipimporter.invalidate_caches


def invalidate_when_changed(importer: zipimport.zipimporter) -> None:
    """``zipimporter.invalidate_caches`` that reads the archive's directory again only when the
    archive's (size, modification time) differ from the last call's, or cannot be read."""
    try:
        stat = os.stat(importer.archive)
        version = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        version = None
    if version is None or importer.__dict__.get("_im2vec_version") != version:
        importer._im2vec_version = version
        _read_directory_again(importer)


def freezing_after_first_task(run_task: Callable[..., int]) -> Callable[..., int]:
    """Wrap the daemon's ``worker(sock, authenticated)`` (one task in a forked worker, -> its exit
    code) so that after the worker's first task every object alive is collected or frozen."""
    frozen = False

    def worker(*args, **kwargs) -> int:
        nonlocal frozen
        code = run_task(*args, **kwargs)
        if not frozen:
            gc.collect()   # what the first task left as garbage is freed, not frozen
            gc.freeze()
            frozen = True
        return code
    return worker


def main() -> None:
    """Patch, then run pyspark's daemon (it forks a worker per connection from the executor)."""
    from pyspark import daemon

    from model.memory import keep_freed_heap_memory

    keep_freed_heap_memory()
    zipimport.zipimporter.invalidate_caches = invalidate_when_changed
    # The daemon's fork loop looks ``worker`` up in its module for every task.
    daemon.worker = freezing_after_first_task(daemon.worker)
    daemon.manager()


if __name__ == "__main__":
    main()
