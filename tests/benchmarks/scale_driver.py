"""spark-submit app of bench_scale.py: the clean stage twice in one application, warm-up then measured.

    scale_driver.py ROOT INPUT WARM_INPUT [--set key=value]...

The first run, on a small input in many small splits, starts every executor's Python workers and
loads their modules, as the first tasks of any long job do; the second prints its manifest's seconds and phases (``SECONDS n PHASES {...}``).
"""
import sys

from jobs import clean
from pipeline import config as configuration
from pipeline.spark import session

root, metadata, warm = sys.argv[1:4]
config = configuration.load(overrides=[a for a in sys.argv[4:] if a != "--set"])
spark = session(config, "im2vec bench_scale")
# Small splits, so that the warm-up runs tasks on every executor, not only on the first one free.
split_bytes = spark.conf.get("spark.sql.files.maxPartitionBytes")
spark.conf.set("spark.sql.files.maxPartitionBytes", str(1 << 20))
clean.run(spark, config, root + "-warm", [warm])
spark.conf.set("spark.sql.files.maxPartitionBytes", split_bytes)
manifest = clean.run(spark, config, root, [metadata])
print("SECONDS", manifest["seconds"], "PHASES", manifest["phases"], flush=True)
