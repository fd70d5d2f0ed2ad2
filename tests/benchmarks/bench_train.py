"""Benchmark the trainer: examples/s fed through Petastorm vs from memory, and with a 10k vs a 1M-tag table.

    .venv/bin/python tests/benchmarks/bench_train.py [--rows 150000] [--repeats 5] [--hidden 1024]

The model is the default one (pipeline/defaults.yaml: g = 1280 -> 1024 -> 50 MLP, word2vec
negative sampling, P = 2 positives and K = 20 negatives per image, batch 512), trained with
``model.train.make_train_step``, the trainer's own step.

1. reading: one synthetic epoch written as the sample stage writes it (Parquet, feature =
   NdarrayCodec float16[1280] bytes, 32 MiB row groups), trained on
   a. through Petastorm: ``model.data.epoch_dataset`` (make_batch_reader, shuffled row groups,
      rows permuted within them, an 8192-row shuffle buffer of batches, prefetch), and
   b. from memory: the same rows as numpy arrays through
      ``tf.data.Dataset.from_tensor_slices(...).batch(512).prefetch()`` (no shuffle at all);
   one untimed pass of each first (a trainer runs many epochs: the first one pays for its
   allocators' first touch of memory), then a, b, a, b ...; target a >= 0.9x b.
2. vocabulary size: the same model with a joint (trained) tag table of 10k and of 1M tags, fed
   from memory. Both runs draw their ids from the same 10k-tag Zipf distribution, mapped
   one-to-one into the table's rows (for 1M, scattered over it), so a batch names the same
   number of distinct rows and only the table size differs; target 1M >= 0.8x 10k. For contrast,
   the same table made a trainable variable and updated by Keras' stock Adam (dense updates).

Both runs as ``im2vec train`` does, after ``model.memory.keep_freed_memory``.
Prints examples/s (median of the repeats), examples per CPU-second (this process's CPU time:
TensorFlow's threads and Petastorm's readers), and examples/s per core. The machine is shared:
wall-clock rates move with other people's load, ratios between interleaved runs much less.
Not a pytest module.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tensorflow as tf  # noqa: E402

from jobs import sample  # noqa: E402
from model import data, train  # noqa: E402
from model.memory import keep_freed_memory  # noqa: E402
from pipeline.datasets import encoding  # noqa: E402
from model.projection import TagTable, build_projection  # noqa: E402

D, P, K, d, BATCH = 1280, 2, 20, 50, 512
ACTIVE_TAGS = 10_000
CORES = os.cpu_count() or 1
WARMUP_STEPS = 5


def synthetic_epoch(folder: Path, rows: int, seed: int = 0) -> dict:
    """Write an epoch folder like the sample stage's; return its columns as numpy arrays."""
    rng = np.random.default_rng(seed)
    feature = rng.gamma(1.0, 0.5, size=(rows, D)).astype(np.float16)    # CNN features: >= 0, skewed
    zipf = 1.0 / np.arange(1, ACTIVE_TAGS + 1) ** 0.75
    ids = rng.choice(ACTIVE_TAGS, size=(rows, P + K), p=zipf / zipf.sum()).astype(np.int32)
    folder.mkdir(parents=True, exist_ok=True)
    row_group = (32 << 20) // (128 + 2 * D + 4 * (P + K) + 8)
    for part, index in enumerate(np.array_split(np.arange(rows), 4)):
        n = len(index)
        table = pa.table({
            "photo_id": pa.array(index.astype(np.int64)),
            "feature": encoding.encode_ndarray(feature[index]),
            "pos_ids": pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * P),
                                                pa.array(ids[index, :P].ravel())),
            "neg_ids": pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * K),
                                                pa.array(ids[index, P:].ravel())),
        })
        pq.write_table(table, folder / f"part-{part:05d}.parquet", row_group_size=row_group,
                       compression=sample.column_compression(table.schema))
    return {"feature": feature, "pos_ids": ids[:, :P].copy(), "neg_ids": ids[:, P:].copy()}


def model(vocab_size: int, hidden: list[int], tag_learning_rate: float, seed: int = 0):
    """A fresh projection, Adam, tag table and the trainer's step."""
    import keras

    keras.utils.set_random_seed(seed)
    initial = np.random.default_rng(seed).normal(0, 0.3, size=(vocab_size, d)).astype(np.float32)
    projection = build_projection(D, d, hidden)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(projection.trainable_variables)
    table = TagTable(initial, tag_learning_rate)
    return train.make_train_step(tf.distribute.get_strategy(), projection, optimizer, table, "negative_sampling")


def timed(step, dataset) -> tuple[float, float]:
    """Run one pass; (examples/s, examples per CPU-second), after WARMUP_STEPS steps."""
    iterator = iter(dataset)
    for _ in range(WARMUP_STEPS):
        step(next(iterator))
    rows, wall, cpu = 0, time.perf_counter(), time.process_time()
    loss = None
    for batch in iterator:
        loss = step(batch)
        rows += int(batch["pos_ids"].shape[0])
    float(loss)    # wait for the last step
    return rows / (time.perf_counter() - wall), rows / (time.process_time() - cpu)


def in_memory(columns: dict) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(columns).batch(BATCH).prefetch(tf.data.AUTOTUNE)


def dense_adam_step(vocab_size: int, hidden: list[int]):
    """The same model with the table as a trainable variable under Keras' stock Adam."""
    import keras

    projection = build_projection(D, d, hidden)
    table = keras.Variable(np.random.default_rng(0).normal(0, 0.3, size=(vocab_size, d)).astype(np.float32))
    variables = projection.trainable_variables + [table]
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(variables)

    @tf.function(reduce_retracing=True)
    def step(batch):
        with tf.GradientTape() as tape:
            g = projection(tf.cast(batch["feature"], tf.float32), training=True)
            vectors = tf.gather(table, tf.concat([batch["pos_ids"], batch["neg_ids"]], axis=1))
            logits = tf.einsum("bd,bjd->bj", g, vectors)
            loss = tf.reduce_mean(tf.reduce_mean(tf.nn.softplus(-logits[:, :P]), 1)
                                  + tf.reduce_sum(tf.nn.softplus(logits[:, P:]), 1))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss
    return step


def report(name: str, runs: list[tuple[float, float]]) -> float:
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    print(f"  {name:<44} {wall:>9,.0f} examples/s  {cpu:>9,.0f} per CPU-second  "
          f"{wall / CORES:>8,.0f} per core  (runs: {', '.join(f'{r[0]:,.0f}' for r in runs)})", flush=True)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150_000, help="rows of the synthetic epoch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=str, default="1024", help="hidden sizes, comma-separated ('' = linear)")
    parser.add_argument("--table-rows", type=int, default=60_000, help="rows per run of the table comparison")
    args = parser.parse_args()
    hidden = [int(h) for h in args.hidden.split(",") if h]
    keep_freed_memory()    # as `im2vec train` does
    print(f"bench_train: {CORES} cores, model {D} -> {' -> '.join(map(str, hidden + [d]))}, batch {BATCH}, "
          f"P={P} K={K}, {args.rows:,} rows, load average {os.getloadavg()[0]:.1f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        columns = synthetic_epoch(Path(tmp) / "epoch=00001", args.rows)
        uri = "file://" + str(Path(tmp) / "epoch=00001")
        step = model(ACTIVE_TAGS, hidden, tag_learning_rate=0.0)

        def petastorm(seed: int) -> tf.data.Dataset:
            return data.epoch_dataset(uri, feature_dim=D, positives=P, negatives=K, batch_size=BATCH, seed=seed)

        petastorm_runs, memory_runs = [], []
        timed(step, petastorm(args.repeats))
        timed(step, in_memory(columns))
        for repeat in range(args.repeats):
            petastorm_runs.append(timed(step, petastorm(repeat)))
            memory_runs.append(timed(step, in_memory(columns)))
        print("1. reading (frozen table, 10k tags)")
        fed = report("Petastorm (model.data.epoch_dataset)", petastorm_runs)
        memory = report("in memory (from_tensor_slices)", memory_runs)
        cpu_ratio = statistics.median(r[1] for r in petastorm_runs) / statistics.median(r[1] for r in memory_runs)
        print(f"  Petastorm / in memory: {fed / memory:.2f}x examples/s, {cpu_ratio:.2f}x per CPU-second "
              f"(target >= 0.9x)", flush=True)

    rng = np.random.default_rng(1)
    subset = {name: values[:args.table_rows] for name, values in columns.items()}
    print(f"2. vocabulary size (joint table, sparse Adagrad; {args.table_rows:,} rows per run, in memory)")
    results = {}
    for vocab_size in (10_000, 1_000_000):
        rows_of = rng.choice(vocab_size, ACTIVE_TAGS, replace=False).astype(np.int32)   # one-to-one, scattered
        mapped = {**subset, "pos_ids": rows_of[subset["pos_ids"]], "neg_ids": rows_of[subset["neg_ids"]]}
        step = model(vocab_size, hidden, tag_learning_rate=0.05)
        results[vocab_size] = (step, mapped)
    sparse = {v: [] for v in results}
    for repeat in range(args.repeats):
        for vocab_size, (step, mapped) in results.items():
            sparse[vocab_size].append(timed(step, in_memory(mapped)))
    small = report("10k tags", sparse[10_000])
    large = report("1M tags", sparse[1_000_000])
    print(f"  1M / 10k: {large / small:.2f}x (target >= 0.8x)", flush=True)
    dense_rows = min(args.table_rows, 20 * BATCH)
    for vocab_size, (_, mapped) in results.items():
        short = {name: values[:dense_rows] for name, values in mapped.items()}
        report(f"Keras Adam, dense table update, {vocab_size // 1000}k tags",
               [timed(dense_adam_step(vocab_size, hidden), in_memory(short))])


if __name__ == "__main__":
    main()
