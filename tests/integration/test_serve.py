"""`im2vec serve` end to end in a real headless browser (Debian chromium + chromedriver, via Selenium).

The run root is small and built here in seconds, in the layouts the stages write: 18 drawn images
(3 colours x 2 shapes x 3 sizes) with user tags in clean/, their real MobileNetV2 features in
features/ (whose manifest names the image template), a vocabulary, word vectors, a projection
trained on them with Keras, and the index of their normalized embeddings. One photo carries tags
that are HTML and script: the pages must show them as text and run nothing.
"""
import http.client
import io
import json
import os
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from pipeline.datasets.index import encode as encode_embeddings
from pipeline import query, serve, storage
from pipeline.wordvec import keyed_vectors
from pipeline.datasets import features as features_data

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PAYLOAD = "<script>window.__pwned=1</script>"
ATTRIBUTE_PAYLOAD = "\"><img src=x onerror=\"window.__pwned=1\">"
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220)}
SHAPES = ("circle", "square")
DIM = 8
FIRST_ID = 10_000_000_000   # beyond 32 bits, like YFCC ids


def draw(colour, shape: str, size: int) -> Image.Image:
    image = Image.new("RGB", (128, 128), "white")
    box = (64 - size, 64 - size, 64 + size, 64 + size)
    (ImageDraw.Draw(image).ellipse if shape == "circle" else ImageDraw.Draw(image).rectangle)(box, fill=colour)
    return image


def write_parquet(uri: str, table: pa.Table, stage: str, **extra) -> None:
    path = storage.filesystem(uri)[1]
    os.makedirs(path, exist_ok=True)
    pq.write_table(table, os.path.join(path, "part-00000.parquet"))
    storage.write_manifest(uri, stage, rows_in=table.num_rows, rows_out=table.num_rows, rows_rejected=0,
                           parameters=extra.pop("parameters", {}), inputs=[], started=time.time(), **extra)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> str:
    """A run root with clean/ features/ vocab/ wordvec/ model/ index/ over 18 images."""
    import keras

    from pipeline import cnn, images as image_io

    base = tmp_path_factory.mktemp("serve")
    (base / "images").mkdir()
    root = "file://" + str(base / "root")
    photos = []
    for colour in COLOURS:
        for shape in SHAPES:
            for size in (24, 38, 52):
                photo_id = FIRST_ID + len(photos)
                draw(COLOURS[colour], shape, size).save(base / "images" / f"{photo_id}.png")
                photos.append((photo_id, [colour, shape]))
    photo_ids = np.array([p for p, _ in photos], np.int64)
    hostile = int(photo_ids[0])   # a red circle
    user_tags = [tags + ([PAYLOAD, ATTRIBUTE_PAYLOAD] if p == hostile else []) for p, tags in photos]
    write_parquet(storage.join(root, "clean"), pa.table({"photo_id": photo_ids, "tags": user_tags}), "clean")

    pixels, reasons = image_io.preprocess_batch([(base / "images" / f"{p}.png").read_bytes() for p in photo_ids])
    assert reasons == [None] * len(photo_ids)
    features = np.asarray(cnn.load_mobilenet_v2().predict_on_batch(pixels), np.float16)
    encoded = []
    for row in features:   # NdarrayCodec: np.save bytes of float16[D] per row, as the features stage writes
        buffer = io.BytesIO()
        np.save(buffer, row)
        encoded.append(buffer.getvalue())
    write_parquet(storage.join(root, "features"), pa.table({"photo_id": photo_ids, "feature": pa.array(encoded, pa.binary())}),
                  "features", parameters={"image_uri": f"file://{base}/images/{{photo_id}}.png"},
                  feature_dim=features.shape[1])

    tags = [*COLOURS, *SHAPES]
    write_parquet(storage.join(root, "vocab"), pa.table({"tag_id": pa.array(range(len(tags)), pa.int32()), "tag": tags}),
                  "vocab")
    rng = np.random.default_rng(5)
    tag_vectors = rng.normal(size=(len(tags), DIM)).astype(np.float32)
    # A word that is no tag, next to "red": zero-shot search finds red images through it.
    words = [*tags, "crimson"]
    word_vectors = np.vstack([tag_vectors, tag_vectors[0] + 0.1 * rng.normal(size=DIM)]).astype(np.float32)
    os.makedirs(storage.filesystem(storage.join(root, "wordvec"))[1])
    keyed_vectors(words, word_vectors).save(storage.filesystem(storage.join(root, "wordvec", "words.kv"))[1])

    # g: features -> the mean of the image's tag vectors, trained with Keras (a second or two).
    targets = np.stack([tag_vectors[[tags.index(t) for t in ts]].mean(axis=0) for _, ts in photos])
    keras.utils.set_random_seed(5)
    projection = keras.Sequential([keras.Input((features.shape[1],)), keras.layers.Dense(DIM)])
    projection.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    projection.fit(features.astype(np.float32), targets, epochs=300, batch_size=len(photos), verbose=0)
    model_dir = storage.filesystem(storage.join(root, "model"))[1]
    os.makedirs(model_dir)
    projection.save(os.path.join(model_dir, "projection.keras"))
    np.save(os.path.join(model_dir, "tag_vectors.npy"), tag_vectors)
    np.save(os.path.join(model_dir, "tag_bias.npy"), np.zeros(len(tags), np.float32))

    # index/ as jobs/index.py writes it, without Spark for 18 rows.
    model = query.load_model(root)
    embeddings = query.normalize_rows(query.embed(model, features_data.read_rows(root, photo_ids)[1]))
    write_parquet(storage.join(root, "index"), pa.table({"photo_id": photo_ids, "embedding": encode_embeddings(embeddings)}),
                  "index", dim=DIM, model_sha256=model.model_sha256)
    return root


@pytest.fixture(scope="module")
def base_url(root):
    """The server on a free loopback port, in a thread of this process."""
    httpd = serve.make_server(serve.load(root), port=0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "http://%s:%d" % httpd.server_address[:2]
    httpd.shutdown()
    httpd.server_close()


def get(base_url: str, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side normalization of ``..`` or escapes)."""
    host, port = urllib.parse.urlsplit(base_url).netloc.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body


def api(base_url: str, text: str, **params) -> dict:
    url = f"{base_url}/api/search?" + urllib.parse.urlencode({"q": text, **params})
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_api_search_finds_tagged_and_zero_shot_images(base_url):
    for word in ("red", "crimson"):   # "crimson" is no tag: its vector comes from words.kv
        found = api(base_url, word, k=6)["results"]
        assert len(found) == 6
        red = sum("red" in r["tags"] for r in found)
        assert red >= 5, (word, found)   # chance: 2 of 6
        assert [r["score"] for r in found] == sorted((r["score"] for r in found), reverse=True)
        assert all(r["predicted_tags"] and r["image"] == f"/img/{r['photo_id']}" for r in found)


def test_unknown_words_are_a_client_error(base_url):
    status, body = get(base_url, "/api/search?q=qwxzzy")
    assert status == 400 and "qwxzzy" in json.loads(body)["error"]
    status, body = get(base_url, "/search?q=qwxzzy")
    assert status == 400 and b"no vector for" in body and b"qwxzzy" in body


def test_images_only_from_the_image_source(base_url):
    status, body = get(base_url, f"/img/{FIRST_ID}")
    assert status == 200 and body.startswith(b"\x89PNG")
    for path in ["/img/..%2F..%2Fetc%2Fpasswd", "/img/../../etc/passwd", "/img/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                 f"/img/{FIRST_ID}/../../../../etc/passwd", "/img/..\\..\\etc\\passwd", "/img/%252e%252e%252fetc",
                 "/img/1", f"/img/{FIRST_ID}.png", "/img/file:%2F%2F%2Fetc%2Fpasswd", "/image/..%2F..%2Fetc%2Fpasswd"]:
        status, body = get(base_url, path)
        assert status == 404, path
        assert b"root:" not in body


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM) or not os.path.exists(CHROMEDRIVER):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER}: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM   # with the driver's path below, Selenium Manager downloads nothing
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def loaded_images(driver) -> list[dict]:
    """Every <img> of the page once all have finished loading: src and naturalWidth."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 20).until(lambda d: d.execute_script(
        "return Array.from(document.images).every(i => i.complete)"))
    return driver.execute_script(
        "return Array.from(document.images).map(i => ({src: i.getAttribute('src'), width: i.naturalWidth}))")


def test_search_in_a_browser_shows_loaded_images_and_inert_tags(browser, base_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(base_url + "/")
    box = browser.find_element(By.ID, "q")
    box.send_keys("red")
    box.send_keys(Keys.RETURN)
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".result"))
    assert urllib.parse.urlsplit(browser.current_url).path == "/search"

    cards = browser.find_elements(By.CSS_SELECTOR, ".result")
    shown = [(int(c.get_attribute("data-photo-id")), float(c.get_attribute("data-score"))) for c in cards]
    expected = api(base_url, "red")["results"]
    assert shown == [(r["photo_id"], r["score"]) for r in expected]
    images = loaded_images(browser)
    assert sorted(i["src"] for i in images) == sorted(r["image"] for r in expected)
    assert all(i["width"] > 0 for i in images), images

    hostile = next(c for c in cards if int(c.get_attribute("data-photo-id")) == FIRST_ID)
    original = [t.text for t in hostile.find_elements(By.CSS_SELECTOR, ".orig .tag")]
    assert PAYLOAD in original and ATTRIBUTE_PAYLOAD in original   # shown as text
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.execute_script("return window.__pwned") is None

    hostile.find_element(By.TAG_NAME, "a").click()   # its image page
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "ul.predicted"))
    assert urllib.parse.urlsplit(browser.current_url).path == f"/image/{FIRST_ID}"
    assert [i["width"] > 0 for i in loaded_images(browser)] == [True]
    assert [t.text for t in browser.find_elements(By.CSS_SELECTOR, ".orig .tag")] == \
        ["red", "circle", PAYLOAD, ATTRIBUTE_PAYLOAD]
    predicted = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "ul.predicted .tag")]
    assert len(predicted) == 5 and "red" in predicted[:2], predicted
    assert browser.execute_script("return window.__pwned") is None


def test_hostile_query_and_unknown_words_show_a_message(browser, base_url):
    from selenium.webdriver.common.by import By

    browser.get(base_url + "/search?" + urllib.parse.urlencode({"q": ATTRIBUTE_PAYLOAD + PAYLOAD}))
    message = browser.find_element(By.CSS_SELECTOR, ".message").text
    assert message.startswith("no vector for") and "script" in message
    assert browser.find_element(By.ID, "q").get_attribute("value") == ATTRIBUTE_PAYLOAD + PAYLOAD
    assert browser.find_elements(By.CSS_SELECTOR, ".result") == []
    assert [i["src"] for i in loaded_images(browser)] == []
    assert browser.execute_script("return window.__pwned") is None
