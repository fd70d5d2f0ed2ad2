"""An epoch the sample stage writes is a Petastorm dataset in the full sense: Petastorm's own make_reader and
get_schema_from_dataset_url decode its features as float16[D], make_batch_reader reads it, and its manifest
carries the schema version, D, P, K and the vocabulary size."""
import warnings

import numpy as np
import pytest

from jobs import sample
from pipeline import reader, storage
from pipeline.datasets import epochs
from tests.integration.test_sample import FEATURE_DIM, VOCAB_SIZE, make_config, write_inputs


@pytest.fixture(scope="module")
def sampled(spark, tmp_path_factory):
    root = "file://" + str(tmp_path_factory.mktemp("contract") / "run")
    truth = write_inputs(root, images=1200, spark=spark, feature_dim=FEATURE_DIM)
    sample.run(spark, make_config(output_partitions=3, row_group_mb=1), root, epochs=(1, 1))
    features = {int(p): f for p, f, has in zip(truth["photo_id"], truth["feature"], truth["has_feature"]) if has}
    return {"root": root, "features": features}


def test_petastorm_reads_an_epoch_with_decoded_features(sampled):
    from petastorm import make_batch_reader, make_reader
    from petastorm.etl.dataset_metadata import get_schema_from_dataset_url

    root, url = sampled["root"], reader.epoch_url(sampled["root"], 1)
    manifest = storage.read_manifest(epochs.uri(root, 1))
    assert (manifest["schema_version"], manifest["feature_dim"], manifest["vocab_size"]) == (1, FEATURE_DIM, VOCAB_SIZE)
    schema = get_schema_from_dataset_url(url)
    assert list(schema.fields) == ["photo_id", "feature", "pos_ids", "neg_ids"]
    assert (schema.feature.numpy_dtype, schema.feature.shape) == (np.float16, (FEATURE_DIM,))
    assert schema.pos_ids.shape == (manifest["positives"],) and schema.neg_ids.shape == (manifest["negatives"],)

    # The dummy pool reads in this thread: petastorm 0.13.1's thread pool can end a pass early and
    # drop row groups (model/data.py works around it for the trainer), which is not what this tests.
    with make_reader(url, num_epochs=1, reader_pool_type="dummy") as rows:
        read = list(rows)
    assert len(read) == manifest["rows_out"] > 0
    assert len({int(r.photo_id) for r in read}) == len(read)
    for row in read:
        assert row.feature.dtype == np.float16 and row.feature.shape == (FEATURE_DIM,)
        np.testing.assert_array_equal(row.feature, sampled["features"][int(row.photo_id)])
        assert row.pos_ids.shape == (manifest["positives"],) and row.neg_ids.shape == (manifest["negatives"],)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with make_batch_reader(url, num_epochs=1, reader_pool_type="dummy",
                               schema_fields=["photo_id", "pos_ids"]) as batches:
            ids = np.concatenate([b.photo_id for b in batches])
    assert sorted(ids.tolist()) == sorted(int(r.photo_id) for r in read)


def test_the_reader_yields_the_features_petastorm_decodes(sampled):
    root = sampled["root"]
    got = list(reader.batches(root, 1, batch_size=100))
    features = np.concatenate([b[0] for b in got])
    assert features.dtype == np.float32 and features.shape == (storage.read_manifest(epochs.uri(root, 1))["rows_out"],
                                                               FEATURE_DIM)
    assert np.isin(features[:, 0], np.array([f[0] for f in sampled["features"].values()], np.float32)).all()
