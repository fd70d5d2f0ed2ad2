"""TensorFlow's start-up notices stay off stderr unless IM2VEC_VERBOSE asks for them (pipeline.quiet)."""
import os
import subprocess
import sys

import pytest

from pipeline import quiet

NOTICES = ("oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard", "port.cc")
# What the im2vec command does before anything else, then TensorFlow's import and a first op (kernels
# load then, with a second round of notices), then a real error from C code and one from Python.
CODE = """
import os, sys
from pipeline import quiet
quiet.filter_native_stderr()
import tensorflow as tf
print(float(tf.reduce_sum(tf.ones(3))))
os.write(2, b"native error line\\n")
print("python error line", file=sys.stderr)
"""


def run(**env):
    environment = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.VERBOSE_ENV)}
    return subprocess.run([sys.executable, "-c", CODE], env={**environment, **env}, capture_output=True, text=True,
                          timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


@pytest.mark.slow
def test_tensorflow_notices_are_dropped_and_real_errors_pass():
    quiet_run, verbose_run = run(), run(IM2VEC_VERBOSE="1")
    assert quiet_run.returncode == verbose_run.returncode == 0, quiet_run.stderr
    assert quiet_run.stdout.strip() == verbose_run.stdout.strip() == "3.0"
    assert any(n in verbose_run.stderr for n in NOTICES)   # there is noise to drop
    assert not [n for n in NOTICES if n in quiet_run.stderr], quiet_run.stderr
    for text in (quiet_run.stderr, verbose_run.stderr):
        assert "native error line" in text and "python error line" in text


def test_noise_pattern():
    assert quiet.NOISE.match(b"I0000 00:00:1796539764.713998   27206 port.cc:153] oneDNN custom operations are on.")
    assert quiet.NOISE.match(b"I1206 06:46:12.084515   27206 cpu_feature_guard.cc:227] This TensorFlow binary is")
    assert quiet.NOISE.match(b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert quiet.NOISE.match(b"To enable the following instructions: AVX2 FMA, in other operations, rebuild ...")
    assert not quiet.NOISE.match(b"E0000 00:00:1796539764.713998   27206 cuda.cc:1] failed to initialize")
    assert not quiet.NOISE.match(b"Traceback (most recent call last):")
    for line in (b'Setting default log level to "WARN".',
                 b"To adjust logging level use sc.setLogLevel(newLevel). For SparkR, use setLogLevel(newLevel).",
                 b"26/12/06 07:16:20 WARN NativeCodeLoader: Unable to load native-hadoop library for your platform...",
                 b"26/12/06 07:16:07 WARN Utils: Your hostname, vm resolves to a loopback address: 127.0.0.1; using x",
                 b"26/12/06 07:16:40 WARN Utils: Service 'SparkUI' could not bind on port 4040. Attempting port 4041."):
        assert quiet.NOISE.match(line), line
    assert not quiet.NOISE.match(b"26/12/06 07:16:40 WARN TaskSetManager: Lost task 0.0 in stage 1.0")


def test_environment_is_set_unless_verbose(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
    quiet.set_environment()
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    monkeypatch.setenv(quiet.VERBOSE_ENV, "0")
    quiet.set_environment()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
