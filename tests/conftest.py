"""Shared fixtures: one real local Spark session for the whole test run."""
import os
import sys

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
# TensorFlow in tests: one thread each way, to share the 2 cores with Spark.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def spark():
    """A real local Spark session (local[2]) shared by every test."""
    from pipeline import config as configuration
    from pipeline.spark import session

    config = configuration.load(overrides=["master=local[2]", "spark.sql.shuffle.partitions=4",
                                           "spark.ui.enabled=false"])
    s = session(config, "im2vec tests")
    yield s
    s.stop()


@pytest.fixture
def small_byte_ranges(spark):
    """Call it with a size in bytes: Spark then cuts even small input files into byte ranges (tasks)
    of that size, so line numbering across ranges is exercised; undone after the test."""
    def cut(size: int) -> None:
        spark.conf.set("spark.sql.files.maxPartitionBytes", str(size))
        spark.conf.set("spark.sql.files.openCostInBytes", "0")
    yield cut
    spark.conf.unset("spark.sql.files.maxPartitionBytes")
    spark.conf.unset("spark.sql.files.openCostInBytes")


@pytest.fixture
def root(tmp_path):
    """A fresh run root URI (file://) in a temporary folder."""
    return "file://" + str(tmp_path / "run")
