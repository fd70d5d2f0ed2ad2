"""Thin Spark entry points, one per stage: read config, call pipeline transformations, write.

Each module has ``run(spark, config, root, ...)`` for in-process use and ``main()`` for
``spark-submit jobs/<stage>.py --root ROOT ...`` (the same arguments as ``im2vec <stage>``).
"""
