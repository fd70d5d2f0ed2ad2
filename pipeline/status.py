"""`im2vec status`: what each stage under a run root produced, and `--verify`: do its files match the manifests.

Reads manifests and the trainer's progress only (pipeline.datasets); never Spark or TensorFlow.
"""
from __future__ import annotations

import json

import pyarrow.fs as pafs

from pipeline import Im2vecError, config as configuration, datasets, storage
from pipeline.datasets import consumers, epochs, model, reports

# Spark stages in pipeline order; `im2vec run` runs every one of them.
STAGES = ["clean", "vocab", "wordvec", "features", "sample"]
# What train, index and evaluate write, after the Spark stages' outputs.
MODEL_OUTPUTS = ["model", "index", "reports"]
# A folder under one of these named _staging-* is a stage's unfinished output (storage.staging_uri).
STAGING_PARENTS = ["", "rejects", "epochs"]


def stage_manifests(root: str) -> dict[str, dict | None]:
    """{output folder: its manifest or None} for every stage under ``root``, in pipeline order.

    Most stages write one folder named like the stage; ``sample`` writes one folder per epoch;
    then MODEL_OUTPUTS (train: ``model/``, index: ``index/``, evaluate: ``reports/``).
    """
    found: dict[str, dict | None] = {}
    for name in STAGES:
        if name != "sample":
            found[name] = storage.read_manifest(storage.join(root, name))
            continue
        for epoch in epochs.folders(root):
            found[epochs.dataset(epoch).name] = epochs.dataset(epoch).manifest(root)
        if not any(k.startswith("epochs/") for k in found):
            found["epochs"] = None
    for name in MODEL_OUTPUTS:
        found[name] = storage.read_manifest(storage.join(root, name))
    return found


def staging_folders(root: str) -> list[str]:
    """URIs of the ``_staging-*`` folders under ``root`` (and its rejects/ and epochs/), sorted.

    A stage builds its output in one and moves it into place at the end; one that is still
    there after the stage ended is left by a crashed run.
    """
    found = []
    for parent in STAGING_PARENTS:
        uri = storage.join(root, parent) if parent else root
        if not storage.exists(uri):
            continue
        fs, path = storage.filesystem(uri)
        found += [storage.join(uri, info.base_name) for info in fs.get_file_info(pafs.FileSelector(path))
                  if info.type == pafs.FileType.Directory and info.base_name.startswith("_staging-")]
    return sorted(found)


def number(value, digits: int = 4) -> str:
    """A score as text: ``0.21345`` -> ``"0.2135"``; None -> ``"-"``."""
    return "-" if value is None else f"{value:.{digits}f}"


def _evaluation(root: str) -> dict:
    """reports/evaluation.json, or {} when there is none yet or it fails the data guard (--verify says why)."""
    try:
        return reports.read_evaluation(root) or {}
    except (Im2vecError, OSError, ValueError):
        return {}


def _summary_lines(root: str, manifests: dict[str, dict | None]) -> list[str]:
    """Lines on training progress (model/progress.json), the index and the evaluation, where they exist."""
    lines = []
    progress = model.read_progress(root)
    if progress:
        lines.append(f"train: epoch {progress.get('epoch')}, step {progress.get('step') or 0:,}, validation P@5 "
                     f"{number(progress.get('val_p_at_5'))} (popularity {number(progress.get('popularity_p_at_5'))}), "
                     f"updated {progress.get('updated', '-')}")
    index = manifests.get("index")
    if index:
        trained = (manifests.get("model") or progress or {}).get("epoch")
        stale = "" if trained is None or index.get("model_epoch") in (None, trained) else \
            f": older than the model (epoch {trained}), run `im2vec index` again"
        lines.append(f"index: {index['rows_out']:,} embeddings of dimension {index.get('dim')} from the model "
                     f"of epoch {index.get('model_epoch')}{stale}")
    for method, scores in _evaluation(root).items():
        if isinstance(scores, dict) and "p_at_5" in scores:
            lines.append(f"evaluate {method}: P@5 {number(scores.get('p_at_5'))} R@5 {number(scores.get('r_at_5'))} "
                         f"F1 {number(scores.get('f1'))} mAP {number(scores.get('map'))}")
    return lines


def _stale_seconds(stale_seconds: float | None) -> float:
    return float(configuration.defaults()["consumer_stale_seconds"] if stale_seconds is None else stale_seconds)


def consumer_lines(root: str, stale_seconds: float | None = None) -> list[str]:
    """One line per consumer of the epochs (ROOT/consumers/): its last finished epoch, step, last report, and
    whether it is stale (silent for more than ``stale_seconds``, default the config's consumer_stale_seconds)."""
    stale_seconds = _stale_seconds(stale_seconds)
    return [f"consumer {c.name}: finished epoch {c.epoch}, step {c.step:,}, reported {c.age_seconds:,.0f}s ago "
            f"({c.updated.isoformat(timespec='seconds')})"
            + (f": STALE (silent over {stale_seconds:g}s), no longer holds epochs back"
               if c.stale(stale_seconds) else "")
            for c in consumers.read_all(root)]


def status_text(root: str, stale_seconds: float | None = None) -> str:
    """A table of every stage output under ``root``: complete (counts, time), partial or missing.

    Then, where they exist: training progress, the index, the evaluation's scores, the consumers
    of the epochs (:func:`consumer_lines`), and any ``_staging-*`` folder a crashed run left behind.
    """
    lines = [f"im2vec run at {root}", f"{'output':<20} {'state':<9} {'rows in':>12} {'rows out':>12} "
             f"{'rejected':>10} {'seconds':>8}  finished"]
    manifests = stage_manifests(root)
    for name, manifest in manifests.items():
        if manifest is None:
            # reports/ also holds the trainer's plot: evaluate has started once evaluation.json exists.
            started = storage.join(root, name, reports.EVALUATION) if name == "reports" else storage.join(root, name)
            state = "partial" if storage.exists(started) else "missing"
            lines.append(f"{name:<20} {state:<9}")
            continue
        lines.append(f"{name:<20} {'complete':<9} {manifest['rows_in']:>12,} {manifest['rows_out']:>12,} "
                     f"{manifest['rows_rejected']:>10,} {manifest['seconds']:>8.1f}  {manifest['finished']}")
    lines += _summary_lines(root, manifests)
    lines += consumer_lines(root, stale_seconds)
    lines += [f"stale staging folder from a crashed run: {uri} (safe to delete unless a stage is running now)"
              for uri in staging_folders(root)]
    return "\n".join(lines)


def status_json(root: str, stale_seconds: float | None = None) -> str:
    """The manifests, the trainer's progress, the consumers and the stale staging folders under ``root``, as JSON."""
    stale_seconds = _stale_seconds(stale_seconds)
    return json.dumps({**stage_manifests(root), "model/progress.json": model.read_progress(root) or None,
                       "consumers": [c.as_json(stale_seconds) for c in consumers.read_all(root)],
                       "stale_staging": staging_folders(root)}, indent=2)


def verify_text(root: str) -> tuple[str, bool]:
    """`status --verify`: every finished dataset's files against its manifest, and the consumers' reports.

    Returns:
        ``(text, ok)``: one line per problem (or that every dataset matches), a note on datasets
        whose manifest lists no files; ok is False when any file is missing, extra, truncated or
        (a consumer's report) unreadable.
    """
    problems, checked, unchecked = datasets.verify(root)
    manifested = [name for name in checked if name != consumers.FOLDER]
    lines = [f"verify: {len(manifested)} finished dataset(s) checked against their manifests"
             + (", the consumers' reports parsed" if consumers.FOLDER in checked else "") + ": "
             + ("every data file is there, whole, and nothing else" if not problems else f"{len(problems)} problem(s)")]
    lines += [f"verify: {line}" for line in problems]
    if unchecked:
        lines.append(f"verify: not checked (their manifest lists no files; written by an older im2vec): "
                     f"{', '.join(unchecked)}")
    return "\n".join(lines), not problems
