"""The schedule command: keep epochs sampled ahead of the trainer and delete the ones it is done with.

A long-running driver loop over one Spark session. With T = the trainer's last finished epoch,
read from ROOT/model/progress.json (``{"epoch": T, "step": ...}``; T = 0 while the file is
missing), each pass

- deletes ROOT/epochs/epoch=E/ for every E <= T - keep (``keep`` finished epochs stay);
- makes the epochs T+1 .. min(epochs, T+ahead) that have no _manifest.json, one at a time and
  in order, re-reading progress.json after each (an epoch without a manifest is incomplete and is
  made again);
- ends the loop when epoch ``epochs`` and every epoch before it the trainer still needs exist,
  or after one pass with ``--once``; otherwise sleeps ``schedule_poll_seconds`` and goes again.

Killed and restarted, it deletes the staging folders the killed run left under ROOT/epochs/ and
carries on: epochs are deterministic, so a remade epoch is the one that would have been made.
Do not run ``im2vec sample`` on the same root meanwhile: its staging folder would be deleted.
Run with `im2vec schedule --root ROOT [--once]`.
"""
from __future__ import annotations

import time

import pyarrow.fs as pafs

from jobs import sample
from pipeline import Im2vecError, storage
from pipeline.datasets import epochs, model


def log(message: str) -> None:
    print(f"[im2vec] schedule: {message}", flush=True)


def trainer_epoch(root: str, last_known: int = 0) -> int:
    """The trainer's last finished epoch from ROOT/model/progress.json; 0 when there is no file yet.

    A file that cannot be read as ``{"epoch": int, ...}`` (e.g. caught mid-write) gives
    ``last_known`` back, so one bad read never moves the schedule backwards or stops it.
    """
    try:
        return max(last_known, int(model.load_progress(root)["epoch"]))
    except FileNotFoundError:
        return last_known
    except (OSError, ValueError, KeyError, TypeError) as err:
        log(f"cannot read {storage.join(model.DATASET.uri(root), model.PROGRESS)} ({err}); keeping epoch {last_known}")
        return last_known


def clean_staging(root: str) -> list[str]:
    """Delete the ``_staging-*`` folders under ROOT/epochs/ (left by a killed run); returns their URIs."""
    epochs_uri = storage.join(root, "epochs")
    fs, path = storage.filesystem(epochs_uri)
    stale = [storage.join(epochs_uri, info.base_name)
             for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
             if info.base_name.startswith("_staging-")]
    for uri in stale:
        storage.delete(uri)
    return stale


def run(config: dict, root: str, once: bool = False) -> list[dict]:
    """Run the schedule until every epoch through ``epochs`` exists (or one pass with ``once``).

    Args:
        config: the run configuration (ahead, keep, schedule_poll_seconds, epochs, and the sample
            stage's keys); root: the run root URI.

    Returns:
        The manifests of the epochs made, in the order they were made.
    """
    from pipeline.spark import session

    total, ahead, keep = int(config["epochs"]), int(config["ahead"]), int(config["keep"])
    poll = float(config["schedule_poll_seconds"])
    if ahead < 1 or keep < 0 or poll <= 0:
        raise Im2vecError(f"schedule needs ahead >= 1, keep >= 0, schedule_poll_seconds > 0; "
                          f"got {ahead}, {keep}, {poll}")
    sample.parameters(config)
    for uri in clean_staging(root):
        log(f"deleted {uri} left by an earlier run")
    spark = session(config, "im2vec schedule")
    inputs = None
    made: list[dict] = []
    done = 0
    while True:
        done = trainer_epoch(root, done)
        for epoch, uri in epochs.folders(root).items():
            if epoch <= done - keep:
                storage.delete(uri)
                log(f"deleted epoch {epoch} (trainer finished epoch {done})")
        missing = [e for e in range(done + 1, min(total, done + ahead) + 1)
                   if epochs.dataset(e).manifest(root) is None]
        if missing:
            inputs = inputs or sample.prepare(spark, config, root)
            manifest = sample.write_epoch(spark, config, root, inputs, missing[0])
            made.append(manifest)
            log(f"made epoch {missing[0]}: {manifest['rows_out']:,} rows in {manifest['seconds']:.1f}s "
                f"(trainer finished epoch {done})")
            continue
        if done + ahead >= total:
            log(f"every epoch through {total} is sampled (trainer finished epoch {done}); exiting")
            return made
        if once:
            return made
        time.sleep(poll)

