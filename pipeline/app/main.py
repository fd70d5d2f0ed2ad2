"""spark-submit's application file for every stage: ``spark-submit [...] pipeline/app/main.py STAGE --root ROOT ...``.

It runs ``im2vec STAGE ...`` (pipeline.cli), the one entry point above jobs/ and model/. It sits
alone in its folder because spark-submit runs it as a script, which puts the script's folder
first on ``sys.path``: run from pipeline/, its modules (config, progress, tags, datasets, ...)
would shadow any installed top-level module of the same name.
"""
import sys

from pipeline import cli

if __name__ == "__main__":
    sys.exit(cli.main())
