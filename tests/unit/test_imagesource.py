"""pipeline.imagesource: URI templates over clean/ columns, reading local and HTTP images, read-ahead."""
import http.server
import random
import string
import threading
import time
from functools import partial

import pyarrow as pa
import pytest

from pipeline import Im2vecError, imagesource, yfcc
from pipeline.imagesource import Fetched, ImageSource, parse_template


def test_template_expands_columns_indexes_and_slices_like_python():
    rng = random.Random(4)
    hashes = ["".join(rng.choices(string.hexdigits.lower(), k=rng.randint(0, 12))) for _ in range(200)]
    photo_id = [rng.randint(0, 10 ** 12) for _ in hashes]
    batch = pa.record_batch([pa.array(photo_id, pa.int64()), pa.array(hashes)], names=["photo_id", "hash"])
    template = parse_template("s3://b/{hash[0:3]}/{hash[3:6]}/{hash[-2:]}/{hash[:-4]}{{x}}/{photo_id}_{hash}.jpg",
                              yfcc.CLEAN_SCHEMA)
    assert template.columns == ["hash", "photo_id"]
    expected = [f"s3://b/{h[0:3]}/{h[3:6]}/{h[-2:]}/{h[:-4]}{{x}}/{p}_{h}.jpg" for p, h in zip(photo_id, hashes)]
    assert template.expand(batch).to_pylist() == expected
    one_char = parse_template("{hash[1]}-{hash[-1]}").expand(batch).to_pylist()
    assert one_char == [f"{h[1:2]}-{h[-1:]}" for h in hashes]


def test_template_gives_null_where_a_column_is_null():
    batch = pa.table({"photo_id": pa.array([1, 2], pa.int64()), "hash": pa.array(["abcdef", None])})
    assert parse_template("file:///i/{hash[0:2]}/{photo_id}.jpg").expand(batch).to_pylist() == \
        ["file:///i/ab/1.jpg", None]


@pytest.mark.parametrize("text, message", [
    ("", "images is not set"),
    ("file:///images/all.jpg", "no {column} field"),
    ("file:///x/{photo}.jpg", "not a clean/ column; columns: photo_id, hash"),
    ("file:///x/{tags}.jpg", "string or integer"),
    ("file:///x/{photo_id:08d}.jpg", "format specs"),
    ("file:///x/{hash!r}.jpg", "format specs"),
    ("file:///x/{hash[a]}.jpg", "column\\[a:b\\]"),
    ("file:///x/{hash[0:3:2]}.jpg", "column\\[a:b\\]"),
    ("file:///x/{photo_id.jpg", "not a template"),
    ("ftp://host/{photo_id}.jpg", "unsupported scheme ftp://"),
    ({"download_url": None}, "quote a template"),   # what YAML makes of an unquoted {download_url}
])
def test_bad_templates_fail_with_a_message(text, message):
    with pytest.raises(Im2vecError, match=message):
        parse_template(text, yfcc.CLEAN_SCHEMA)


def test_local_reads_and_their_reasons(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"abc")
    (tmp_path / "folder.jpg").mkdir()
    reader = ImageSource()
    assert reader.read(f"file://{tmp_path}/a.jpg") == Fetched(b"abc")
    assert reader.read(f"{tmp_path}/a.jpg") == Fetched(b"abc")       # a plain path
    assert reader.read(f"file:{tmp_path}/a.jpg") == Fetched(b"abc")  # Spark's spelling
    assert reader.read(f"file://{tmp_path}/b.jpg").reason == "missing"
    assert reader.read(f"file://{tmp_path}/a.jpg/b.jpg").reason == "missing"
    assert reader.read(f"file://{tmp_path}/folder.jpg").reason == "fetch_failed"
    assert reader.read(None).reason == "no_uri"
    assert reader.read("gopher://host/x.jpg").reason == "fetch_failed"


@pytest.fixture
def web(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path; yields its base URL."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_reads_and_their_reasons(tmp_path, web):
    (tmp_path / "x.png").write_bytes(b"\x89PNG...")
    reader = ImageSource(timeout=5)
    assert reader.read(f"{web}/x.png") == Fetched(b"\x89PNG...")
    assert reader.read(f"{web}/nope.png").reason == "missing"
    failed = reader.read("http://127.0.0.1:9/x.png")  # the discard port: nothing listens
    assert failed.reason == "fetch_failed" and failed.detail


def test_read_ahead_keeps_order_and_reads_the_next_batch_while_the_caller_works():
    class SlowReader:
        def __init__(self):
            self.started = []

        def read(self, uri):
            self.started.append(uri)
            time.sleep(0.01)
            return Fetched(uri.encode())

    reader = SlowReader()
    batches = [(i, [f"{i}-{j}" for j in range(5)]) for i in range(4)]
    seen = []
    for key, fetched in imagesource.read_ahead(iter(batches), reader, threads=3):
        seen.append((key, [f.data.decode() for f in fetched]))
        if key == 0:
            time.sleep(0.2)
            assert "1-4" in reader.started    # batch 1 was read while batch 0 was being used
            assert "2-0" not in reader.started  # ... but no further ahead
    assert seen == [(k, uris) for k, uris in batches]


def test_source_is_shared_per_process_and_settings():
    config = {"s3_endpoint": "", "fetch_timeout": 30, "fetch_threads": 8}
    assert imagesource.source_for(config) is imagesource.source_for(dict(config))
    assert imagesource.source_for(config) is not imagesource.source_for({**config, "fetch_timeout": 5})
