"""Keep TensorFlow's start-up notices off the terminal unless asked for (``IM2VEC_VERBOSE=1``).

TensorFlow's C++ side logs at start-up and again when its kernels first load: "This TensorFlow
binary is optimized to use available CPU instructions ...", "oneDNN custom operations are on
...", and absl's "All log messages before absl::InitializeLog() is called are written to
STDERR". ``TF_CPP_MIN_LOG_LEVEL`` hides the first kind only: the oneDNN notice ignores it (only
``TF_ENABLE_ONEDNN_OPTS=0`` silences it, which also turns oneDNN's faster kernels off). So:

* :func:`set_environment` sets ``TF_CPP_MIN_LOG_LEVEL=2`` (errors only) where the user has not
  set it; processes started later (Spark's JVM and its Python workers) inherit it;
* :func:`filter_native_stderr` sends file descriptor 2 (what C++ code writes to) through a pipe
  and drops TensorFlow's INFO lines and absl's notice on their way to the real stderr (and Spark's
  JVM's start-up notices, since the JVM inherits it); Python's own ``sys.stderr`` writes straight
  to the terminal, so tracebacks never wait on the filter.

Importing ``pipeline`` calls :func:`set_environment`, before anything imports TensorFlow, and in
a Spark Python worker (they import ``pipeline`` to run a stage's tasks) also
:func:`filter_native_stderr`; the ``im2vec`` command filters from its start. ``IM2VEC_VERBOSE=1``
leaves everything as TensorFlow prints it.
"""
from __future__ import annotations

import atexit
import os
import re
import sys
import threading

VERBOSE_ENV = "IM2VEC_VERBOSE"
ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2"}
# TensorFlow's C++ INFO lines ("I0000 00:00:1796539764.713998   27206 port.cc:153] ..."), the line
# continuing the CPU-instructions notice, and absl's notice about logging before its initialization.
NOISE = re.compile(rb"^(I\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\] |To enable the following instructions: |"
                   rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR|"
                   # Spark's JVM (a child of the command, so its stderr is ours) at start-up, every time:
                   rb"Setting default log level to \"WARN\"\.|To adjust logging level use sc\.setLogLevel\(newLevel\)|"
                   rb"\d\d/\d\d/\d\d \d\d:\d\d:\d\d WARN (NativeCodeLoader: Unable to load native-hadoop library|"
                   rb"Utils: Your hostname, .* resolves to a loopback address|Utils: Set SPARK_LOCAL_IP if you need|"
                   rb"Utils: Service 'SparkUI' could not bind on port))")

_filtering = False


def verbose() -> bool:
    """Whether the user asked for everything (``IM2VEC_VERBOSE`` set to anything but "", 0 or false)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def in_spark_worker() -> bool:
    """Whether this process is a PySpark Python worker (its daemon was started with this variable)."""
    return "PYTHON_WORKER_FACTORY_SECRET" in os.environ


def set_environment() -> None:
    """TensorFlow's log level for this process and those it starts, unless verbose or set already."""
    if verbose():
        return
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def filter_native_stderr() -> None:
    """Once per process: drop NOISE lines written to file descriptor 2, pass every other byte on.

    Nothing happens when verbose, when fd 2 is not open, or on a second call.
    """
    global _filtering
    if _filtering or verbose():
        return
    try:
        terminal = os.dup(2)
    except OSError:
        return
    _filtering = True
    sys.stderr.flush()
    # Python writes to the terminal directly; only what C/C++ code writes to fd 2 goes through the pipe.
    sys.stderr = os.fdopen(os.dup(terminal), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                           errors="backslashreplace")
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    thread = threading.Thread(target=_forward, args=(read_end, terminal), name="im2vec-stderr-filter", daemon=True)
    thread.start()

    def restore():
        # At exit: point fd 2 at the terminal again, which closes the pipe's last writer; the
        # thread then forwards what is left and ends.
        try:
            os.dup2(terminal, 2)
        except OSError:
            return
        thread.join(timeout=0.5)   # a child (Spark's JVM) may still hold the pipe: do not wait on it

    atexit.register(restore)


def _forward(read_end: int, terminal: int) -> None:
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while True:
            try:
                data = pipe.read(65536)
            except OSError:
                data = b""
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not NOISE.match(line))
            if kept:
                _write_all(terminal, kept)
    if pending and not NOISE.match(pending):
        _write_all(terminal, pending)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass
