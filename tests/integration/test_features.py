"""The features stage on real local Spark: local files, S3 (moto's server), HTTP, rejects, incremental
runs, the Petastorm output and the sample stage reading it; the GPU conf and discovery script.

Images are real files shipped by packages: Debian's darknet photos, scikit-image's and
scikit-learn's bundled images and openclipart PNGs (transparent clip art).
"""
import glob
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import features
from pipeline import Im2vecError, cli, config as configuration, images, spark as spark_session, storage, yfcc
from pipeline.datasets import encoding, epochs

DARKNET = "/usr/share/darknet/data"
OPENCLIPART = "/usr/share/openclipart/png"
pytestmark = pytest.mark.skipif(not os.path.isdir(DARKNET), reason="Debian's darknet data is not installed")


def good_images() -> dict[str, bytes]:
    """name -> encoded bytes of real, usable images: 7 darknet JPEGs, scikit-image's cat, 2 clip art PNGs."""
    import skimage.data

    paths = sorted(glob.glob(f"{DARKNET}/*.jpg")) + [os.path.join(os.path.dirname(skimage.data.__file__),
                                                                  "chelsea.png")]
    paths += sorted(glob.glob(f"{OPENCLIPART}/animals/*.png"))[:2]
    blobs = {}
    for path in paths:
        with open(path, "rb") as fh:
            blobs[os.path.basename(path)] = fh.read()
    return blobs


def bad_images() -> dict[str, tuple[bytes | None, str]]:
    """name -> (bytes, expected reason); None bytes = no file at all."""
    with open(f"{DARKNET}/eagle.jpg", "rb") as fh:
        eagle = fh.read()
    tiny = io.BytesIO()
    Image.new("RGB", (20, 16), (200, 30, 30)).save(tiny, "PNG")
    return {"missing.jpg": (None, "missing"),
            "truncated.jpg": (eagle[:len(eagle) * 2 // 5], "truncated"),
            "random.jpg": (np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "not_an_image"),
            "tiny.png": (tiny.getvalue(), "too_small")}


def write_clean(root: str, photo_id, hashes=None, download_url=None) -> None:
    """ROOT/clean/ as the clean stage writes it (CLEAN_SCHEMA), with only the columns the tests use set."""
    n = len(photo_id)
    columns = {f.name: pa.nulls(n, f.type) for f in yfcc.CLEAN_SCHEMA}
    columns["photo_id"] = pa.array(photo_id, pa.int64())
    columns["user_id"] = pa.array([f"{p % 5}@N00" for p in photo_id])
    if hashes is not None:
        columns["hash"] = pa.array(hashes, pa.string())
    if download_url is not None:
        columns["download_url"] = pa.array(download_url, pa.string())
    uri = storage.join(root, "clean")
    storage.delete(uri)
    folder = storage.filesystem(uri)[1]
    os.makedirs(folder)
    pq.write_table(pa.table(columns, schema=yfcc.CLEAN_SCHEMA), f"{folder}/part-00000.parquet")
    storage.write_manifest(uri, "clean", rows_in=n, rows_out=n, rows_rejected=0, parameters={}, inputs=[],
                           started=time.time())


def make_config(**overrides) -> dict:
    return configuration.load(overrides=[f"{k}={v}" for k, v in
                                         {"master": "local[2]", "spark.ui.enabled": "false",
                                          "cnn_batch_size": 4, **overrides}.items()])


def read_features(root: str) -> dict[int, np.ndarray]:
    """photo_id -> feature, through Petastorm's own reader (so the Unischema and codec are checked).

    The synchronous reader pool: under pytest's output capture, the thread pool reader has been
    seen to yield no rows at all, silently.
    """
    from petastorm import make_reader

    with make_reader(storage.join(root, "features"), num_epochs=1, reader_pool_type="dummy") as reader:
        return {int(row.photo_id): row.feature for row in reader}


def read_rejects(root: str) -> dict[int, tuple[str, str]]:
    table = pq.read_table(storage.filesystem(storage.join(root, "rejects", "features"))[1])
    return {p: (u, r) for p, u, r in zip(*(table[c].to_pylist() for c in ("photo_id", "uri", "reason")))}


@pytest.fixture(scope="module")
def bare_model():
    """The same CNN in this process, for reference outputs."""
    return features.extractor(make_config())


def reference(model: features.Extractor, blob: bytes) -> np.ndarray:
    pixels, reasons = images.preprocess_batch([blob], model.input_size)
    assert reasons == [None]
    return np.asarray(model.model.predict_on_batch(pixels))[0]


@pytest.fixture(scope="module")
def local_run(spark, tmp_path_factory):
    """One local-file run over 10 good and 4 bad images; returns what the tests check."""
    folder = tmp_path_factory.mktemp("images")
    root = "file://" + str(tmp_path_factory.mktemp("run") / "run")
    good, bad = good_images(), bad_images()
    photo_id, name_of = [], {}
    for i, (name, blob) in enumerate([*good.items(), *((n, b) for n, (b, _) in bad.items())]):
        pid = 1000 + 7 * i
        photo_id.append(pid)
        name_of[pid] = name
        if blob is not None:
            (folder / f"{pid}.jpg").write_bytes(blob)
    write_clean(root, photo_id)
    manifest = features.run(spark, make_config(image_uri=f"file://{folder}/{{photo_id}}.jpg"), root)
    return {"root": root, "folder": folder, "manifest": manifest, "name_of": name_of, "good": good, "bad": bad}


def test_local_images_give_features_and_rejects_with_reasons(local_run, bare_model):
    manifest, name_of, good, bad = (local_run[k] for k in ("manifest", "name_of", "good", "bad"))
    assert manifest["rows_in"] == len(good) + len(bad)
    assert (manifest["rows_out"], manifest["rows_rejected"], manifest["already_present"]) == (len(good), len(bad), 0)
    assert manifest["rows_total"] == len(good) and manifest["feature_dim"] == 1280
    assert manifest["rejects_by_reason"] == {reason: 1 for _, reason in bad.values()}

    rejects = read_rejects(local_run["root"])
    assert {name_of[p]: r for p, (_, r) in rejects.items()} == {n: r for n, (_, r) in bad.items()}
    assert all(uri == f"file://{local_run['folder']}/{p}.jpg" for p, (uri, _) in rejects.items())

    extracted = read_features(local_run["root"])
    assert {name_of[p] for p in extracted} == set(good)
    for pid, feature in extracted.items():
        assert feature.dtype == np.float16 and feature.shape == (1280,)
        assert np.isfinite(feature).all() and feature.std() > 0.05   # not blank or constant
    # The stage's features are the bare model's on the same bytes (float16 rounding apart).
    for name in ("eagle.jpg", "chelsea.png"):
        pid = next(p for p, n in name_of.items() if n == name)
        np.testing.assert_allclose(extracted[pid].astype(np.float32), reference(bare_model, good[name]),
                                   rtol=2e-3, atol=2e-3)
    # Different photos, different features.
    matrix = np.stack(list(extracted.values())).astype(np.float32)
    assert np.linalg.matrix_rank(matrix) == len(matrix)


def test_features_are_plain_parquet_of_ndarray_codec_bytes(local_run):
    from petastorm.codecs import NdarrayCodec
    from petastorm.etl.dataset_metadata import get_schema_from_dataset_url

    schema = get_schema_from_dataset_url(storage.join(local_run["root"], "features"))
    assert list(schema.fields) == ["photo_id", "feature"] and schema.feature.shape == (1280,)
    table = pq.read_table(storage.filesystem(storage.join(local_run["root"], "features"))[1])
    assert table.schema.field("photo_id").type == pa.int64() and table.schema.field("feature").type == pa.binary()
    value = table["feature"][0].as_py()
    decoded = NdarrayCodec().decode(schema.feature, value)
    assert value == NdarrayCodec().encode(schema.feature, decoded)


def test_encode_features_matches_petastorm_codec():
    from petastorm.codecs import NdarrayCodec

    from pipeline.datasets import features as features_data

    field = features_data.schema(7).feature
    values = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    encoded = features_data.encode(values)
    assert encoded.to_pylist() == [bytes(NdarrayCodec().encode(field, v.astype(np.float16))) for v in values]
    np.testing.assert_array_equal(features_data.decode(encoded.slice(1)), values[1:].astype(np.float16))


def test_incremental_run_extracts_only_new_photos(local_run, spark, tmp_path):
    """A bigger clean/ later: only the new ids are read (the old images are gone by then)."""
    root = "file://" + str(tmp_path / "run")
    shutil.copytree(storage.filesystem(local_run["root"])[1], storage.filesystem(root)[1])
    before = read_features(root)
    folder = tmp_path / "images"
    folder.mkdir()
    new = {5000 + i: blob for i, blob in enumerate(list(local_run["good"].values())[:3])}
    for pid, blob in new.items():
        (folder / f"{pid}.jpg").write_bytes(blob)
    # The photo that was missing in the first run has an image now: it is tried again.
    missing = next(p for p, n in local_run["name_of"].items() if n == "missing.jpg")
    (folder / f"{missing}.jpg").write_bytes(local_run["good"]["dog.jpg"])
    write_clean(root, list(local_run["name_of"]) + list(new))
    manifest = features.run(spark, make_config(image_uri=f"file://{folder}/{{photo_id}}.jpg"), root)

    old_rejects = len(local_run["bad"])
    assert manifest["rows_in"] == len(local_run["name_of"]) + len(new)
    assert manifest["already_present"] == len(before)
    assert manifest["rows_out"] == len(new) + 1          # the new photos and the one that was missing
    assert manifest["rows_rejected"] == old_rejects - 1  # tried again, rejected again: their images are gone
    assert manifest["rejects_by_reason"] == {"missing": old_rejects - 1}
    after = read_features(root)
    assert set(after) == set(before) | set(new) | {missing} and manifest["rows_total"] == len(after)
    for pid, feature in before.items():
        np.testing.assert_array_equal(after[pid], feature)
    np.testing.assert_array_equal(after[5000], before[next(p for p, n in local_run["name_of"].items()
                                                           if n == list(local_run["good"])[0])])

    with pytest.raises(Im2vecError, match="cnn_input_size"):
        features.run(spark, make_config(image_uri=f"file://{folder}/{{photo_id}}.jpg", cnn_input_size=192), root)
    assert storage.read_manifest(storage.join(root, "features"))["rows_total"] == len(after)


def test_bad_template_fails_on_the_driver_with_the_columns(spark, local_run):
    for template, message in [("file:///x/{photo}.jpg", "not a clean/ column"), ("", "images is not set"),
                              ("file:///x/{tags}.jpg", "string or integer")]:
        with pytest.raises(Im2vecError, match=message):
            features.run(spark, make_config(images=f"'{template}'"), local_run["root"])


def test_s3_images_through_moto_server(spark, tmp_path, monkeypatch, bare_model):
    """Real boto3 over HTTP to moto's S3 server, multimedia-commons' key layout."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    # Python workers take their environment from the SparkContext's (spark.executorEnv.*); the session
    # is shared and already running, so the fake credentials go in for this test only.
    context_env = spark.sparkContext.environment
    saved = dict(context_env)
    context_env.update(env)
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="multimedia-commons")
        good = good_images()
        names = ["eagle.jpg", "dog.jpg", "chelsea.png", list(good)[-1]]
        hashes = [hashlib.md5(good[n]).hexdigest() for n in names] + ["0123456789abcdef", None, "feedface"]
        for name, h in zip(names, hashes):
            s3.put_object(Bucket="multimedia-commons", Key=f"data/images/{h[:3]}/{h[3:6]}/{h}.jpg", Body=good[name])
        s3.put_object(Bucket="multimedia-commons", Key="data/images/fee/dfa/feedface.jpg", Body=b"GIF89a not really")
        root = "file://" + str(tmp_path / "run")
        photo_id = list(range(1, len(hashes) + 1))
        write_clean(root, photo_id, hashes=hashes)
        template = "s3://multimedia-commons/data/images/{hash[0:3]}/{hash[3:6]}/{hash}.jpg"
        manifest = features.run(spark, make_config(images=template, s3_endpoint=endpoint), root)
    finally:
        context_env.clear()
        context_env.update(saved)
        server.stop()

    assert (manifest["rows_out"], manifest["rows_rejected"]) == (len(names), 3)
    assert manifest["rejects_by_reason"] == {"missing": 1, "no_uri": 1, "not_an_image": 1}
    rejects = read_rejects(root)
    assert rejects[5] == ("s3://multimedia-commons/data/images/012/345/0123456789abcdef.jpg", "missing")
    assert rejects[6] == (None, "no_uri")
    extracted = read_features(root)
    np.testing.assert_allclose(extracted[1].astype(np.float32), reference(bare_model, good["eagle.jpg"]),
                               rtol=2e-3, atol=2e-3)


def serve(folder):
    """A real HTTP server on 127.0.0.1 serving ``folder``, in a thread; returns (server, base URL)."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http_images_from_download_url(spark, tmp_path, bare_model):
    folder = tmp_path / "www"
    folder.mkdir()
    good = good_images()
    (folder / "kite.jpg").write_bytes(good["kite.jpg"])
    (folder / "horses.jpg").write_bytes(good["horses.jpg"])
    server, base = serve(folder)
    try:
        urls = [f"{base}/kite.jpg", f"{base}/horses.jpg", f"{base}/gone.jpg", f"http://127.0.0.1:{closed_port()}/x.jpg"]
        root = "file://" + str(tmp_path / "run")
        write_clean(root, [11, 12, 13, 14], download_url=urls)
        # Quoted: YAML would read a bare {download_url} as a mapping.
        manifest = features.run(spark, make_config(images="'{download_url}'", fetch_timeout=5), root)
    finally:
        server.shutdown()
    assert (manifest["rows_out"], manifest["rejects_by_reason"]) == (2, {"missing": 1, "fetch_failed": 1})
    assert {p: r for p, (_, r) in read_rejects(root).items()} == {13: "missing", 14: "fetch_failed"}
    np.testing.assert_allclose(read_features(root)[11].astype(np.float32), reference(bare_model, good["kite.jpg"]),
                               rtol=2e-3, atol=2e-3)


def test_cli_features_with_images_template(spark, local_run, tmp_path):
    root = str(tmp_path / "run")
    shutil.copytree(storage.filesystem(storage.join(local_run["root"], "clean"))[1], f"{root}/clean")
    assert cli.main(["features", "--root", root, "--master", "local[2]",
                     "--set", f"image_uri=file://{local_run['folder']}/{{photo_id}}.jpg", "--set", "cnn_batch_size=4"]) == 0
    manifest = storage.read_manifest(storage.join(storage.to_uri(root), "features"))
    assert (manifest["rows_out"], manifest["rows_rejected"]) == (len(local_run["good"]), len(local_run["bad"]))
    assert cli.main(["features", "--root", root, "--set", "image_uri=file:///x/{nope}.jpg"]) == 2


def test_sample_stage_reads_these_features(spark, local_run, tmp_path):
    sample = pytest.importorskip("jobs.sample")
    root = "file://" + str(tmp_path / "run")
    shutil.copytree(storage.filesystem(storage.join(local_run["root"], "features"))[1],
                    storage.filesystem(storage.join(root, "features"))[1])
    photo_id = sorted(local_run["name_of"])
    vocab = pa.table({"tag_id": pa.array(range(4), pa.int32()), "tag": ["a", "b", "c", "d"],
                      "images": pa.array([9, 7, 5, 3], pa.int64()), "users": pa.array([3] * 4, pa.int64()),
                      "neg_weight": [9 ** .75, 7 ** .75, 5 ** .75, 3 ** .75], "pos_weight": [9 ** -.5, 7 ** -.5,
                                                                                             5 ** -.5, 3 ** -.5]})
    tagged = pa.table({"photo_id": pa.array(photo_id, pa.int64()), "split": ["train"] * len(photo_id),
                       "tag_ids": pa.array([[i % 4, (i + 1) % 4] for i in range(len(photo_id))],
                                           pa.list_(pa.int32()))})
    for name, table in (("vocab", vocab), ("tagged", tagged)):
        folder = storage.filesystem(storage.join(root, name))[1]
        os.makedirs(folder)
        pq.write_table(table, f"{folder}/part-00000.parquet")
        storage.write_manifest(storage.join(root, name), name, rows_in=len(table), rows_out=len(table),
                               rows_rejected=0, parameters={}, inputs=[], started=time.time())
    manifest = sample.run(spark, make_config(negatives=2, positives=1), root, epochs=(1, 1))
    assert manifest["rows_out"] == len(local_run["good"])
    folder = storage.filesystem(epochs.uri(root, 1))[1]
    epoch = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(f"{folder}/part-*.parquet"))])
    extracted = read_features(local_run["root"])
    # Epochs store features as features/ does (Petastorm's NdarrayCodec: a .npy header, then float16[D]).
    for pid, feature in zip(epoch["photo_id"].to_pylist(), encoding.decode_ndarray(epoch["feature"])):
        np.testing.assert_array_equal(feature, extracted[pid])


# --- a bad CNN fails on the driver -------------------------------------------------------------------

@pytest.mark.parametrize("cnn, message", [
    ("resnet9000", "'resnet9000' is not mobilenet_v2, keras:<Application> or savedmodel:<path>"),
    ("keras:NoSuchApp", "keras.applications has no model 'NoSuchApp'"),
    ("savedmodel:/missing", "savedmodel /missing does not exist")])
def test_bad_cnn_fails_on_the_driver_before_any_spark_job(spark, tmp_path, cnn, message):
    root = "file://" + str(tmp_path / "run")
    write_clean(root, [1, 2, 3])
    group = f"bad-cnn-{cnn}"
    context = spark.sparkContext
    context.setJobGroup(group, "features with a bad cnn")
    try:
        with pytest.raises(Im2vecError, match=message.replace("(", r"\(").replace(")", r"\)")):
            features.run(spark, make_config(cnn=cnn, image_uri=f"file://{tmp_path}/{{photo_id}}.jpg"), root)
        assert context.statusTracker().getJobIdsForGroup(group) == []
        spark.range(3).count()   # and the group does see a job when one runs
        assert context.statusTracker().getJobIdsForGroup(group)
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
        context.setLocalProperty("spark.job.description", None)
    assert not storage.exists(storage.join(root, "features"))


# --- GPU executors ----------------------------------------------------------------------------------

def test_gpu_conf_from_config():
    assert spark_session.gpu_conf(make_config(master="yarn")) == {}   # CPU executors by default
    conf = spark_session.gpu_conf(make_config(master="yarn", gpus_per_executor=2, gpus_per_task=0.25,
                                         gpu_discovery_script="./get_gpus_resources.sh"))
    assert conf == {"spark.executor.resource.gpu.amount": "2", "spark.task.resource.gpu.amount": "0.25",
                    "spark.executor.resource.gpu.discoveryScript": "./get_gpus_resources.sh"}
    default = spark_session.gpu_conf(make_config(master="spark://host:7077", gpus_per_executor=1))
    assert default["spark.task.resource.gpu.amount"] == "0.125"
    assert os.access(default["spark.executor.resource.gpu.discoveryScript"], os.X_OK)
    # Local mode schedules no GPUs: a task asking for one would never start.
    assert spark_session.gpu_conf(make_config(master="local[2]", gpus_per_executor=1)) == {}
    for bad in ({"gpus_per_task": 0.3}, {"gpus_per_task": 2}, {"gpus_per_task": 0}, {"gpus_per_executor": 1.5}):
        with pytest.raises(Im2vecError):
            spark_session.gpu_conf(make_config(**{"master": "yarn", "gpus_per_executor": 1, **bad}))


def test_gpu_properties_file_is_the_generated_conf():
    """deploy/gpu/gpu.properties (for spark-submit) says what gpu_conf generates for its documented settings."""
    path = os.path.join(os.path.dirname(spark_session.DISCOVERY_SCRIPT), "gpu.properties")
    with open(path) as fh:
        lines = [line.split(None, 1) for line in fh if line.strip() and not line.startswith("#")]
    written = {key: value.strip() for key, value in lines}
    generated = spark_session.gpu_conf(make_config(master="yarn", gpus_per_executor=1, gpus_per_task=0.125,
                                              gpu_discovery_script="./get_gpus_resources.sh"))
    assert {k: v for k, v in written.items() if k in generated} == generated
    # Eight one-core tasks per executor: 1 / gpus_per_task, so the GPU share is what limits no task.
    assert set(written) - set(generated) == {"spark.executor.cores", "spark.task.cpus"}
    assert int(written["spark.executor.cores"]) / int(written["spark.task.cpus"]) == \
        1 / float(written["spark.task.resource.gpu.amount"])


@pytest.mark.parametrize("gpus", [["0", "1", "3"], []])
def test_discovery_script_lists_nvidia_smi_indexes(tmp_path, gpus):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n" + "".join(f"echo {g}\n" for g in gpus))
    fake.chmod(0o755)
    out = subprocess.run([str(spark_session.DISCOVERY_SCRIPT)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}).stdout
    assert json.loads(out) == {"name": "gpu", "addresses": gpus}


def test_discovery_script_fails_without_nvidia_smi(tmp_path):
    result = subprocess.run([str(spark_session.DISCOVERY_SCRIPT)], capture_output=True, text=True,
                            env={**os.environ, "PATH": str(tmp_path)})
    assert result.returncode != 0 and "nvidia-smi" in result.stderr
