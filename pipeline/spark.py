"""The Spark session every stage runs in."""
from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession


def session(config: dict, app_name: str) -> SparkSession:
    """Get or create the SparkSession for a stage.

    Args:
        config: the run configuration; ``master`` picks the cluster, ``spark.*`` keys are
            Spark properties.
        app_name: shown in the Spark UI, e.g. ``"im2vec clean"``.

    Under spark-submit the master and properties given there win (the session already exists).
    Workers run this interpreter unless PYSPARK_PYTHON says otherwise: a bare ``python3`` on
    PATH would miss every package im2vec needs.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if not _under_spark_submit():
        builder = builder.master(str(config.get("master") or "local[*]"))
    for key, value in config.items():
        if key.startswith("spark."):
            builder = builder.config(key, str(value))
    builder = builder.config("spark.sql.execution.arrow.pyspark.enabled", "true")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("IM2VEC_SPARK_LOG_LEVEL", "WARN"))
    return spark


def _under_spark_submit() -> bool:
    # spark-submit starts the driver with these set; a plain `python -m` or `im2vec` does not.
    return "SPARK_SUBMIT_OPTS" in os.environ or os.environ.get("SPARK_ENV_LOADED") == "1" \
        or "PYSPARK_GATEWAY_PORT" in os.environ
