"""An epoch the sample stage writes is a Petastorm dataset in the full sense: Petastorm's own make_reader and
get_schema_from_dataset_url decode its features as float16[D], make_batch_reader reads it, and its manifest
carries the schema version, D, P, K and the vocabulary size. Petastorm's PyTorch DataLoader decodes it too,
in the virtualenv examples/torch_dataloader.py runs in (`make torch-venv`: torch cannot join the project's
.venv), with no im2vec code there."""
import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from jobs import sample
from pipeline import reader, storage
from pipeline.datasets import epochs
from tests.integration.test_sample import FEATURE_DIM, VOCAB_SIZE, make_config, read_epoch, write_inputs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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
    assert (manifest["schema_version"], manifest["feature_dim"], manifest["vocab_size"]) == (2, FEATURE_DIM, VOCAB_SIZE)
    schema = get_schema_from_dataset_url(url)
    # The default sampling (mixed) also writes each image's own tags, padded with -1, for the trainer's in-batch draw.
    assert list(schema.fields) == ["photo_id", "feature", "pos_ids", "neg_ids", "own_ids"]
    assert (schema.feature.numpy_dtype, schema.feature.shape) == (np.float16, (FEATURE_DIM,))
    assert schema.pos_ids.shape == (manifest["positives"],) and schema.neg_ids.shape == (manifest["negatives"],)
    assert schema.own_ids.shape == (manifest["own_tags"],) and manifest["own_tags"] > 0

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
        own = row.own_ids[row.own_ids >= 0]
        assert len(own) > 0 and not set(row.neg_ids.tolist()) & set(own.tolist())   # negatives never own tags

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


@pytest.fixture(scope="module")
def torch_venv() -> Path:
    """The PyTorch virtualenv examples/pytorch/venv.sh builds (where it builds it), or a skip saying how to build it
    (before ``sampled`` runs Spark for nothing)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = Path(os.environ.get("IM2VEC_TORCH_VENV") or cache / "im2vec" / "venv-torch")
    if not (venv / ".im2vec-stamp").exists():
        pytest.skip(f"no PyTorch virtualenv at {venv}: `make torch-venv` builds it (`make test` does)")
    return venv


def test_petastorms_pytorch_dataloader_decodes_an_epoch_and_trains(torch_venv, sampled, tmp_path):
    python = str(torch_venv / "bin" / "python")
    root, url = sampled["root"], reader.epoch_url(sampled["root"], 1)
    manifest = storage.read_manifest(epochs.uri(root, 1))
    # One pass through the example's own batches(), as a user's loop sees it.
    script = f"""
import json, sys
import numpy as np
sys.path.insert(0, {str(EXAMPLES)!r})
import torch_dataloader
kinds, columns = [], {{}}
for batch in torch_dataloader.batches({url!r}, batch_size=100):
    kinds.append({{name: [str(value.dtype), list(value.shape)] for name, value in batch.items()}})
    for name, value in batch.items():
        columns.setdefault(name, []).append(value.numpy())
np.savez({str(tmp_path / "seen.npz")!r}, **{{name: np.concatenate(parts) for name, parts in columns.items()}})
print(json.dumps(kinds))
"""
    read = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=300)
    assert read.returncode == 0, read.stderr[-3000:]
    kinds = json.loads(read.stdout.strip().splitlines()[-1])
    rows, (positives, negatives) = manifest["rows_out"], (manifest["positives"], manifest["negatives"])
    assert [k["feature"][1][0] for k in kinds] == [100] * (rows // 100) + ([rows % 100] if rows % 100 else [])
    for kind in kinds:
        size = kind["photo_id"][1][0]
        assert kind == {"photo_id": ["torch.int64", [size]], "feature": ["torch.float16", [size, FEATURE_DIM]],
                        "pos_ids": ["torch.int32", [size, positives]], "neg_ids": ["torch.int32", [size, negatives]]}

    seen = np.load(tmp_path / "seen.npz")
    epoch = read_epoch(root, 1)
    assert sorted(seen["photo_id"].tolist()) == sorted(epoch.column("photo_id").to_pylist())   # each row once
    where = {int(p): i for i, p in enumerate(seen["photo_id"])}
    for photo_id, pos_ids, neg_ids in zip(*(epoch.column(c).to_pylist() for c in ("photo_id", "pos_ids", "neg_ids"))):
        i = where[photo_id]
        np.testing.assert_array_equal(seen["feature"][i], sampled["features"][photo_id])
        assert seen["pos_ids"][i].tolist() == pos_ids and seen["neg_ids"][i].tolist() == neg_ids

    # The example as a user runs it: three passes over the epoch, the loss falls, the model is saved.
    trained = subprocess.run([python, str(EXAMPLES / "torch_dataloader.py"), "--epoch-url", url, "--passes", "3",
                              "--out", str(tmp_path / "tagger.pt")], capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr[-3000:]
    losses = [float(line.split("loss ")[1]) for line in trained.stdout.splitlines() if line.startswith("pass ")]
    assert len(losses) == 3 and losses[2] < losses[0], trained.stdout
    assert (tmp_path / "tagger.pt").stat().st_size > 4 * FEATURE_DIM * VOCAB_SIZE
