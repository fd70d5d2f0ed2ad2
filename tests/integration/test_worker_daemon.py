"""Spark's Python workers come from jobs.daemon (defaults.yaml): between tasks they keep the zip
directories pyspark's worker would read again, after their first task their objects are frozen,
and glibc keeps the large blocks they free."""
import pyarrow as pa
import pytest


def worker_state(batches):
    import gc
    import importlib
    import sys
    import zipimport

    zips = [f for f in sys.path_importer_cache.values() if isinstance(f, zipimport.zipimporter)]
    before = [id(f._files) for f in zips]
    importlib.invalidate_caches()                     # what pyspark's worker calls before every task
    kept = sum(id(f._files) == b for f, b in zip(zips, before))
    for batch in batches:
        yield pa.RecordBatch.from_arrays(
            [pa.array([len(zips)] * batch.num_rows), pa.array([kept] * batch.num_rows),
             pa.array([gc.get_freeze_count()] * batch.num_rows)], ["zips", "kept", "frozen"])


def test_workers_keep_zip_directories_and_freeze_after_their_first_task(spark):
    assert spark.conf.get("spark.python.daemon.module") == "jobs.daemon"
    schema = "zips long, kept long, frozen long"
    spark.range(0, 4, 1, 4).mapInArrow(worker_state, schema).collect()   # every worker's first task
    rows = spark.range(0, 4, 1, 4).mapInArrow(worker_state, schema).collect()
    assert all(r.zips > 0 for r in rows)              # pyspark.zip, py4j's zip, the Spark jar
    assert all(r.kept == r.zips for r in rows)        # none read again
    assert any(r.frozen > 0 for r in rows)


def heap_keeps_freed_block(batches):
    from tests.glibc_heap import large_block_fate

    mapped, kept = large_block_fate()
    for batch in batches:
        yield pa.RecordBatch.from_arrays([pa.array([mapped] * batch.num_rows), pa.array([kept] * batch.num_rows)],
                                         ["mapped", "kept"])


def test_workers_keep_the_large_blocks_they_free(spark):
    from tests.glibc_heap import has_mallinfo2

    if not has_mallinfo2():
        pytest.skip("not glibc >= 2.33")
    rows = spark.range(0, 2, 1, 2).mapInArrow(heap_keeps_freed_block, "mapped boolean, kept boolean").collect()
    # pyspark's daemon gives mapped=True, kept=False: a fresh mapping, handed back on free
    assert [(r.mapped, r.kept) for r in rows] == [(False, True)] * 2
