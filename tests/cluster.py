"""A real Spark standalone cluster on 127.0.0.1 for tests and benchmarks: one master, N workers.

Started from the pyspark installation (pip's pyspark has no sbin/start-master.sh, so the daemons
run through ``bin/spark-class``), each daemon in its own process group so that stopping a
worker takes its executors and their Python workers with it, as when a machine dies::

    with standalone_cluster(workers=2, work_dir=tmp_path) as cluster:
        subprocess.run([..., "--master", cluster.master_url, ...])
        cluster.kill_worker(1)

Every daemon also dies with the thread that started it (PR_SET_PDEATHSIG), so not even a
killed test run leaves JVMs behind: start clusters from the main thread.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1


def spark_home() -> str:
    """SPARK_HOME of the installed pyspark."""
    from pyspark.find_spark_home import _find_spark_home

    return _find_spark_home()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cluster_env(**extra: str) -> dict:
    """Environment for daemons and spark-submit: loopback addresses, this interpreter everywhere."""
    env = dict(os.environ)
    env.update(SPARK_HOME=spark_home(), SPARK_LOCAL_IP=HOST, PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable, **extra)
    return env


def spawn(command: list[str], log: Path, env: dict | None = None, cpus: set[int] | None = None) -> subprocess.Popen:
    """Start a daemon or driver in its own process group, output to ``log``; it dies with us.

    ``cpus`` pins it and every process it starts (executors, Python workers) to those CPUs.
    """
    def prepare() -> None:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if cpus:
            os.sched_setaffinity(0, cpus)

    with open(log, "wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env or cluster_env(),
                                start_new_session=True, preexec_fn=prepare)


def exited(process: subprocess.Popen, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``process`` to exit WITHOUT reaping it: while it is an unreaped
    zombie its process group id cannot be reused, so :func:`kill_group` hits only what we started."""
    deadline = time.time() + timeout
    while True:
        if process.returncode is not None or os.waitid(
                os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.time() >= deadline:
            return False
        time.sleep(0.2)


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 20) -> int:
    """Signal a process and everything in its group (JVM, executors, Python workers), then reap it.

    Returns:
        The process's exit code (negative: killed by that signal).
    """
    if process.returncode is None:
        os.killpg(process.pid, sig)
        if not exited(process, timeout):
            os.killpg(process.pid, signal.SIGKILL)
            exited(process, timeout)
        try:   # children that outlived the leader (an executor's Python daemon) share its group
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    code = process.wait()
    deadline = time.time() + timeout
    while time.time() < deadline:   # until the stragglers' new parent has reaped them
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    return code


class StandaloneCluster:
    """A running master and workers; see :func:`standalone_cluster`."""

    def __init__(self, work_dir: Path, cores: int = 1, memory: str = "2g", pin: bool = False):
        self.work_dir = Path(work_dir)
        self.pin = pin
        self.port, self.webui_port = free_port(), free_port()
        self.master_url = f"spark://{HOST}:{self.port}"
        self.webui_url = f"http://{HOST}:{self.webui_port}"
        self.cores, self.memory = cores, memory
        self.master: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen | None] = []

    def _spark_class(self, *args: str) -> list[str]:
        return [str(Path(spark_home()) / "bin" / "spark-class"), *args]

    def start(self, workers: int, timeout: float = 90) -> None:
        """Start the master and ``workers`` workers; return once they all registered."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.master = spawn(self._spark_class("org.apache.spark.deploy.master.Master", "--host", HOST,
                                              "--port", str(self.port), "--webui-port", str(self.webui_port)),
                            self.work_dir / "master.log")
        self.wait(lambda state: True, timeout, "the master's web UI")
        for _ in range(workers):
            self.add_worker()
        self.wait(lambda state: state["aliveworkers"] >= workers, timeout, f"{workers} workers to register")

    def add_worker(self) -> int:
        """Start one more worker; returns its index in :attr:`workers`."""
        index = len(self.workers)
        folder = self.work_dir / f"worker-{index}"
        folder.mkdir(parents=True, exist_ok=True)
        self.workers.append(spawn(self._spark_class(
            "org.apache.spark.deploy.worker.Worker", self.master_url, "--cores", str(self.cores),
            "--memory", self.memory, "--host", HOST, "--webui-port", str(free_port()),
            "--work-dir", str(folder)), self.work_dir / f"worker-{index}.log",
            cpus=self._cpus(index) if self.pin else None))
        return index

    def _cpus(self, index: int) -> set[int]:
        # Worker i gets CPUs [i*cores, (i+1)*cores) of the machine, wrapping around.
        count = os.cpu_count()
        return {(index * self.cores + k) % count for k in range(self.cores)}

    def state(self) -> dict:
        """The master's JSON status: workers, aliveworkers, activeapps, completedapps ..."""
        with urllib.request.urlopen(f"{self._bound_webui_url()}/json", timeout=5) as response:
            return json.load(response)

    def _bound_webui_url(self) -> str:
        """Where the master's web UI really listens: another process can take the free port first,
        and Spark then binds the next one, so the master's log line wins over the port asked for."""
        try:
            log = (self.work_dir / "master.log").read_text(errors="replace")
        except OSError:
            return self.webui_url
        bound = re.findall(r"MasterWebUI to \S+, and started at (http://\S+)", log)
        if bound:
            self.webui_url = f"http://{HOST}:{bound[-1].rsplit(':', 1)[1]}"
        return self.webui_url

    def wait(self, condition, timeout: float, what: str) -> dict:
        """Poll :meth:`state` until ``condition(state)`` holds; fail naming ``what`` and the logs."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.master.poll() is not None:
                break
            try:
                state = self.state()
                if condition(state):
                    return state
            except (OSError, ValueError):   # not up yet, or another server's page on the port asked for
                pass
            time.sleep(0.5)
        raise RuntimeError(f"standalone cluster: gave up waiting for {what} after {timeout:.0f}s; "
                           f"logs in {self.work_dir}")

    def kill_worker(self, index: int) -> None:
        """kill -9 a worker's process group: its JVM, its executor JVMs and their Python workers."""
        kill_group(self.workers[index])
        self.workers[index] = None

    def stop(self) -> None:
        """Stop the workers, then the master (SIGTERM, then SIGKILL); nothing is left running."""
        for worker in self.workers:
            if worker is not None:
                kill_group(worker, signal.SIGTERM)
        if self.master is not None:
            kill_group(self.master, signal.SIGTERM)
        self.workers, self.master = [], None


@contextmanager
def standalone_cluster(work_dir: Path, workers: int = 2, cores: int = 1, memory: str = "2g",
                       pin: bool = False) -> Iterator[StandaloneCluster]:
    """A master and ``workers`` workers (``cores`` cores, ``memory`` each) on 127.0.0.1, stopped on exit.

    Args:
        work_dir: daemon logs (master.log, worker-N.log) and the workers' work folders
            (executor logs under worker-N/app-*/).
        pin: confine each worker, with its executors and their Python workers, to its own
            ``cores`` CPUs. Spark's "cores" only count task slots: an executor's JVM threads
            feed its Python workers in parallel, so an unpinned one-core worker uses more.
    """
    cluster = StandaloneCluster(work_dir, cores, memory, pin)
    try:
        cluster.start(workers)
        yield cluster
    finally:
        cluster.stop()


def submit(stage: str, args: list[str], cluster: StandaloneCluster, log: Path, profile: str = "standalone",
           wait: bool = True, timeout: float = 300, **env: str):
    """Submit a stage to ``cluster`` the way ``im2vec STAGE --submit standalone`` does.

    Returns:
        The driver's Popen, in its own process group, output in ``log``: finished and reaped
        (``returncode`` set) with ``wait=True``, running with ``wait=False``.
    """
    from pipeline.submit import submit_command

    environ = cluster_env(SPARK_MASTER_URL=cluster.master_url, SPARK_DRIVER_HOST=HOST, **env)
    driver = spawn(submit_command(stage, profile, args, environ=environ), log, environ)
    if wait:
        finished = exited(driver, timeout)
        kill_group(driver)
        if not finished:
            raise TimeoutError(f"{stage} did not finish in {timeout:.0f}s; log: {log}")
    return driver


def read_sorted(uri: str, *keys: str):
    """A Parquet folder (file:// URI) as one pyarrow Table sorted by ``keys``."""
    import pyarrow.parquet as pq

    table = pq.read_table(uri.removeprefix("file://"))
    return table.sort_by([(k, "ascending") for k in keys])


def read_in_written_order(uri: str):
    """A Parquet folder as one Table: files in name order, rows in file order (how epochs are read)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(uri.removeprefix("file://"))
    files = sorted(p for p in folder.glob("*.parquet"))
    return pa.concat_tables(pq.read_table(p) for p in files)
