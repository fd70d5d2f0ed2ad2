"""Thin Spark entry points, one per stage: read config, call pipeline transformations, write.

Each module has ``run(spark, config, root, ...)``; nothing here imports the command line, which
sits above (pipeline.cli, pipeline.run). spark-submit runs a stage through the command line:
``spark-submit pipeline/app/main.py <stage> --root ROOT ...`` (pipeline.submit builds that line).
Datasets are read and written through pipeline.datasets. ``jobs.daemon`` is no stage: it is the
Python daemon Spark starts every stage's Python workers from (``spark.python.daemon.module``).
"""
