"""``im2vec serve``: a small web page to search images with words and see their tags.

Routes (GET only)::

    /                    a search box
    /search?q=WORDS      the results page: matching images, best first, each with its score,
                         predicted tags and original (user) tags; ``&k=N`` results (default 20)
    /api/search?q=WORDS  the same results as JSON (see :func:`results`); 400 + {"error": ...}
                         for an empty query or words with no vector
    /image/PHOTO_ID      one image with its predicted and original tags
    /img/PHOTO_ID        the image's bytes

Security:

* Tags, titles and queries are untrusted user text: every value is written through
  :func:`html.escape` (text and attributes alike), and pages carry a Content-Security-Policy
  that allows no script at all, as a second line of defence.
* ``/img/`` never reads a path from the request. ``PHOTO_ID`` must be a decimal integer that is
  in the index; its URI is the features stage's ``images`` template (the features manifest's
  ``parameters.images``) expanded over that photo's clean/ row, read through
  :mod:`pipeline.imagesource`. Anything else is a 404, so ``/img/..%2F..%2Fetc%2Fpasswd`` is too.
* The server binds 127.0.0.1 unless told otherwise; it has no authentication.

Everything is loaded once at start (:func:`load`): the model and index
(:mod:`pipeline.query`), and for every indexed photo its image URI, its original tags and its
top predicted tags, held in dicts. That is fine for a demo of thousands to a few million photos.
At 100M photos the process would instead keep only the index (or an approximate-nearest-neighbour
index over it) in memory and look up a result page's 20 photos by photo_id in a key-value store
(or clean/ and index/ partitioned by photo_id hash) written by the index stage, with the
predicted tags computed there too.
"""
from __future__ import annotations

import html
import json
import re
import sys
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Mapping
from urllib.parse import parse_qs, urlsplit

import numpy as np

from pipeline import Im2vecError, imagesource, storage
from pipeline.datasets import clean, features as features_data

if TYPE_CHECKING:  # pipeline.query imports TensorFlow: load it only when a server starts
    from pipeline import query

DEFAULT_RESULTS = 20
MAX_RESULTS = 100
PREDICTED_TAGS = 5
# No script may run on these pages; images only from this server; forms only submit here.
CSP = ("default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
_PHOTO_PATH = re.compile(r"/(image|img)/([0-9]{1,19})")
_IMAGE_TYPES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"))


@dataclass
class App:
    """What the server answers from, loaded once by :func:`load`.

    Attributes:
        model: the trained model (:class:`pipeline.query.Model`).
        index: the image embeddings (:class:`pipeline.query.Index`).
        uris: photo_id -> image URI, for every indexed photo.
        tags: photo_id -> its original (user) tags from clean/.
        predicted: photo_id -> its top predicted ``(tag, score)`` pairs, best first.
        reader: the image source ``uris`` are read through.
    """
    model: query.Model
    index: query.Index
    uris: dict[int, str]
    tags: dict[int, list[str]]
    predicted: dict[int, list[tuple[str, float]]]
    reader: imagesource.ImageSource


def load(root: str) -> App:
    """Load everything the server needs from a run root, once.

    Args:
        root: the run root URI; needs model/, index/, features/ (its manifest names the image
            template) and clean/.

    Returns:
        An :class:`App`.

    Raises:
        Im2vecError: a missing stage output, or features/ without an image template.
    """
    from pipeline import query

    root = storage.to_uri(root)
    text = features_data.image_uri(root)
    if not text:
        raise Im2vecError(f"{features_data.DATASET.uri(root)} has no manifest naming the image template "
                          "(parameters.image_uri): run the features stage first")
    template = imagesource.parse_template(text)
    model = query.load_model(root)
    index = query.load_index(root)
    photo_ids = np.asarray(index.photo_ids, dtype=np.int64)

    rows = clean.photo_rows(root, photo_ids, list(dict.fromkeys(["photo_id", "tags", *template.columns])))
    ids = rows.column("photo_id").to_pylist()
    uris = dict(zip(ids, template.expand(rows).to_pylist()))
    tags = dict(zip(ids, (t or [] for t in rows.column("tags").to_pylist())))

    feature_ids, features = features_data.read_rows(root, photo_ids)
    ranked = query.rank_tags(model, query.embed(model, features), k=PREDICTED_TAGS, features=features,
                             neighbours=query.load_neighbours(root, model, index))
    predicted = {int(p): [(t, float(s)) for t, s in r] for p, r in zip(feature_ids, ranked)}
    return App(model, index, uris, tags, predicted, imagesource.source_for(features_data.made_with(root)))


def results(app: App, text: str, k: int = DEFAULT_RESULTS) -> list[dict]:
    """The top ``k`` images for ``text``, as the page shows them and the API returns them.

    Returns:
        Best first, one dict per image: ``photo_id`` (int), ``score`` (cosine of the image's
        embedding and the query vector, in [-1, 1]), ``predicted_tags`` (``[{"tag", "score"}]``,
        score = the model's tag score), ``tags`` (original tags), ``image`` (URL of its bytes)
        and ``page`` (URL of its image page).

    Raises:
        Im2vecError: an empty query or a word with no vector (from :func:`pipeline.query.search`).
    """
    if not text.strip():
        raise Im2vecError("type one or more words to search for")
    from pipeline import query

    return [photo(app, photo_id, score) for photo_id, score in query.search(app.model, app.index, text, k=k)]


def photo(app: App, photo_id: int, score: float | None = None) -> dict:
    """One photo as :func:`results` describes it (``score`` None outside a search)."""
    photo_id = int(photo_id)
    return {"photo_id": photo_id, "score": None if score is None else round(float(score), 4),
            "predicted_tags": [{"tag": t, "score": round(s, 4)} for t, s in app.predicted.get(photo_id, [])],
            "tags": list(app.tags.get(photo_id, [])),
            "image": f"/img/{photo_id}", "page": f"/image/{photo_id}"}


# --- HTML: every value from data or the request goes through _e ------------------------------

def _e(value) -> str:
    return html.escape(str(value), quote=True)


_STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}
form{margin-bottom:1.5em}input[type=search]{width:24em;font-size:1.1em;padding:.2em}
.results{display:flex;flex-wrap:wrap;gap:1em}.result{width:200px;border:1px solid #ddd;padding:.5em}
.result img{width:200px;height:200px;object-fit:contain;background:#f6f6f6}
.tag{display:inline-block;background:#eef;margin:1px;padding:0 .3em;border-radius:3px;font-size:.85em}
.orig .tag{background:#efe}.message{color:#a40;font-weight:bold}.score{color:#666;font-size:.85em}
.big img{max-width:600px;max-height:600px}"""


def _page(title: str, body: str, text: str = "") -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>\n"
            "<h1><a href=\"/\">im2vec</a></h1>\n"
            "<form id=\"search\" action=\"/search\" method=\"get\">"
            f"<input type=\"search\" id=\"q\" name=\"q\" value=\"{_e(text)}\" autofocus "
            "placeholder=\"words, e.g. red car\"> <button type=\"submit\">Search</button></form>\n"
            f"{body}\n</body></html>\n")


def _tag_list(css: str, tags) -> str:
    spans = "".join(f"<span class=\"tag\">{_e(t)}</span> " for t in tags) or "<em>none</em>"
    return f"<div class=\"{css}\">{spans}</div>"


def render_home() -> str:
    """The search page (HTML)."""
    return _page("im2vec search", "<p>Search images with any words, including words that were never a tag.</p>")


def render_results(text: str, found: list[dict] | None, message: str = "") -> str:
    """The results page (HTML) for query ``text``: ``found`` as :func:`results` returns it, or a ``message``."""
    if message:
        return _page(f"{text} - im2vec", f"<p class=\"message\">{_e(message)}</p>", text)
    cards = []
    for r in found or []:
        predicted = [p["tag"] for p in r["predicted_tags"]]
        cards.append(
            f"<div class=\"result\" data-photo-id=\"{_e(r['photo_id'])}\" data-score=\"{_e(r['score'])}\">"
            f"<a href=\"{_e(r['page'])}\"><img src=\"{_e(r['image'])}\" alt=\"photo {_e(r['photo_id'])}\"></a>"
            f"<div class=\"score\">score {_e(format(r['score'], '.3f'))}</div>"
            f"<div>predicted:</div>{_tag_list('predicted', predicted)}"
            f"<div>original:</div>{_tag_list('orig', r['tags'])}</div>")
    body = (f"<p>{len(cards)} images for <strong>{_e(text)}</strong></p>"
            f"<div class=\"results\">{''.join(cards)}</div>")
    return _page(f"{text} - im2vec", body, text)


def render_image(info: dict) -> str:
    """The page (HTML) of one photo, ``info`` as :func:`photo` returns it."""
    predicted = "".join(f"<li><span class=\"tag\">{_e(p['tag'])}</span> "
                        f"<span class=\"score\">{_e(format(p['score'], '.3f'))}</span></li>"
                        for p in info["predicted_tags"]) or "<li><em>none</em></li>"
    body = (f"<div class=\"big\"><img src=\"{_e(info['image'])}\" alt=\"photo {_e(info['photo_id'])}\"></div>"
            f"<p>photo {_e(info['photo_id'])}</p>"
            f"<h2>Predicted tags</h2><ul class=\"predicted\">{predicted}</ul>"
            f"<h2>Original tags</h2>{_tag_list('orig', info['tags'])}")
    return _page(f"photo {info['photo_id']} - im2vec", body)


def _not_found() -> str:
    return _page("not found - im2vec", "<p class=\"message\">Not found.</p>")


# --- HTTP ---------------------------------------------------------------------------------------

def image_type(data: bytes) -> str:
    """The Content-Type of encoded image bytes, from their magic number."""
    for magic, kind in _IMAGE_TYPES:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


class Handler(BaseHTTPRequestHandler):
    """Answers the routes in the module docstring from ``self.server.app``."""
    server_version = "im2vec"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urlsplit(self.path)
        params = parse_qs(url.query)
        text = params.get("q", [""])[-1]
        try:
            if url.path == "/":
                return self._send(200, render_home())
            if url.path in ("/search", "/api/search"):
                return self._search(url.path == "/api/search", text, params.get("k", [""])[-1])
            match = _PHOTO_PATH.fullmatch(url.path)
            photo_id = int(match[2]) if match else None
            if photo_id is None or photo_id not in self.server.app.uris:
                return self._send(404, _not_found())
            if match[1] == "image":
                return self._send(200, render_image(photo(self.server.app, photo_id)))
            return self._image(photo_id)
        except Exception as err:  # noqa: BLE001 (a bug must not leak details to the page)
            print(f"[im2vec serve] {self.path}: {type(err).__name__}: {err}", file=sys.stderr)
            return self._send(500, _page("error - im2vec", "<p class=\"message\">Internal error.</p>"))

    def _search(self, api: bool, text: str, k_text: str) -> None:
        try:
            k = int(k_text) if k_text else DEFAULT_RESULTS
            if not 1 <= k <= MAX_RESULTS:
                raise ValueError
        except ValueError:
            message = f"k must be a whole number from 1 to {MAX_RESULTS}"
            return self._send(400, {"error": message} if api else render_results(text, None, message))
        if not api and not text.strip():
            return self._send(200, render_home())
        try:
            found = results(self.server.app, text, k)
        except Im2vecError as err:
            return self._send(400, {"error": str(err)} if api else render_results(text, None, str(err)))
        if api:
            return self._send(200, {"query": text, "k": k, "results": found})
        return self._send(200, render_results(text, found))

    def _image(self, photo_id: int) -> None:
        fetched = self.server.app.reader.read(self.server.app.uris[photo_id])
        if fetched.data is None:
            print(f"[im2vec serve] image {photo_id}: {fetched.reason}: {fetched.detail}", file=sys.stderr)
            return self._send(404 if fetched.reason in ("missing", "no_uri") else 502, _not_found())
        self._send(200, fetched.data, image_type(fetched.data), {"Cache-Control": "max-age=3600"})

    def _send(self, status: int, body, content_type: str | None = None, headers: Mapping | None = None) -> None:
        if isinstance(body, (dict, list)):
            body, content_type = json.dumps(body).encode(), "application/json"
        elif isinstance(body, str):
            body, content_type = body.encode(), content_type or "text/html; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    """A threading HTTP server holding the :class:`App` its handlers read (read-only, so thread-safe)."""
    daemon_threads = True

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 8000):
        self.app = app
        super().__init__((host, port), Handler)


def make_server(app: App, host: str = "127.0.0.1", port: int = 8000) -> Server:
    """A :class:`Server` for ``app`` bound to ``host:port`` (port 0 = any free port; see ``server_address``)."""
    try:
        return Server(app, host, port)
    except OSError as err:
        raise Im2vecError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None


def serve(root: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Load ``root`` and answer requests on ``host:port`` until interrupted (Ctrl-C)."""
    app = load(root)
    server = make_server(app, host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"[im2vec] serve: {len(app.uris):,} images from {storage.to_uri(root)}; "
          f"open http://{shown}:{server.server_address[1]}/  (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
