"""The features stage rejects a photo host's placeholder for a removed photo (reason unavailable), by its pixels."""
import os

import pyarrow.parquet as pq
import pytest

from jobs import features
from pipeline import Im2vecError, images, placeholder, storage
from tests.integration.test_features import make_config, write_clean
from tests.placeholder_image import encoded, placeholder as lookalike

DARKNET = "/usr/share/darknet/data"
pytestmark = pytest.mark.skipif(not os.path.isdir(DARKNET), reason="Debian's darknet data is not installed")


def read_rejects(root: str) -> dict[int, str]:
    table = pq.read_table(storage.filesystem(storage.join(root, "rejects", "features"))[1])
    return dict(zip(table["photo_id"].to_pylist(), table["reason"].to_pylist()))


def read_feature_ids(root: str) -> set[int]:
    return set(pq.read_table(storage.filesystem(storage.join(root, "features"))[1], columns=["photo_id"])
               ["photo_id"].to_pylist())


def test_placeholders_are_rejected_as_unavailable_and_counted(spark, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    blobs = {1: open(f"{DARKNET}/eagle.jpg", "rb").read(), 2: encoded(lookalike()),
             3: encoded(lookalike(), "JPEG", quality=80), 4: open(f"{DARKNET}/dog.jpg", "rb").read()}
    for photo_id, blob in blobs.items():
        (folder / f"{photo_id}.img").write_bytes(blob)
    root = "file://" + str(tmp_path / "run")
    write_clean(root, list(blobs))
    fingerprint = placeholder.fingerprint(images.decoded_image(blobs[2]))
    config = make_config(image_uri=f"file://{folder}/{{photo_id}}.img")
    config["unavailable_fingerprints"] = [fingerprint]

    manifest = features.run(spark, config, root)
    assert (manifest["rows_in"], manifest["rows_out"], manifest["rows_rejected"]) == (4, 2, 2)
    assert manifest["rejects_by_reason"] == {"unavailable": 2}
    assert manifest["parameters"]["unavailable_fingerprints"] == [fingerprint]
    assert read_rejects(root) == {2: "unavailable", 3: "unavailable"}
    assert read_feature_ids(root) == {1, 4}

    # Without the fingerprint the placeholder is just another image.
    config["unavailable_fingerprints"] = []
    features_root = "file://" + str(tmp_path / "run2")
    write_clean(features_root, list(blobs))
    assert features.run(spark, config, features_root)["rows_out"] == 4


def test_a_malformed_fingerprint_fails_before_any_spark_job(spark, tmp_path):
    root = "file://" + str(tmp_path / "run")
    write_clean(root, [1])
    config = make_config(image_uri=f"file://{tmp_path}/{{photo_id}}.jpg")
    config["unavailable_fingerprints"] = ["500x374:nothex"]
    with pytest.raises(Im2vecError, match="unavailable_fingerprints"):
        features.run(spark, config, root)
