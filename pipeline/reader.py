"""Read im2vec's epochs from any trainer: numpy batches (for a PyTorch DataLoader, a JAX or numpy loop) or a
``tf.data.Dataset``, one shard of a distributed job, waiting for epochs not made yet, reporting progress.

    from pipeline import reader

    for epoch in range(1, epochs + 1):
        for features, pos_ids, neg_ids in reader.batches(root, epoch, batch_size=512, consumer="my-model"):
            ...   # float32[n, D], int32[n, P], int32[n, K]

The epoch contract is in :mod:`pipeline.datasets.epochs`; ``own_ids=True`` adds each row's own tags
(int32[n, M], padded with -1) to the batches of an epoch sampled for a method that writes them. With ``consumer`` set, the reader records
progress in ROOT/consumers/NAME.json (:mod:`pipeline.datasets.consumers`): the epoch as finished
once its last batch has been handed over, and a heartbeat while it reads or waits, so
``im2vec schedule`` samples ahead of this trainer and deletes only what it is done with. In a
sharded job, give the name on one worker (all move in step), or one name per shard.

Rows come in the epoch's stored order (the sample stage shuffled them); shard ``i`` of ``n`` reads
row groups ``i, i + n, i + 2n, ...`` in file order, so the shards together read every row once.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import Im2vecError, storage
from pipeline.datasets import consumers, encoding, epochs

COLUMNS = ("feature", "pos_ids", "neg_ids")


def epoch_url(root: str, epoch: int) -> str:
    """Epoch ``epoch``'s folder as a URL Petastorm opens (file://, hdfs://; s3a:// as s3://)."""
    url = storage.to_uri(epochs.uri(root, epoch))
    return "s3://" + url[len("s3a://"):] if url.startswith("s3a://") else url


class _Heartbeat:
    """Keeps a consumer's file fresh while it works on an epoch: first at once, then every HEARTBEAT_SECONDS."""

    def __init__(self, root: str, consumer: str | None, finished: int):
        self.root, self.consumer, self.finished = root, consumer, finished
        self.step = _last_step(root, consumer) if consumer else 0
        self.last = 0.0
        self.beat()

    def beat(self, force: bool = True) -> None:
        if self.consumer and (force or time.time() - self.last >= consumers.HEARTBEAT_SECONDS):
            consumers.report(self.root, self.consumer, self.finished, self.step)
            self.last = time.time()


def _last_step(root: str, consumer: str) -> int:
    return next((c.step for c in consumers.read_all(root) if c.name == consumer), 0)


def report(root: str, consumer: str, epoch: int, step: int = 0) -> None:
    """Record that ``consumer`` finished epoch ``epoch`` at its step ``step`` (see :func:`consumers.report`)."""
    consumers.report(root, consumer, epoch, step)


def wait_for_epoch(root: str, epoch: int, *, consumer: str | None = None, poll_seconds: float = 10.0,
                   timeout: float | None = None, log: Callable[[str], None] = print) -> dict:
    """Block until epoch ``epoch`` is complete (its ``_manifest.json`` exists); return the manifest.

    Args:
        root: run root URI; epoch: from 1. consumer: keeps NAME.json fresh meanwhile (as having
            finished ``epoch - 1``). poll_seconds: between looks. timeout: seconds (None = for ever).
        log: where the "waiting" line goes (once, then every ~10 minutes).

    Raises:
        Im2vecError: on timeout; an epoch of a schema version this im2vec does not know; an epoch
            sampled without features.
    """
    uri = epochs.uri(root, epoch)
    heartbeat = _Heartbeat(root, consumer, epoch - 1)
    started = last_log = time.time()
    manifest = storage.read_manifest(uri)
    if manifest is None:
        log(f"waiting for epoch {epoch}: {uri} has no _manifest.json yet (is `im2vec schedule --root {root}` "
            f"running? `im2vec sample --epochs {epoch}-{epoch}` makes it too); looking every {poll_seconds:g}s")
    while manifest is None:
        if timeout is not None and time.time() - started > timeout:
            raise Im2vecError(f"epoch {epoch} did not appear in {uri} within {timeout:g}s")
        time.sleep(poll_seconds)
        heartbeat.beat(force=False)
        manifest = storage.read_manifest(uri)
        if manifest is None and time.time() - last_log > 600:
            log(f"still waiting for epoch {epoch} ({time.time() - started:.0f}s)")
            last_log = time.time()
    epochs.check(manifest, uri)
    if not manifest.get("feature_dim"):
        raise Im2vecError(f"{uri} was sampled without features: run `im2vec features`, then sample again")
    return manifest


def row_groups(uri: str, shard: int = 0, shards: int = 1) -> list[tuple[str, int]]:
    """The (file path, row group) pairs of shard ``shard`` of ``shards`` of an epoch folder, in read order."""
    if not 0 <= shard < shards:
        raise Im2vecError(f"shard must be in 0..{shards - 1} for {shards} shards, got {shard}")
    fs, path = storage.filesystem(uri)
    files = sorted(info.path for info in fs.get_file_info(pafs.FileSelector(path))
                   if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
                   and not info.base_name.startswith(("_", ".")))
    every = [(file, group) for file in files for group in range(pq.ParquetFile(file, filesystem=fs).num_row_groups)]
    return every[shard::shards]


def fixed_lists(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A list<int32> column whose lists all hold ``width`` values -> int32[n, width]."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = array.offsets.to_numpy()
    if np.any(np.diff(offsets) != width):
        raise Im2vecError(f"a list column holds lists of other lengths than {width}: not an im2vec epoch")
    return array.values.to_numpy()[offsets[0]:offsets[-1]].astype(np.int32, copy=False).reshape(len(array), width)


def batches(root: str, epoch: int, *, batch_size: int = 1024, shard: int = 0, shards: int = 1,
            consumer: str | None = None, poll_seconds: float = 10.0, timeout: float | None = None,
            log: Callable[[str], None] = print, own_ids: bool = False) -> Iterator[tuple[np.ndarray, ...]]:
    """One pass over shard ``shard`` of ``shards`` of epoch ``epoch``, waiting for it first.

    Yields:
        ``(features, pos_ids, neg_ids)``: float32[n, D], int32[n, P], int32[n, K] (K may be 0: a
        positives-only epoch), and with ``own_ids`` a fourth, int32[n, M], with n = ``batch_size``,
        except the last batch of the shard (fewer). Once the last batch has been
        handed over, ``consumer`` (if given) is recorded as having finished the epoch, its step
        advanced by the batches read.

    Raises:
        Im2vecError: ``own_ids`` asked of an epoch without them (see :func:`wait_for_epoch` too).
    """
    manifest = wait_for_epoch(root, epoch, consumer=consumer, poll_seconds=poll_seconds, timeout=timeout, log=log)
    widths = {"pos_ids": int(manifest["positives"]), "neg_ids": int(manifest["negatives"]),
              "own_ids": int(manifest.get("own_tags") or 0)}
    if own_ids and not widths["own_ids"]:
        raise Im2vecError(f"{epochs.uri(root, epoch)} holds no own_ids: it was sampled for sampling "
                          f"{manifest.get('sampling', 'presampled')}; sample it for a method that writes them")
    columns = COLUMNS + (("own_ids",) if own_ids else ())
    heartbeat = _Heartbeat(root, consumer, epoch - 1)
    fs, _ = storage.filesystem(epochs.uri(root, epoch))
    held = None   # the rows after the last full batch, fewer than batch_size
    for file, group in row_groups(epochs.uri(root, epoch), shard, shards):
        table = pq.ParquetFile(file, filesystem=fs).read_row_group(group, columns=list(columns))
        rows = (encoding.decode_ndarray(table.column("feature")).astype(np.float32),
                *(fixed_lists(table.column(name), widths[name]) for name in columns[1:]))
        if held is not None:
            rows = tuple(np.concatenate([before, after]) for before, after in zip(held, rows))
        full = len(rows[0]) // batch_size * batch_size
        for start in range(0, full, batch_size):
            yield tuple(column[start:start + batch_size] for column in rows)
            heartbeat.step += 1
            heartbeat.beat(force=False)
        held = tuple(column[full:] for column in rows)
    if held is not None and len(held[0]):
        yield held
        heartbeat.step += 1
    if consumer:
        consumers.report(root, consumer, epoch, heartbeat.step)


def tf_dataset(root: str, epoch: int, **options):
    """:func:`batches` as a ``tf.data.Dataset`` of ``(features, pos_ids, neg_ids[, own_ids])`` tuples.

    Waits for the epoch when called (its manifest gives the shapes); ``options`` are
    :func:`batches`'s. Each iteration of the dataset is one pass.
    """
    import tensorflow as tf

    waiting = {k: options[k] for k in ("consumer", "poll_seconds", "timeout", "log") if k in options}
    manifest = wait_for_epoch(root, epoch, **waiting)
    signature = (tf.TensorSpec([None, int(manifest["feature_dim"])], tf.float32),
                 tf.TensorSpec([None, int(manifest["positives"])], tf.int32),
                 tf.TensorSpec([None, int(manifest["negatives"])], tf.int32),
                 *([tf.TensorSpec([None, int(manifest.get("own_tags") or 0)], tf.int32)] if options.get("own_ids")
                   else []))
    return tf.data.Dataset.from_generator(lambda: batches(root, epoch, **options), output_signature=signature)
