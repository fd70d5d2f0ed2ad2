"""pipeline.reader, the reader for any trainer, on epochs written as the sample stage writes them: decoded
numpy batches, every row once across shards, waiting for an epoch, the consumer's progress, tf.data, and
the schema version."""
import json
import threading
import time

import numpy as np
import pytest

from pipeline import Im2vecError, reader, storage
from pipeline.datasets import consumers, epochs
from tests.unit.test_train_data import D, K, P, write_epoch


@pytest.mark.parametrize("shards", [1, 3, 4])
def test_the_shards_together_yield_every_row_once_decoded(root, shards):
    truth = write_epoch(root, 1, rows=1000, files=3, row_group=70)
    seen = []
    for shard in range(shards):
        got = list(reader.batches(root, 1, batch_size=64, shard=shard, shards=shards))
        features, pos_ids, neg_ids = (np.concatenate(column) for column in zip(*got))
        assert features.dtype == np.float32 and pos_ids.dtype == neg_ids.dtype == np.int32
        assert features.shape[1:] == (D,) and pos_ids.shape[1:] == (P,) and neg_ids.shape[1:] == (K,)
        assert all(len(b[0]) == 64 for b in got[:-1]) and 0 < len(got[-1][0]) <= 64
        rows = pos_ids[:, 0]    # the row's identity
        np.testing.assert_array_equal(features, truth["feature"][rows].astype(np.float32))
        np.testing.assert_array_equal(neg_ids, truth["neg_ids"][rows])
        seen.append(rows)
    together = np.concatenate(seen)
    assert len(together) == 1000 and sorted(together.tolist()) == list(range(1000))
    if shards > 1:
        assert min(len(s) for s in seen) > 0
    with pytest.raises(Im2vecError, match="shard must be in 0..2"):
        next(reader.batches(root, 1, shard=3, shards=3))


def test_it_waits_for_an_unfinished_epoch_and_reports_its_consumer(root):
    consumers.report(root, "mine", epoch=1, step=40)
    writer = threading.Timer(0.6, write_epoch, args=(root, 2), kwargs={"rows": 300, "files": 2, "row_group": 50})
    writer.start()
    lines, started = [], time.time()
    batches = reader.batches(root, 2, batch_size=100, consumer="mine", poll_seconds=0.05, log=lines.append)
    first = next(batches)
    writer.join()
    assert time.time() - started >= 0.5 and len(first[0]) == 100 and "waiting for epoch 2" in lines[0]
    # While it reads, the consumer has finished epoch 1 only (and says so afresh).
    report = {c.name: c for c in consumers.read_all(root)}["mine"]
    assert (report.epoch, report.step) == (1, 40) and report.age_seconds < 5
    rest = list(batches)
    assert [len(b[0]) for b in rest] == [100, 100]
    report = {c.name: c for c in consumers.read_all(root)}["mine"]
    assert (report.epoch, report.step) == (2, 43)   # 3 batches handed over


def test_tf_dataset_gives_the_same_batches(root):
    write_epoch(root, 1, rows=250, files=2, row_group=40)
    expected = list(reader.batches(root, 1, batch_size=32, shard=1, shards=2))
    got = list(reader.tf_dataset(root, 1, batch_size=32, shard=1, shards=2))
    assert len(got) == len(expected)
    for (features, pos_ids, neg_ids), want in zip(got, expected):
        for tensor, array in zip((features, pos_ids, neg_ids), want):
            np.testing.assert_array_equal(tensor.numpy(), array)


@pytest.mark.parametrize("version", [None, 3])
def test_an_unknown_schema_version_is_refused_in_one_line(root, version):
    write_epoch(root, 3, rows=20, files=1)
    uri = epochs.uri(root, 3)
    manifest = storage.read_manifest(uri)
    manifest.pop("schema_version")
    if version is not None:
        manifest["schema_version"] = version
    storage.write_text(storage.join(uri, storage.MANIFEST), json.dumps(manifest))
    with pytest.raises(Im2vecError) as refused:
        next(reader.batches(root, 3))
    message = str(refused.value)
    assert "\n" not in message and f"schema version {version if version else 'none'}" in message
    assert "reads versions 1 and 2" in message and "im2vec sample --epochs 3-3" in message
