"""The web page without a browser: HTML escaping of untrusted tags and queries, and the routes that need
no model (images, image pages, errors) on a real server with a real image source."""
import http.client
import json
import threading
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from pipeline import imagesource, serve

PAYLOAD = "<script>window.__pwned=1</script>"
ATTRIBUTE_PAYLOAD = "\"><img src=x onerror=\"window.__pwned=1\">"


class Elements(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self, page: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def assert_inert(page: str) -> Elements:
    """No script element, no event handler attribute, no image other than this server's."""
    parsed = Elements(page)
    assert "script" not in [tag for tag, _ in parsed.tags]
    for tag, attrs in parsed.tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("/img/"), attrs
    return parsed


def result(photo_id=7, tags=(PAYLOAD, "cat"), predicted=((ATTRIBUTE_PAYLOAD, 0.9), ("dog", 0.5))):
    return {"photo_id": photo_id, "score": 0.8123, "tags": list(tags),
            "predicted_tags": [{"tag": t, "score": s} for t, s in predicted],
            "image": f"/img/{photo_id}", "page": f"/image/{photo_id}"}


def test_results_page_shows_hostile_tags_and_query_as_text():
    page = serve.render_results(ATTRIBUTE_PAYLOAD, [result(7), result(8)])
    parsed = assert_inert(page)
    text = "".join(parsed.text)
    assert PAYLOAD in text and ATTRIBUTE_PAYLOAD in text   # shown, as text
    assert [a["data-photo-id"] for t, a in parsed.tags if t == "div" and a.get("class") == "result"] == ["7", "8"]
    assert [a["value"] for t, a in parsed.tags if t == "input" and a.get("name") == "q"] == [ATTRIBUTE_PAYLOAD]
    assert "0.812" in text


def test_image_page_and_error_message_are_escaped():
    parsed = assert_inert(serve.render_image({**result(9), "score": None}))
    assert PAYLOAD in "".join(parsed.text) and ATTRIBUTE_PAYLOAD in "".join(parsed.text)
    parsed = assert_inert(serve.render_results(PAYLOAD, None, f"no vector for {PAYLOAD}"))
    assert f"no vector for {PAYLOAD}" in "".join(parsed.text)


def test_image_type_from_magic_numbers(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "a.jpg")
    assert serve.image_type((tmp_path / "a.png").read_bytes()) == "image/png"
    assert serve.image_type((tmp_path / "a.jpg").read_bytes()) == "image/jpeg"
    assert serve.image_type(b"root:x:0:0") == "application/octet-stream"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server on a free port over two photos: one image on disk, one whose image is missing."""
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(folder / "11.png")
    app = serve.App(model=None, index=None, uris={11: f"file://{folder}/11.png", 12: f"file://{folder}/12.png"},
                    tags={11: [PAYLOAD]}, predicted={11: [("dog", 0.5)]}, reader=imagesource.ImageSource())
    httpd = serve.make_server(app, port=0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def get(server, path: str) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    connection.request("GET", path)  # http.client sends the path as given: no normalization
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), body


def test_binds_loopback_by_default(server):
    assert server.server_address[0] == "127.0.0.1"


def test_images_come_from_the_image_source_only(server, tmp_path):
    status, headers, body = get(server, "/img/11")
    assert status == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG")
    assert get(server, "/img/12")[0] == 404          # in the index, image missing
    for path in ["/img/13", "/img/..%2F..%2Fetc%2Fpasswd", "/img/../../etc/passwd", "/img/%2e%2e/etc/passwd",
                 "/img//etc/passwd", "/img/11/../../../etc/passwd", "/img/11%00", "/img/-11", "/img/11.png",
                 "/img/%31%31", "/img/" + str(tmp_path), "/image/..%2F..%2Fetc%2Fpasswd", "/etc/passwd",
                 "/img/99999999999999999999999"]:
        status, _, body = get(server, path)
        assert status == 404, path
        assert b"root:" not in body


def test_image_page_and_headers(server):
    status, headers, body = get(server, "/image/11")
    assert status == 200 and "script-src" not in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    parsed = assert_inert(body.decode())
    assert PAYLOAD in "".join(parsed.text)
    assert ("img", {"src": "/img/11", "alt": "photo 11"}) in parsed.tags


def test_empty_and_bad_queries_are_client_errors(server):
    status, headers, body = get(server, "/api/search?q=%20")
    assert status == 400 and headers["Content-Type"] == "application/json" and "error" in json.loads(body)
    status, _, body = get(server, "/api/search?q=cat&k=0")
    assert status == 400 and "k must be" in json.loads(body)["error"]
    status, _, body = get(server, "/search?q=cat&k=lots")
    assert status == 400 and "k must be" in body.decode()
    status, _, body = get(server, "/search?q=")
    assert status == 200 and b"id=\"q\"" in body
