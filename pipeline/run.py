"""Running stages for the command line: one stage with progress and a summary line, or `im2vec run`, all of them.

Above jobs/ and model/ (it imports them), below pipeline.cli (which parses the arguments).
"""
from __future__ import annotations

import importlib
import sys
import time

from pipeline import storage
from pipeline.datasets import features, model as model_data
from pipeline.status import STAGES, number, status_text


def stage(name: str, config: dict, root: str, *, inputs: list[str] | None = None,
          epochs: tuple[int, int] | None = None) -> dict:
    """Run the Spark stage ``name`` (jobs/NAME.py) in a session of its own, reporting progress on stderr.

    Args:
        name: a stage of STAGES or ``"index"``; config: the run configuration; root: the run root URI.
        inputs: clean's input files, folders or globs. epochs: sample's inclusive range (default 1..epochs).

    Returns:
        The stage's manifest; a summary line (rows in/out/rejected, seconds, output) goes to stdout.
    """
    from pipeline import progress
    from pipeline.spark import session

    job = importlib.import_module(f"jobs.{name}")
    spark = session(config, f"im2vec {name}")
    started = time.time()
    kwargs = {}
    if name == "clean":
        kwargs["inputs"] = inputs
    if name == "sample":
        kwargs["epochs"] = epochs or (1, int(config["num_epochs"]))
    with progress.report(spark, name):
        manifest = job.run(spark, config, root, **kwargs)
    print(f"[im2vec] {name}: {manifest['rows_in']:,} rows in, {manifest['rows_out']:,} out, "
          f"{manifest['rows_rejected']:,} rejected in {time.time() - started:.1f}s -> {manifest['output']}")
    return manifest


def train(config: dict, root: str) -> dict:
    """Train (model.train.run) until config ``epochs``; prints the validation summary; returns the manifest."""
    from model import train as trainer

    m = trainer.run(config, root)
    print(f"[im2vec] train: epoch {m['epoch']}, step {m['step']}; validation per-tag F1@5 {number(m.get('val_f1'))} "
          f"(popularity {number(m.get('popularity_f1'))}), P@5 {number(m.get('val_p_at_5'))} "
          f"(popularity {number(m.get('popularity_p_at_5'))}) -> {m.get('output', m.get('model_dir'))}")
    return m


def evaluate(config: dict, root: str) -> dict:
    """Evaluate the model on the test split (model.evaluate.run); prints the report; returns the manifest."""
    from model import evaluate as evaluation

    manifest = evaluation.run(config, root)
    print(manifest["markdown"])
    print(f"[im2vec] evaluate: {manifest['rows_out']:,} test images in {manifest['seconds']:.1f}s -> "
          f"{manifest['output']}/evaluation.json, evaluation.md, evaluation_pr.png, evaluation_examples.png")
    return manifest


def evaluate_against(config: dict, root: str, other_root: str) -> dict:
    """Evaluate root's model on other_root's test images (model.cross.run); prints the report; returns the manifest."""
    from model import cross

    manifest = cross.run(config, root, other_root)
    print(manifest["markdown"])
    print(f"[im2vec] evaluate: {manifest['rows_out']:,} test images of {other_root} in {manifest['seconds']:.1f}s "
          f"-> {manifest['output']}/evaluation.json, evaluation.md")
    return manifest


def everything(config: dict, root: str, inputs: list[str]) -> None:
    """`im2vec run`: every stage in order, clean..sample, then (with features) train, index and evaluate.

    Without an ``images`` template the features stage is skipped (and so is everything after
    sample). A model from an earlier run is deleted first: the stages before it were made anew.
    """
    for name in STAGES:
        if name == "features" and not config.get("image_uri"):
            print("[im2vec] features: SKIPPED: no image source; pass --set image_uri=TEMPLATE "
                  "(sample then runs without a feature column, and there is nothing to train on)", file=sys.stderr)
            continue
        stage(name, config, root, inputs=inputs)
    if features.DATASET.manifest(root) is not None:
        model_uri = model_data.DATASET.uri(root)
        if storage.exists(model_uri):
            print(f"[im2vec] train: starting over: deleting the earlier model {model_uri}", file=sys.stderr)
            storage.delete(model_uri)
        train(config, root)
        stage("index", config, root)
        evaluate(config, root)
    print()
    print(status_text(root))
