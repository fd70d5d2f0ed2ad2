"""S3 end to end against moto's S3 server (real HTTP on 127.0.0.1), credentials from the standard chain.

What runs on S3 here is what Python does: pipeline.storage (pyarrow's S3 client) writes and
reads manifests, replaces stage folders (copy + delete, object stores have no rename) and
reports status; the features stage reads images through boto3. Spark's own s3a:// reads and
writes need hadoop-aws and the AWS SDK bundle on Spark's classpath, which pip's pyspark does
not ship and no PyPI or Debian package provides (README, "Running on a cluster"), so run roots
for Spark stages stay on file:// in this test.

The credentials are in the environment only, the way the AWS chain finds them; the test greps
every manifest and the captured output for them.
"""
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pipeline import config as configuration, status, storage
from tests import cluster as standalone
from tests.yfcc_rows import line

BUCKET = "im2vec-test"
ACCESS_KEY = "AKIA" + uuid.uuid4().hex[:16].upper()
SECRET_KEY = "s3cr3t-" + uuid.uuid4().hex
FEATURES = Path(__file__).resolve().parents[2] / "jobs" / "features.py"


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free port, and the AWS environment variables pointing at it."""
    from moto.server import ThreadedMotoServer

    port = standalone.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    saved = dict(os.environ)
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1",
                      AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_EC2_METADATA_DISABLED="true")
    try:
        import boto3

        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


def keys(client, prefix: str) -> dict[str, bytes]:
    """{key: body} of every object under ``prefix`` (folder marker objects left out)."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            if not item["Key"].endswith("/"):
                found[item["Key"]] = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
    return found


def test_manifest_round_trip_on_s3_keeps_secrets_out(s3):
    stage = f"s3a://{BUCKET}/manifests/clean"
    config = configuration.load(overrides=[f"spark.hadoop.fs.s3a.secret.key={SECRET_KEY}"])
    written = storage.write_manifest(stage, "clean", rows_in=10, rows_out=7, rows_rejected=3,
                                     parameters=configuration.redacted(config), inputs=["s3a://x/y.tsv"],
                                     started=0.0)
    assert storage.read_manifest(stage) == json.loads(json.dumps(written))
    body = s3.get_object(Bucket=BUCKET, Key="manifests/clean/_manifest.json")["Body"].read().decode()
    assert SECRET_KEY not in body and ACCESS_KEY not in body
    assert json.loads(body)["parameters"]["spark.hadoop.fs.s3a.secret.key"] == "***"
    assert storage.read_manifest(f"s3a://{BUCKET}/manifests/vocab") is None


def test_replace_on_s3_moves_the_tree_and_drops_the_old_output(s3):
    root = f"s3a://{BUCKET}/replace"
    final = storage.join(root, "clean")
    for name in ("part-00000.parquet", "part-00001.parquet", "old/only-in-old.txt"):
        storage.write_text(storage.join(final, name), "old " + name)
    storage.write_manifest(final, "clean", rows_in=1, rows_out=1, rows_rejected=0, parameters={},
                           inputs=[], started=0.0)
    staged = storage.staging_uri(final)
    new = {"part-00000.parquet": "new 0", "part-00002.parquet": "new 2", "nested/deeper/part-9.parquet": "new 9"}
    for name, text in new.items():
        storage.write_text(storage.join(staged, name), text)

    storage.replace(staged, final)

    assert keys(s3, "replace/clean/") == {f"replace/clean/{n}": t.encode() for n, t in new.items()}
    assert keys(s3, "replace/_staging-") == {}
    assert not storage.exists(staged)
    assert storage.read_manifest(final) is None   # the old manifest went first; the stage writes its own last


def test_status_reads_a_run_on_s3(s3):
    root = f"s3a://{BUCKET}/status"
    storage.write_manifest(storage.join(root, "clean"), "clean", rows_in=5, rows_out=4, rows_rejected=1,
                           parameters={}, inputs=[], started=0.0)
    storage.write_text(storage.join(root, "vocab", "part-00000.parquet"), "no manifest: a killed run")
    states = {l.split()[0]: l.split()[1] for l in status.status_text(root).splitlines()[2:]}
    assert states["clean"] == "complete" and states["vocab"] == "partial" and states["epochs"] == "missing"


# The stage's own entry point, in a fresh process: its Spark JVM and Python workers inherit the
# AWS variables from the environment, as executors on a cluster get them from their machine.
FEATURES_DRIVER = """
import sys
from jobs import features
from pipeline import config, spark, storage
cfg = config.load(overrides=sys.argv[2:], master="local[1]")
features.run(spark.session(cfg, "im2vec features"), cfg, storage.to_uri(sys.argv[1]))
"""


@pytest.mark.skipif(not FEATURES.exists(), reason="jobs/features.py (the features stage, issue 4) is not there yet")
@pytest.mark.timeout(400)
def test_features_read_images_from_s3_without_leaking_credentials(s3, spark, tmp_path):
    from PIL import Image

    from jobs import clean

    good, corrupt, missing = [501, 502, 503], 504, 505
    for photo_id in good:
        png = io.BytesIO()
        Image.effect_noise((96, 80), 40 + photo_id % 7).convert("RGB").save(png, "PNG")
        s3.put_object(Bucket=BUCKET, Key=f"images/{photo_id}.png", Body=png.getvalue())
    s3.put_object(Bucket=BUCKET, Key=f"images/{corrupt}.png", Body=b"<html>not an image</html>")
    metadata = tmp_path / "yfcc.tsv"
    metadata.write_text("".join(line(25, photo_id=p, user_id=f"{p}@N01") + "\n" for p in [*good, corrupt, missing]))
    root = "file://" + str(tmp_path / "run")
    clean.run(spark, configuration.load(), root, [str(metadata)])

    result = subprocess.run([sys.executable, "-c", FEATURES_DRIVER, root, f"images=s3://{BUCKET}/images/{{photo_id}}.png",
                             "cnn_batch_size=2"], capture_output=True, text=True, timeout=360,
                            env=dict(os.environ, IM2VEC_SPARK_LOG_LEVEL="INFO"))
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = storage.read_manifest(storage.join(root, "features"))
    assert manifest["rows_in"] == 5 and manifest["rows_out"] == len(good) and manifest["rows_rejected"] == 2
    rejects = standalone.read_sorted(storage.join(root, "rejects", "features"), "photo_id").to_pydict()
    assert rejects["photo_id"] == [corrupt, missing]
    assert rejects["reason"][0] == "not_an_image" and rejects["reason"][1] == "missing"

    # The keys were used (the images were read), and are nowhere in what the run wrote or said.
    written = [p.read_text() for p in (tmp_path / "run").rglob("_manifest.json")]
    for text in [*written, result.stdout, result.stderr]:
        assert SECRET_KEY not in text and ACCESS_KEY not in text
