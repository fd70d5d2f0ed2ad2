"""Allocators told to keep freed memory for reuse: the trainer's process and Spark's Python workers.

Both allocate and free blocks of the same sizes over and over, and by default both allocators in
a process hand freed memory back to the kernel, so the same pages are faulted in again and again.
The price is that a process keeps the memory of its busiest moment.

This module imports nothing of im2vec's and nothing heavy at import time: ``jobs.daemon`` calls
:func:`keep_freed_heap_memory` before it forks Spark's Python workers.
"""
from __future__ import annotations

import ctypes
import os

# glibc's malloc.h
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_heap_memory() -> None:
    """Set glibc's malloc as ``MALLOC_MMAP_THRESHOLD_=32M MALLOC_TRIM_THRESHOLD_=1G MALLOC_TOP_PAD_=64M``
    would, for this process and the processes it forks from now on.

    By default glibc maps each block above a few MB afresh and unmaps it on ``free()``, and trims
    its heaps' free tops: TensorFlow's step tensors (1-5 MB each) and the clean stage's per-chunk
    numba arrays (tens of MB) came fresh from the kernel every time. The top pad also keeps glibc
    from unmapping whole per-thread heaps. Nothing happens where the C library is not glibc.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None or os.uname().sysname != "Linux":
        return
    for option, value in ((M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 1 << 30), (M_TOP_PAD, 64 << 20)):
        mallopt(option, value)


def keep_freed_memory() -> None:
    """:func:`keep_freed_heap_memory`, and Arrow's jemalloc keeps freed pages too (decay off).

    For the trainer: Petastorm reads row groups through Arrow's jemalloc, which hands freed pages
    back within about a second, and TensorFlow mallocs every step's tensors from glibc. Without
    this, 3-4 page faults per training row with bench_train's model, ~15% of the trainer's CPU;
    with it, next to none after the first epoch (tests/benchmarks/bench_train.py). jemalloc's
    setting reaches only arenas made from now on, i.e. the reader threads of later epochs.
    """
    import pyarrow as pa

    try:
        pa.jemalloc_set_decay_ms(-1)
    except NotImplementedError:    # a pyarrow built without jemalloc
        pass
    keep_freed_heap_memory()
