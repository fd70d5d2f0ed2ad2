"""im2vec's library: schemas, parsing, normalization, sampling, image I/O, storage, config.

Importing this package filters Petastorm's FutureWarnings once, for every stage and the
trainer: Petastorm 0.13.1 calls pyarrow and pandas APIs that warn on every read.
"""
import warnings

__version__ = "0.1.0"

warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\.|$)")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"petastorm(\.|$)")
# The same, for Spark's Python workers that run only Petastorm's functions (its row-group index
# job) and so never import this package; pipeline.spark hands it to them as PYTHONWARNINGS, whose
# module field is an exact name: fs_utils is where Petastorm 0.13.1 touches pyarrow.localfs.
PETASTORM_WARNINGS = "ignore::FutureWarning:petastorm.fs_utils,ignore::DeprecationWarning:petastorm.fs_utils"


# TensorFlow's start-up notices stay off the terminal (pipeline.quiet): its log level is set before
# anything imports it, here, and inherited by Spark's JVM and Python workers; a Python worker
# (which runs a stage's tasks, and the CNN) also filters what TensorFlow's C++ side writes.
from pipeline import quiet as _quiet  # noqa: E402

_quiet.set_environment()
if _quiet.in_spark_worker():
    _quiet.filter_native_stderr()


class Im2vecError(Exception):
    """An error the user can fix (bad input, bad config, missing stage): printed without a traceback."""
