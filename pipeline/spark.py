"""The Spark session every stage runs in, and which Spark properties it gets from where."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

from pyspark.sql import SparkSession

from pipeline import PETASTORM_WARNINGS, Im2vecError, config as configuration

DISCOVERY_SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "gpu" / "get_gpus_resources.sh"
# Set on every session unless the launcher says otherwise: toPandas / createDataFrame via Arrow.
BASE_PROPERTIES = {"spark.sql.execution.arrow.pyspark.enabled": "true"}


def session(config: dict, app_name: str) -> SparkSession:
    """Get or create the SparkSession for a stage.

    Args:
        config: the run configuration; ``master`` picks the cluster (outside spark-submit),
            ``spark.*`` keys are Spark properties, ``gpus_per_*`` ask for GPU executors.
        app_name: shown in the Spark UI, e.g. ``"im2vec clean"``.

    Returns:
        The session, with the properties :func:`properties` chooses. Under spark-submit the
        master and every property spark-submit was given win over ``defaults.yaml``; what the
        user set with ``--config`` / ``--set`` wins over both.

    Workers run this interpreter unless PYSPARK_PYTHON says otherwise: a bare ``python3`` on
    PATH would miss every package im2vec needs.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # Local workers inherit the driver's environment, executors get spark.executorEnv.
    if PETASTORM_WARNINGS not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), PETASTORM_WARNINGS]))
    builder = SparkSession.builder.config("spark.executorEnv.PYTHONWARNINGS", PETASTORM_WARNINGS)
    launcher = launcher_properties()
    if not _under_spark_submit():
        builder = builder.master(str(config.get("master") or "local[*]"))
    for key, value in properties(config, launcher).items():
        builder = builder.config(key, value)
    # Last: spark-submit names every application after its script ("main.py").
    builder = builder.appName(app_name)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("IM2VEC_SPARK_LOG_LEVEL", "WARN"))
    return spark


def properties(config: Mapping, launcher: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Spark properties a stage's session ends up with, from the configuration and the launcher.

    Args:
        config: the run configuration (pipeline.config.load).
        launcher: the properties spark-submit already put in the driver's SparkConf (its
            ``--conf``, ``--properties-file``, ``spark-defaults.conf``, a ``--submit`` profile's
            ``spark.*`` lines); {} outside spark-submit.

    Returns:
        {property: value as a string}. Each layer replaces the one before:

        1. ``spark.*`` values from ``pipeline/defaults.yaml`` (sized for one machine) and
           BASE_PROPERTIES;
        2. the GPU executor properties :func:`gpu_conf` derives from ``gpus_per_executor``,
           ``gpus_per_task`` and ``gpu_discovery_script``;
        3. the launcher's properties: a cluster's profile knows the cluster, the packaged
           defaults do not;
        4. ``spark.*`` keys the user set in ``--config FILE`` or ``--set``, i.e. whose value
           differs from ``defaults.yaml`` (a ``--set`` equal to the packaged default cannot be
           told from it, and the launcher's value stays).
    """
    launcher = dict(launcher or {})
    explicit = explicit_properties(config)
    chosen = dict(BASE_PROPERTIES)
    chosen.update({k: _text(v) for k, v in config.items() if k.startswith("spark.") and k not in explicit})
    master = launcher.get("spark.master") or str(config.get("master") or "")
    for key, value in gpu_conf(config, master).items():
        if key in launcher and launcher[key] != value:
            print(f"[im2vec] spark-submit's {key}={launcher[key]} is kept over {value} from gpus_per_* "
                  "config keys", file=sys.stderr)
        chosen[key] = value
    chosen.update(launcher)
    chosen.update(explicit)
    return chosen


def explicit_properties(config: Mapping) -> dict[str, str]:
    """The ``spark.*`` keys of ``config`` the user set (their value differs from ``defaults.yaml``), as strings."""
    packaged = configuration.defaults()
    return {k: _text(v) for k, v in config.items()
            if k.startswith("spark.") and (k not in packaged or v != packaged[k])}


def gpu_conf(config: Mapping, master: str | None = None) -> dict[str, str]:
    """The Spark properties that give executors GPUs and each task a share of one.

    Args:
        config: uses these keys:
            gpus_per_executor: GPUs per executor; 0 = CPU executors (returns {}). One is the
                recommended layout: every task of the executor then uses the same GPU.
            gpus_per_task: GPUs per task, 1 or a unit fraction (0.5, 0.25, 0.125 ...): with
                0.125, eight tasks, each with its own core for decoding, share one GPU.
            gpu_discovery_script: the script executors run to list their GPUs; "" = this
                checkout's deploy/gpu/get_gpus_resources.sh (for files shipped with ``--files``,
                ``./get_gpus_resources.sh``).
        master: the master URL the session runs on (default: ``config["master"]``).

    Returns:
        ``spark.executor.resource.gpu.amount``, ``spark.task.resource.gpu.amount`` and
        ``spark.executor.resource.gpu.discoveryScript`` as strings, for a SparkSession builder
        or a spark-submit properties file. Standalone workers also need
        ``spark.worker.resource.gpu.amount`` and ``...discoveryScript`` in their own conf.
        {} for a ``local`` master: local mode schedules no GPUs (tasks asking for one never
        start), and its TensorFlow sees the machine's GPUs anyway.
    """
    master = str(config.get("master") or "") if master is None else master
    executor = config.get("gpus_per_executor") or 0
    task = float(config.get("gpus_per_task") or 0)
    if executor != int(executor) or int(executor) < 0:
        raise Im2vecError(f"gpus_per_executor must be a whole number >= 0, got {executor!r}")
    if not executor or master.startswith("local"):
        return {}
    if not 0 < task <= 1 or abs(1 / task - round(1 / task)) > 1e-9:
        raise Im2vecError(f"gpus_per_task must be 1 or a unit fraction (0.5, 0.25, ...): a task runs one "
                          f"model on one GPU; got {task!r}")
    script = str(config.get("gpu_discovery_script") or DISCOVERY_SCRIPT)
    return {"spark.executor.resource.gpu.amount": str(int(executor)),
            "spark.task.resource.gpu.amount": f"{task:g}",
            "spark.executor.resource.gpu.discoveryScript": script}


def launcher_properties() -> dict[str, str]:
    """The Spark properties spark-submit gave this driver (JVM system properties); {} outside spark-submit.

    Outside spark-submit there is no JVM yet, and starting one here would start it without the
    configuration's driver settings (``spark.driver.memory`` only counts at JVM launch).
    """
    if "PYSPARK_GATEWAY_PORT" not in os.environ:   # set by spark-submit's PythonRunner
        return {}
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()   # connects to the JVM spark-submit started
    return dict(SparkConf(loadDefaults=True).getAll())


def missing_filesystem(err: BaseException, uris: list[str]) -> Im2vecError | None:
    """What to tell the user when Spark failed on ``uris`` because it has no filesystem for their scheme.

    Args:
        err: the exception a Spark read or write raised (py4j's Py4JJavaError carries the Java one).
        uris: the URIs it was given, for the message.

    Returns:
        An Im2vecError saying what to install, when the Java exception or one of its causes is
        Hadoop's ``ClassNotFoundException: Class org.apache.hadoop.fs.s3a.S3AFileSystem not found``
        (``s3a://`` without hadoop-aws) or ``UnsupportedFileSystemException: No FileSystem for
        scheme "x"``; else None (re-raise ``err``).
    """
    java = getattr(err, "java_exception", None)
    while java is not None:
        name, message = java.getClass().getName(), str(java.getMessage() or "")
        if "S3AFileSystem" in message and name.endswith("ClassNotFoundException"):
            return Im2vecError(
                f"cannot read {', '.join(uris)}: this Spark has no s3a:// filesystem (class "
                "org.apache.hadoop.fs.s3a.S3AFileSystem not found: hadoop-aws is not on its classpath). Add "
                "hadoop-aws and the AWS SDK bundle of Spark's Hadoop version (3.3.4 for Spark 3.5): "
                "spark-submit --packages org.apache.hadoop:hadoop-aws:3.3.4 (the yarn profile's IM2VEC_PACKAGES), "
                "or run in the im2vec image or on EMR; pip's pyspark lacks them")
        if name == "org.apache.hadoop.fs.UnsupportedFileSystemException":
            return Im2vecError(f"cannot read {', '.join(uris)}: Spark has no filesystem for that scheme "
                               f"({message}); for S3 use s3a:// with hadoop-aws on the classpath")
        java = java.getCause()
    return None


def _text(value) -> str:
    # YAML reads `true` as a bool; Spark wants "true", not Python's "True".
    return str(value).lower() if isinstance(value, bool) else str(value)


def _under_spark_submit() -> bool:
    # spark-submit starts the driver with these set; a plain `python -m` or `im2vec` does not.
    return "SPARK_SUBMIT_OPTS" in os.environ or os.environ.get("SPARK_ENV_LOADED") == "1" \
        or "PYSPARK_GATEWAY_PORT" in os.environ
