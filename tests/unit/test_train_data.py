"""model.data on small epochs written as the sample stage writes them: exact decoding, every row once
(also over shards), waiting for an epoch (pipeline.reader, which the trainer waits with), and the validation set."""
import io
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model import data
from pipeline import Im2vecError, reader, storage
from pipeline.datasets import encoding, epochs
from pipeline.datasets import epochs as epochs_data

D, P, K = 6, 2, 3


def lists(values: np.ndarray) -> pa.ListArray:
    n, width = values.shape
    return pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * width), pa.array(values.ravel()))


def write_epoch(root: str, epoch: int, rows: int = 1000, files: int = 3, row_group: int = 70, seed: int = 0,
                schema_version: int = epochs.SCHEMA_VERSION) -> dict:
    """An epoch folder of the epoch contract, as the sample stage writes it (Parquet files, Petastorm's
    _common_metadata, the manifest last); pos_ids[:, 0] is the row number (the row's identity)."""
    rng = np.random.default_rng(seed)
    feature = rng.normal(size=(rows, D)).astype(np.float16)
    pos_ids = np.stack([np.arange(rows), rng.integers(0, 50, rows)], axis=1).astype(np.int32)
    neg_ids = rng.integers(0, 50, (rows, K)).astype(np.int32)
    uri = epochs.uri(root, epoch)
    fs, path = storage.filesystem(uri)
    fs.create_dir(path, recursive=True)
    row_groups = {}
    for i, part in enumerate(np.array_split(np.arange(rows), files)):
        table = pa.table({"photo_id": pa.array(part.astype(np.int64)), "feature": encoding.encode_ndarray(feature[part]),
                          "pos_ids": lists(pos_ids[part]), "neg_ids": lists(neg_ids[part])})
        pq.write_table(table, f"{path}/part-{i:05d}.parquet", row_group_size=row_group)
        row_groups[f"part-{i:05d}.parquet"] = pq.ParquetFile(f"{path}/part-{i:05d}.parquet").num_row_groups
    epochs.write_petastorm_metadata(uri, table.schema, row_groups, feature_dim=D, positives=P, negatives=K)
    storage.write_manifest(uri, "sample", rows_in=rows, rows_out=rows, rows_rejected=0, parameters={}, inputs=[],
                           started=time.time(), schema_version=schema_version, epoch=epoch, positives=P,
                           negatives=K, feature_dim=D, vocab_size=50)
    return {"feature": feature, "pos_ids": pos_ids, "neg_ids": neg_ids}


def collect(dataset) -> dict:
    batches = list(dataset)
    return {name: np.concatenate([b[name].numpy() for b in batches]) for name in ("feature", "pos_ids", "neg_ids")} | \
        {"sizes": [int(b["pos_ids"].shape[0]) for b in batches]}


@pytest.fixture
def epoch(root):
    return write_epoch(root, 1)


@pytest.mark.parametrize("shuffle_buffer", [0, 256])
def test_an_epoch_reads_every_row_once_decoded_exactly(root, epoch, shuffle_buffer):
    got = collect(data.epoch_dataset(epochs_data.uri(root, 1), feature_dim=D, positives=P, negatives=K,
                                     batch_size=128, shuffle_buffer=shuffle_buffer, seed=5))
    order = got["pos_ids"][:, 0]
    assert sorted(order.tolist()) == list(range(1000))
    assert sorted(got["sizes"])[1:] == [128] * (len(got["sizes"]) - 1) and sum(got["sizes"]) == 1000
    if not shuffle_buffer:
        assert got["sizes"][-1] == min(got["sizes"])        # unshuffled, the short batch comes last
    assert got["feature"].dtype == np.float16
    np.testing.assert_array_equal(got["feature"], epoch["feature"][order])
    np.testing.assert_array_equal(got["pos_ids"], epoch["pos_ids"][order])
    np.testing.assert_array_equal(got["neg_ids"], epoch["neg_ids"][order])
    if shuffle_buffer:
        assert np.mean(np.diff(order) == 1) < 0.2          # rows mixed
    else:
        starts = order[np.flatnonzero(np.diff(order) != 1) + 1]
        assert list(starts) != sorted(starts)              # whole row groups, in shuffled order


def test_batch_orders_cut_full_batches_across_row_groups_and_pass_row_groups_on_uncopied():
    sizes = (100, 30, 170, 100)
    starts = np.cumsum((0,) + sizes[:-1])
    groups = [(np.arange(start, start + size),) for start, size in zip(starts, sizes)]

    def batches(pieces):
        return [columns[0][order[s:s + 64]] for columns, order in pieces for s in range(0, len(order), 64)]

    pieces = list(data.batch_orders(iter(groups), 64, seed=2))
    shuffled = batches(pieces)
    assert [len(b) for b in shuffled] == [64] * 6 + [16]
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(400))
    assert np.mean(np.diff(np.concatenate(shuffled)) == 1) < 0.1                  # rows permuted
    assert any(columns is groups[0] for columns, _ in pieces)                      # no copy of a row group
    assert max(len(columns[0]) for columns, _ in pieces if not any(columns is g for g in groups)) <= 64
    plain = batches(data.batch_orders(iter(groups), 64, shuffle=False))
    assert np.array_equal(np.concatenate(plain), np.arange(400)) and [len(b) for b in plain][-1] == 16


@pytest.mark.parametrize("shard_count", [2, 3, 7])
def test_shards_cover_every_row_exactly_once(root, epoch, shard_count):
    uri = epochs_data.uri(root, 1)
    shards = [np.concatenate([ids[:, 0] for _, ids, _ in data.read_row_groups(uri, seed=11, cur_shard=i,
                                                                              shard_count=shard_count)])
              for i in range(shard_count)]
    assert all(len(shard) > 0 for shard in shards)
    together = np.concatenate(shards)
    assert len(together) == 1000 and sorted(together.tolist()) == list(range(1000))
    # whole row groups: every shard is a union of row groups of 70 rows (files end short)
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 2 * 70


def test_arrow_columns_views_a_row_group_without_per_row_work():
    feature = np.arange(4 * D, dtype=np.float16).reshape(4, D)
    table = pa.table({"feature": encoding.encode_ndarray(feature), "pos_ids": lists(np.ones((4, P), np.int32)),
                      "neg_ids": lists(np.zeros((4, K), np.int32))}).slice(1, 3)
    feature_bytes, pos_ids, neg_ids = data.arrow_columns(table)
    header = feature_bytes.shape[1] - 2 * D   # the .npy header, the same on every row
    assert header > 0 and feature_bytes.shape == (3, header + 2 * D) and pos_ids.shape == (3, P) and neg_ids.shape == (3, K)
    np.testing.assert_array_equal(feature_bytes[:, header:].copy().view("<f2"), feature[1:])
    ragged = pa.table({"feature": encoding.encode_ndarray(feature),
                       "pos_ids": pa.array([[1], [1, 2], [1], [1]], pa.list_(pa.int32())),
                       "neg_ids": lists(np.zeros((4, K), np.int32))})
    with pytest.raises(ValueError, match="pos_ids values differ"):
        data.arrow_columns(ragged)


def test_wait_for_epoch_polls_until_the_manifest_appears(root):
    lines = []
    writer = threading.Timer(0.5, write_epoch, args=(root, 2), kwargs={"rows": 10, "files": 1})
    writer.start()
    started = time.time()
    manifest = reader.wait_for_epoch(root, 2, poll_seconds=0.1, log=lines.append, timeout=30)
    writer.join()
    assert manifest["epoch"] == 2 and time.time() - started >= 0.4
    assert len(lines) == 1 and "waiting for epoch 2" in lines[0] and "_manifest.json" in lines[0]
    with pytest.raises(Im2vecError, match="did not appear"):
        reader.wait_for_epoch(root, 3, poll_seconds=0.05, log=lines.append, timeout=0.2)


def test_an_epoch_without_features_is_refused(root):
    uri = epochs_data.uri(root, 1)
    storage.write_manifest(uri, "sample", rows_in=1, rows_out=1, rows_rejected=0, parameters={}, inputs=[],
                           started=time.time(), schema_version=epochs.SCHEMA_VERSION, epoch=1, feature_dim=None)
    with pytest.raises(Im2vecError, match="without features"):
        reader.wait_for_epoch(root, 1, poll_seconds=0.1)


def ndarray_codec(feature: np.ndarray) -> list[bytes]:
    out = []
    for row in feature:
        buffer = io.BytesIO()
        np.save(buffer, row)
        out.append(buffer.getvalue())
    return out


def test_validation_set_and_train_counts(root):
    fs, path = storage.filesystem(root)
    vocab_size = 8
    for name, table in (
            ("vocab", pa.table({"tag_id": pa.array(np.arange(vocab_size, dtype=np.int32)),
                                "tag": [f"t{i}" for i in range(vocab_size)], "images": np.arange(vocab_size) + 1,
                                "neg_weight": np.ones(vocab_size), "pos_weight": np.ones(vocab_size)})),
            ("tagged", pa.table({"photo_id": pa.array([10, 11, 12, 13, 14, 15], pa.int64()),
                                 "user_id": ["u", "u", "v", "u", "u", "u"],
                                 "split": ["train", "validation", "validation", "validation", "train", "validation"],
                                 "tag_ids": pa.array([[0, 1], [2, 5], [], [3], [1], list(range(vocab_size))],
                                                     pa.list_(pa.int32()))})),
            ("features", pa.table({"photo_id": pa.array([15, 13, 11, 10, 12], pa.int64()),
                                   "feature": ndarray_codec(np.arange(5 * D, dtype=np.float16).reshape(5, D))}))):
        fs.create_dir(f"{path}/{name}", recursive=True)
        pq.write_table(table, f"{path}/{name}/part-00000.parquet")
        storage.write_manifest(storage.join(root, name), name, rows_in=0, rows_out=0, rows_rejected=0,
                               parameters={}, inputs=[], started=time.time())
    vocab = data.read_vocab(root)
    assert data.train_tag_counts(root, vocab_size).tolist() == [1, 2, 0, 0, 0, 0, 0, 0]
    valid = data.validation_set(root, vocab, limit=10, seed=1, positives=P, negatives=K)
    # 12 has no tags, 15 carries every tag (no negative to draw): only 11 and 13 are usable
    assert sorted(valid["photo_id"].tolist()) == [11, 13]
    feature_of = {11: 2, 13: 1}   # row of each photo in features/
    for i, photo in enumerate(valid["photo_id"]):
        np.testing.assert_array_equal(valid["feature"][i],
                                      np.arange(5 * D, dtype=np.float16).reshape(5, D)[feature_of[photo]])
        own = set(valid["tag_ids"][valid["offsets"][i]:valid["offsets"][i + 1]].tolist())
        assert own == ({2, 5} if photo == 11 else {3})
        assert set(valid["pos_ids"][i].tolist()) <= own and not set(valid["neg_ids"][i].tolist()) & own
    assert len(data.validation_set(root, vocab, limit=1, seed=1, positives=P, negatives=K)["photo_id"]) == 1
    # user u has 11 and 13 usable: a cap of one image per user keeps one of them
    capped = data.validation_set(root, vocab, limit=10, seed=1, positives=P, negatives=K, user_cap=1)
    assert len(capped["photo_id"]) == 1 and capped["photo_id"][0] in (11, 13)


def test_cap_per_user_keeps_at_most_cap_images_of_each_user_the_same_ones_every_time():
    photo_id = np.arange(100, 130, dtype=np.int64)
    user_id = np.array(["bulk"] * 20 + ["a"] * 3 + ["b"] * 7, dtype=object)
    kept = data.cap_per_user(photo_id, user_id, 5, seed=13)
    users, counts = np.unique(user_id[kept], return_counts=True)
    assert dict(zip(users.tolist(), counts.tolist())) == {"a": 3, "b": 5, "bulk": 5}
    assert kept.tolist() == sorted(kept.tolist())
    # a pure function of (seed, photo ids): any input order keeps the same photos
    shuffled = np.random.default_rng(0).permutation(len(photo_id))
    again = data.cap_per_user(photo_id[shuffled], user_id[shuffled], 5, seed=13)
    assert sorted(photo_id[shuffled][again].tolist()) == sorted(photo_id[kept].tolist())
    assert sorted(photo_id[data.cap_per_user(photo_id, user_id, 5, seed=14)].tolist()) != \
        sorted(photo_id[kept].tolist())
