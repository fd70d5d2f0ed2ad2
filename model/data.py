"""The trainer's input: epoch datasets read with Petastorm into ``tf.data``, and the validation set.

This is the one module that knows how the trainer reads training data. The sample stage writes
each epoch as the epoch contract says (pipeline.datasets.epochs: photo_id, feature = Petastorm's
NdarrayCodec float16[D], pos_ids int32[P], neg_ids int32[K], and for the sampling methods that
need it own_ids int32[M]); Petastorm's ``make_batch_reader``
reads it a row group at a time, in shuffled row-group order, in reader threads, and
:func:`epoch_dataset` turns the row groups into training batches. A later move off Petastorm
changes this file only. (Other trainers read epochs through pipeline.reader.)

Why the reading path looks the way it does (see tests/benchmarks/bench_train.py): Petastorm's own
Arrow -> numpy conversion builds one numpy array per row for list columns and one ``bytes`` per
row for binary columns, then stacks them; at tens of thousands of examples/s that per-row Python
competes with the model for the same cores. Here each row group stays an Arrow table until its
columns are viewed as flat numpy arrays without a copy (the lists are fixed-size, so their
values reshape to [n, P] and [n, K]); the whole row group goes into ``tf.data`` as it is, with a
permutation of its rows, and the graph gathers each batch from it and decodes the float16
features (the .npy header, the same length on every row, sliced off, then a bitcast of byte pairs). Python runs once per row group, not per batch or row.
Shuffling costs little: Petastorm reads row groups in shuffled order, rows are permuted within
each row group, a ``tf.data`` shuffle buffer mixes whole batches of neighbouring row groups, and
the sample stage has already shuffled the epoch globally.
"""
from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import tensorflow as tf

from pipeline import sampling, storage
from pipeline.datasets import encoding, features as features_data, tagged as tagged_data, vocab as vocab_data

COLUMNS = ("feature", "pos_ids", "neg_ids")
OWN_IDS = "own_ids"


def read_row_groups(uri: str, *, seed: int | None = None, cur_shard: int | None = None,
                    shard_count: int | None = None, workers: int = 1, columns=COLUMNS):
    """Yield an epoch's row groups with Petastorm, as ``(feature_bytes, pos_ids, neg_ids)`` numpy arrays.

    Args:
        uri: an epoch folder (any storage URI).
        seed: orders the row groups; the same seed on every worker of a distributed job keeps
            the shards disjoint.
        cur_shard, shard_count: read only shard ``cur_shard`` of ``shard_count`` (whole row groups,
            each in exactly one shard); None = everything.
        workers: Petastorm reader threads.
        columns: :data:`COLUMNS`, and :data:`OWN_IDS` after them to read it too.

    Yields:
        ``feature_bytes`` uint8[n, H + 2·D] (NdarrayCodec: an H-byte .npy header, then little-endian
        float16), ``pos_ids`` int32[n, P],
        ``neg_ids`` int32[n, K] [, ``own_ids`` int32[n, M]]: one row group (n rows) at a time, rows in file order.
    """
    from petastorm import make_batch_reader
    from petastorm.arrow_reader_worker import ArrowReaderWorkerResultsQueueReader

    url = storage.to_uri(uri)
    # Petastorm resolves file://, hdfs:// and s3:// itself (s3 through s3fs); it knows s3a as s3.
    url = "s3://" + url[len("s3a://"):] if url.startswith("s3a://") else url
    # shuffle_rows=False: Petastorm copies each row group with Table.take either way, and the
    # identity order copies faster; batch_orders permutes the rows.
    with warnings.catch_warnings():
        # It suggests make_reader for a dataset with codecs; this reader takes the Arrow tables as they are.
        warnings.filterwarnings("ignore", message="Please use make_reader")
        reader = make_batch_reader(url, schema_fields=list(columns),
                                   shuffle_row_groups=True, shuffle_rows=False, seed=seed, num_epochs=1,
                                   cur_shard=cur_shard, shard_count=shard_count, workers_count=workers)
    # Take each row group as the Arrow table the worker read, skipping Petastorm's per-row numpy
    # conversion (see the module docstring). Pinned petastorm 0.13.1: fail loudly if that changes.
    if type(reader._results_queue_reader) is not ArrowReaderWorkerResultsQueueReader:
        raise RuntimeError("unexpected Petastorm reader internals; update model/data.py")
    reader._results_queue_reader = _ArrowTables()
    try:
        for table in reader:
            yield arrow_columns(table, columns)
    finally:
        # Not the context manager: its exit prints "Cache cleanup complete." on every epoch.
        reader.stop()
        reader.join()


class _ArrowTables:
    """Petastorm results-queue reader handing over each row group's Arrow table as it is.

    It also works around a race in petastorm 0.13.1's ThreadPool.get_results, which can end an
    epoch early and silently drop row groups (seen: 543 of 1,000 rows, or none of a shard):
    it checks "every worker's queue is empty and done" and then "the ventilator is complete" as
    two steps, and the ventilator can hand out the remaining row groups in between. After that
    end-of-data signal the ventilator is complete and its counts are final, so row groups still
    out (ventilated > processed) mean the signal was premature: keep reading.
    """

    batched_output = True

    def read_next(self, workers_pool, schema, ngram):
        from petastorm.workers_pool import EmptyResultError

        while True:
            try:
                return workers_pool.get_results()
            except EmptyResultError:
                if getattr(workers_pool, "_ventilated_items_by_worker", None) == \
                        getattr(workers_pool, "_ventilated_items_processed_by_worker", None):
                    raise StopIteration from None


def arrow_columns(table: pa.Table, columns=COLUMNS) -> tuple[np.ndarray, ...]:
    """One epoch row group as numpy without per-row work: (uint8[n, H + 2·D], int32[n, P], int32[n, K]
    [, int32[n, M] with :data:`OWN_IDS` among ``columns``]).

    The arrays are views of the table's buffers (no copy when each column is one chunk).

    Raises:
        ValueError: rows of unequal feature size or list length (not a sample-stage epoch).
    """
    n = table.num_rows

    def column(name: str) -> pa.Array:
        chunked = table.column(name)
        # combine_chunks copies even a single chunk (30 ms for a 32 MiB row group)
        return chunked.chunk(0) if chunked.num_chunks == 1 else chunked.combine_chunks()

    arrays = []
    for name in columns:
        array = column(name)
        if name == "feature":
            offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)[array.offset:array.offset + n + 1]
            values = np.frombuffer(array.buffers()[2], dtype=np.uint8)
        else:
            offsets = array.offsets.to_numpy()
            values = array.values.to_numpy()
        widths = np.diff(offsets)
        if n and np.any(widths != widths[0]):
            raise ValueError(f"{name} values differ in length between rows")
        arrays.append(values[offsets[0]:offsets[-1]].reshape(n, int(widths[0]) if n else 0))
    return tuple(arrays)


def batch_orders(row_groups, batch_size: int, shuffle: bool = True, seed: int | None = None):
    """Plan a pass's batches over row groups without copying the row groups.

    Args:
        row_groups: iterable of same-length column tuples (numpy arrays, one row per row of axis 0),
            e.g. :func:`read_row_groups`.
        batch_size: rows per batch; every batch but the last of the pass is full.
        shuffle: permute the rows of each row group (else batches follow the rows' order).
        seed: seeds the permutations.

    Yields:
        ``(columns, order)``: ``order`` int64[m] holds row numbers of ``columns`` and m is a multiple
        of ``batch_size`` except in the last piece of the pass; batch b is ``columns[order[b·B:(b+1)·B]]``.
        ``columns`` is a whole row group as it came (no copy), or, where a batch spans row groups,
        that one batch stitched together in numpy.
    """
    rng = np.random.default_rng(seed)
    held = None    # rows left over from earlier row groups (fewer than batch_size), copied
    for group in row_groups:
        order = rng.permutation(len(group[0])) if shuffle else np.arange(len(group[0]))
        if held is not None:
            need = batch_size - len(held[0])
            held = tuple(np.concatenate([h, column[order[:need]]]) for h, column in zip(held, group))
            order = order[need:]
            if len(held[0]) < batch_size:
                continue
            yield held, np.arange(batch_size)
            held = None
        full = len(order) // batch_size * batch_size
        if full:
            yield group, order[:full]
        if full < len(order):
            held = tuple(column[order[full:]] for column in group)
    if held is not None:
        yield held, np.arange(len(held[0]))


def epoch_dataset(uri: str, *, feature_dim: int, positives: int, negatives: int, batch_size: int,
                  shuffle_buffer: int = 8192, seed: int | None = None, cur_shard: int | None = None,
                  shard_count: int | None = None, workers: int = 1, own_tags: int = 0) -> tf.data.Dataset:
    """One pass over an epoch folder as a ``tf.data.Dataset`` of training batches.

    Args:
        uri: ``ROOT/epochs/epoch=E``; feature_dim, positives, negatives: D, P and K (from its manifest).
        own_tags: M (the manifest's ``own_tags``) to read ``own_ids`` too; 0 = do not read it.
        batch_size: rows per batch (one batch of the pass, the last one unless shuffled, may be smaller).
        shuffle_buffer: rows of the shuffle buffer: with > 0, rows are permuted within each row
            group and whole batches are mixed in a ``tf.data`` shuffle buffer of about this many
            rows (so across neighbouring row groups); with 0, batches follow the rows' file order
            (row groups are still read in shuffled order, and the sample stage shuffled the rows).
        seed, cur_shard, shard_count, workers: as for :func:`read_row_groups`.

    Returns:
        A dataset of dicts: ``feature`` float16[B, D], ``pos_ids`` int32[B, P], ``neg_ids``
        int32[B, K] [, ``own_ids`` int32[B, M]], prefetched. Each iteration opens a fresh Petastorm reader.
    """
    columns = COLUMNS + ((OWN_IDS,) if own_tags else ())
    widths = {"pos_ids": positives, "neg_ids": negatives, OWN_IDS: own_tags}
    signature = (tf.TensorSpec([None, None], tf.uint8), *(tf.TensorSpec([None, widths[name]], tf.int32)
                                                         for name in columns[1:]), tf.TensorSpec([None], tf.int64))

    def pieces():
        groups = read_row_groups(uri, seed=seed, cur_shard=cur_shard, shard_count=shard_count, workers=workers,
                                 columns=columns)
        for arrays, order in batch_orders(groups, batch_size, shuffle_buffer > 0, seed):
            yield (*arrays, order)

    def to_batches(feature_bytes, *ids_and_order):
        *tag_ids, order = ids_and_order

        def batch(start):
            rows = order[start:start + batch_size]
            # The values are the last 2·D bytes of each row's NdarrayCodec encoding.
            values = tf.gather(feature_bytes, rows)[:, -2 * feature_dim:]
            return {"feature": bytes_to_float16(values, feature_dim),
                    **{name: tf.gather(ids, rows) for name, ids in zip(columns[1:], tag_ids)}}
        return tf.data.Dataset.range(0, tf.size(order, out_type=tf.int64), batch_size).map(batch)

    # The generator hands over whole row groups, which TensorFlow takes without a copy (Arrow's
    # buffers are 64-byte aligned), and a permutation; the graph gathers each batch from them
    # without the GIL. Python thus runs once per row group, not per batch: every call into
    # Python holds the GIL the training loop needs to dispatch its next step, and fresh numpy
    # batches cost page faults. tf.data never handles single rows: per-row elements (rebatch,
    # shuffle, unbatch) would each cost more than the model's step; its shuffle buffer holds batches.
    dataset = tf.data.Dataset.from_generator(pieces, output_signature=signature).flat_map(to_batches)
    if shuffle_buffer > 0:
        dataset = dataset.shuffle(max(1, shuffle_buffer // batch_size), seed=seed)
    return dataset.prefetch(tf.data.AUTOTUNE)


def bytes_to_float16(feature_bytes: tf.Tensor, feature_dim: int) -> tf.Tensor:
    """uint8[n, 2·D] raw little-endian float16 -> float16[n, D], in the graph."""
    pairs = tf.reshape(feature_bytes, [-1, feature_dim, 2])
    if np.little_endian:
        return tf.bitcast(pairs, tf.float16)
    return tf.bitcast(tf.reverse(pairs, axis=[-1]), tf.float16)


# --- what does not change between epochs ------------------------------------------------------

def read_vocab(root: str) -> pa.Table:
    """ROOT/vocab/ in tag_id order: tag_id, tag, images, neg_weight, pos_weight (tag_id runs 0..V-1)."""
    return vocab_data.read(root, ["tag_id", "tag", "images", "neg_weight", "pos_weight"])


def train_tag_counts(root: str, vocab_size: int) -> np.ndarray:
    """Train-split images per tag: int64[V], counted from ROOT/tagged/ one record batch at a time.

    The popularity baseline ranks by these: the vocabulary's own counts include the validation
    images, which would let the baseline peek at the answers.
    """
    counts = np.zeros(vocab_size, dtype=np.int64)
    for batch in tagged_data.split_batches(root, "train"):
        counts += np.bincount(batch.column(0).flatten().to_numpy(), minlength=vocab_size)[:vocab_size]
    return counts


def train_tag_shares(root: str, vocab: pa.Table) -> sampling.TagShares:
    """The train split's per-tag shares (:class:`pipeline.sampling.TagShares`), from ROOT/tagged/ one
    record batch at a time and vocab/'s neg_weight and pos_weight (``vocab`` from :func:`read_vocab`)."""
    size = vocab.num_rows
    pos_weight = vocab.column("pos_weight").to_numpy()
    carrying, positive, images = np.zeros(size), np.zeros(size), 0
    for batch in tagged_data.split_batches(root, "train"):
        lists = batch.column(0)
        offsets = lists.offsets.to_numpy().astype(np.int64)
        tag_ids = lists.values.to_numpy()[offsets[0]:offsets[-1]]
        carrying += np.bincount(tag_ids, minlength=size)[:size]
        positive += sampling.positive_shares(offsets - offsets[0], tag_ids, pos_weight)[:size]
        images += int(np.count_nonzero(np.diff(offsets)))
    neg_weight = vocab.column("neg_weight").to_numpy().astype(np.float64)
    return sampling.TagShares(neg_weight / neg_weight.sum(), positive / max(images, 1), carrying / max(images, 1))


def validation_set(root: str, vocab: pa.Table, *, limit: int, seed: int, positives: int, negatives: int,
                   user_cap: int = 0, exclude_own_tags: bool = True) -> dict:
    """Validation images with features, their true tags, and fixed positive/negative draws.

    Reads ROOT/tagged/ (split == "validation") and ROOT/features/ (Petastorm: photo_id, feature as
    NdarrayCodec bytes). Keeps images with 1..V-1 tags and a feature, at most ``user_cap`` per user
    (:func:`cap_per_user`; 0 = no cap); when there are more than ``limit``, the ``limit`` with the
    smallest hash of (seed, photo_id), so the set is the same on every run. Positives and negatives
    are drawn as the sample stage draws them (same weights, same code, ``exclude_own_tags`` as
    configured), from a stream no training epoch uses (epoch 0), so the validation loss is the
    training objective on unseen images and is comparable between epochs.

    Returns:
        dict of numpy arrays: ``photo_id`` int64[N], ``feature`` float16[N, D], ``offsets``
        int64[N + 1] and ``tag_ids`` int32[...] (true tags), ``pos_ids`` int32[N, P],
        ``neg_ids`` int32[N, K], ``own_ids`` int32[N, M] (the true tags padded with -1, M the most
        of an image). N may be 0.
    """
    size = vocab.num_rows
    features_data.DATASET.require(root)
    tagged = tagged_data.read_split(root, "validation", ["photo_id", "user_id", "tag_ids"])
    counts = pc.fill_null(pc.list_value_length(tagged.column("tag_ids")), 0).to_numpy()
    tagged = tagged.filter(pa.array((counts > 0) & (counts < size)))
    tagged = tagged.filter(pa.array(features_data.present(root, tagged.column("photo_id").to_numpy())))
    if user_cap > 0:
        kept = cap_per_user(tagged.column("photo_id").to_numpy(),
                            tagged.column("user_id").to_numpy(zero_copy_only=False), user_cap, seed)
        tagged = tagged.take(pa.array(kept))
    order = tagged_data.hash_order(tagged.column("photo_id").to_numpy(), seed)
    tagged = tagged.take(pa.array(np.sort(order[:limit]))).combine_chunks()
    if tagged.num_rows == 0:
        return {"photo_id": np.zeros(0, np.int64), "feature": np.zeros((0, 0), np.float16),
                "offsets": np.zeros(1, np.int64), "tag_ids": np.zeros(0, np.int32),
                "pos_ids": np.zeros((0, positives), np.int32), "neg_ids": np.zeros((0, negatives), np.int32),
                "own_ids": np.zeros((0, 1), np.int32)}
    features = features_data.DATASET.arrow(root).to_table(
        columns=["photo_id", "feature"], filter=pc.field("photo_id").isin(tagged.column("photo_id")))
    # One row per photo, in tagged's order (a feature written twice would count once).
    position = pc.index_in(tagged.column("photo_id"), features.column("photo_id")).to_numpy()
    batch = pa.RecordBatch.from_arrays(
        [tagged.column("photo_id").combine_chunks(), tagged.column("tag_ids").combine_chunks(),
         features.column("feature").take(pa.array(position)).combine_chunks()],
        names=["photo_id", "tag_ids", "feature"])
    tables = sampling.build_tables(vocab.column("neg_weight").to_numpy(), vocab.column("pos_weight").to_numpy())
    own_tags = int(pc.max(pc.list_value_length(batch.column("tag_ids"))).as_py())
    drawn = sampling.sample_batch(batch, tables, seed, 0, positives, negatives, exclude_own=exclude_own_tags,
                                  own_tags=own_tags)
    _, pos_ids, neg_ids, own_ids = arrow_columns(pa.Table.from_batches([drawn]), COLUMNS + (OWN_IDS,))
    lists = batch.column("tag_ids")
    offsets = lists.offsets.to_numpy().astype(np.int64)
    return {"photo_id": batch.column("photo_id").to_numpy(),
            "feature": encoding.decode_ndarray(drawn.column("feature")),
            "offsets": offsets - offsets[0],
            "tag_ids": lists.values.to_numpy()[offsets[0]:offsets[-1]].astype(np.int32),
            "pos_ids": pos_ids, "neg_ids": neg_ids, "own_ids": own_ids}


def cap_per_user(photo_id: np.ndarray, user_id: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Rows to keep so that no user has more than ``cap`` images: sorted int64 row numbers.

    Each user keeps the ``cap`` images with the smallest hash of (seed, photo_id), so the choice is
    the same on every run. Why: a bulk uploader can hold most of a split (on the openclipart demo
    one user's icon theme is ~850 of 1,031 validation images, four tags on every one), and then
    any score mostly says whether those tags were guessed. A cap, rather than weights of 1/n per
    user, leaves every other image as it is, keeps the metrics plain counts (the same code as the
    evaluate stage), and does not let a one-image user count as much as a user with twenty.

    Args:
        photo_id: int64[N]; user_id: [N] (strings or numbers); cap: images per user (>= 1); seed: the run's seed.
    """
    photo_id = np.asarray(photo_id, dtype=np.int64)
    hashed = sampling.mix64(photo_id.astype(np.uint64) ^ np.uint64(seed))
    _, user = np.unique(np.asarray(user_id), return_inverse=True)
    order = np.lexsort((photo_id, hashed, user))
    first = np.r_[0, np.flatnonzero(np.diff(user[order])) + 1]
    rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
    return np.sort(order[rank < cap])
