"""Where images come from: a URI template over clean/ columns, and the readers behind its URIs.

The ``images`` setting names every photo's image with one template, e.g.::

    file:///data/images/{photo_id}.jpg
    hdfs://nn/yfcc/images/{photo_id}.png
    s3://multimedia-commons/data/images/{hash[0:3]}/{hash[3:6]}/{hash}.jpg
    {download_url}

A field is a clean/ column, optionally indexed or sliced like a Python string (``{hash[0]}``,
``{hash[0:3]}``, ``{hash[-4:]}``); ``{{`` and ``}}`` are literal braces. Templates expand over
whole Arrow batches (:meth:`Template.expand`). Schemes:

* ``file://`` or a plain path: the executor's local file system (or a shared mount);
* ``hdfs://``: pyarrow's HDFS client (libhdfs and the Hadoop CLASSPATH on the executors);
* ``s3://`` and ``s3a://``: boto3, with the standard credential chain (environment, profile,
  instance role); the endpoint is ``s3_endpoint`` or boto3's own ``AWS_ENDPOINT_URL``; when no
  credentials are found, requests go unsigned, which is how public buckets such as
  multimedia-commons are read;
* ``http://`` and ``https://``: urllib.

A URI that cannot be read gives a reason code instead of bytes (see :class:`Fetched`), so a
stage can reject the photo and go on.
"""
from __future__ import annotations

import re
import string
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Iterator, Mapping, NamedTuple, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import Im2vecError

SCHEMES = ("file", "hdfs", "s3", "s3a", "http", "https")
# Why an image was not fetched; pipeline.images.ImageError.REASONS say why fetched bytes are unusable.
REASONS = ("no_uri", "missing", "fetch_failed")

_FIELD = re.compile(r"^(?P<column>\w+)(?:\[(?P<index>-?\d+)\]|\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_FIELD_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer)


class _Field(NamedTuple):
    column: str
    start: int | None     # a Python slice of the column's string value; (None, None) = all of it
    stop: int | None


@dataclass(frozen=True)
class Template:
    """A parsed ``images`` template: literal strings and fields, in order."""
    text: str
    parts: tuple[str | _Field, ...]

    @property
    def columns(self) -> list[str]:
        """The clean/ columns the template reads, each once, in order of appearance."""
        return list(dict.fromkeys(p.column for p in self.parts if isinstance(p, _Field)))

    def expand(self, batch: pa.RecordBatch | pa.Table) -> pa.Array:
        """One URI per row: string array of ``batch.num_rows``, null where a field's column is null.

        ``batch`` must hold :attr:`columns`; integers are written in decimal.
        """
        pieces = []
        for part in self.parts:
            if isinstance(part, str):
                pieces.append(pa.scalar(part, pa.string()))
                continue
            values = pc.cast(batch.column(part.column), pa.string())
            if part.start is not None or part.stop is not None:
                values = pc.utf8_slice_codeunits(values, part.start or 0, part.stop if part.stop is not None
                                                 else 2 ** 31 - 1)
            pieces.append(values)
        joined = pc.binary_join_element_wise(*pieces, "")
        return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def parse_template(text: str | None, schema: pa.Schema | None = None) -> Template:
    """Parse and check an ``images`` template.

    Args:
        text: the template, e.g. ``s3://bucket/{hash[0:3]}/{hash}.jpg``.
        schema: the columns it may use (clean/'s schema); None skips the column check.

    Returns:
        The :class:`Template`.

    Raises:
        Im2vecError: an empty template or one without fields, a field that is not ``column``, ``column[i]`` or
            ``column[a:b]``, a format spec or conversion (``{photo_id:08d}``, ``{x!r}``), an
            unknown column or one that is not a string or integer, or an unsupported URI scheme.
    """
    if isinstance(text, dict):  # YAML read an unquoted "{download_url}" as a mapping
        raise Im2vecError(f"images: {text!r} is not a template; quote a template that starts with {{ "
                          "in YAML and on the command line: --set \"images='{download_url}'\"")
    if not text or not str(text).strip():
        raise Im2vecError("images is not set: give a URI template over clean/ columns, e.g. "
                          "--set image_uri='file:///data/images/{photo_id}.jpg'")
    text = str(text)
    parts: list[str | _Field] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:
        raise Im2vecError(f"images: {text!r} is not a template: {err}") from None
    for literal, field, spec, conversion in parsed:
        if literal:
            parts.append(literal)
        if field is None:
            continue
        match = _FIELD.match(field)
        if not match or spec or conversion:
            raise Im2vecError(f"images: {{{field}{'!' + conversion if conversion else ''}"
                              f"{':' + spec if spec else ''}}} in {text!r}: a field is column, "
                              "column[i] or column[a:b]; format specs and conversions are not supported")
        if match["index"] is not None:
            index = int(match["index"])
            parts.append(_Field(match["column"], index, index + 1 if index != -1 else None))
        else:
            start, stop = match["start"], match["stop"]
            parts.append(_Field(match["column"], int(start) if start else None, int(stop) if stop else None))
    template = Template(text, tuple(parts))
    if not template.columns:
        raise Im2vecError(f"images: {text!r} has no {{column}} field, so every photo would get the same image")
    if schema is not None:
        for column in template.columns:
            if column not in schema.names:
                raise Im2vecError(f"images: {text!r} uses {{{column}}}, which is not a clean/ column; "
                                  f"columns: {', '.join(schema.names)}")
            kind = schema.field(column).type
            if not any(test(kind) for test in _FIELD_TYPES):
                raise Im2vecError(f"images: {{{column}}} in {text!r} is a {kind} column; a template "
                                  "field must be a string or integer column")
    literal_start = parts[0] if parts and isinstance(parts[0], str) else ""
    scheme = _SCHEME.match(literal_start)
    if scheme and scheme[1].lower() not in SCHEMES:
        raise Im2vecError(f"images: {text!r}: unsupported scheme {scheme[1]}:// (use {', '.join(SCHEMES)})")
    return template


class Fetched(NamedTuple):
    """What reading one URI gave: ``data`` bytes, or None and a ``reason`` (one of REASONS) and ``detail``."""
    data: bytes | None
    reason: str | None = None
    detail: str | None = None


class ImageSource:
    """Reads encoded images by URI from local files, HDFS, S3 or HTTP(S); thread-safe.

    Args:
        s3_endpoint: an S3-compatible server's URL (``http://127.0.0.1:9000``); empty = boto3's
            own choice (``AWS_ENDPOINT_URL``, else AWS).
        timeout: seconds to wait for an HTTP server or S3 before the read fails.
        connections: S3 connections kept open; at least the number of threads reading at once.
    """

    def __init__(self, s3_endpoint: str = "", timeout: float = 30.0, connections: int = 10):
        self.s3_endpoint = s3_endpoint or None
        self.timeout = float(timeout)
        self.connections = max(10, int(connections))
        self._lock = threading.Lock()
        self._s3 = None
        self._hdfs = {}

    def read(self, uri: str | None) -> Fetched:
        """Read one image's bytes; never raises for an unreadable URI (see :class:`Fetched`)."""
        if not uri:
            return Fetched(None, "no_uri", "the template gave no URI (a column it uses is null)")
        scheme = _SCHEME.match(uri)
        scheme = scheme[1].lower() if scheme else "file"
        try:
            if scheme == "file":
                return Fetched(self._read_local(uri))
            if scheme in ("s3", "s3a"):
                return self._read_s3(uri)
            if scheme in ("http", "https"):
                return self._read_http(uri)
            if scheme == "hdfs":
                return Fetched(self._read_hdfs(uri))
            return Fetched(None, "fetch_failed", f"unsupported scheme {scheme}://")
        except (FileNotFoundError, NotADirectoryError) as err:
            return Fetched(None, "missing", str(err))
        except OSError as err:
            return Fetched(None, "fetch_failed", f"{type(err).__name__}: {err}")

    @staticmethod
    def _read_local(uri: str) -> bytes:
        path = re.sub(r"^file:(//)?", "", uri)
        with open(path, "rb") as fh:
            return fh.read()

    def _read_hdfs(self, uri: str) -> bytes:
        import pyarrow.fs as pafs

        namenode, _, path = uri.split("://", 1)[1].partition("/")
        with self._lock:  # one client per namenode, reused by every thread and task
            if namenode not in self._hdfs:
                self._hdfs[namenode] = pafs.FileSystem.from_uri(f"hdfs://{namenode}/")[0]
        with self._hdfs[namenode].open_input_stream("/" + path) as src:
            return src.read()

    def _s3_client(self):
        with self._lock:
            if self._s3 is None:
                import boto3
                from botocore import UNSIGNED
                from botocore.config import Config

                session = boto3.session.Session()
                signed = session.get_credentials() is not None
                config = Config(max_pool_connections=self.connections, connect_timeout=self.timeout,
                                read_timeout=self.timeout, retries={"mode": "standard"},
                                **({} if signed else {"signature_version": UNSIGNED}))
                self._s3 = session.client("s3", endpoint_url=self.s3_endpoint, config=config)
            return self._s3

    def _read_s3(self, uri: str) -> Fetched:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = uri.split("://", 1)[1].partition("/")
        try:
            return Fetched(self._s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            reason = "missing" if code in ("NoSuchKey", "404", "NotFound") else "fetch_failed"
            return Fetched(None, reason, f"S3 {code}: {err}")
        except BotoCoreError as err:
            return Fetched(None, "fetch_failed", f"S3: {err}")

    def _read_http(self, uri: str) -> Fetched:
        request = urllib.request.Request(uri, headers={"User-Agent": "im2vec"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return Fetched(response.read())
        except urllib.error.HTTPError as err:
            return Fetched(None, "missing" if err.code in (404, 410) else "fetch_failed", f"HTTP {err.code} {err.reason}")
        except (urllib.error.URLError, TimeoutError, ValueError) as err:
            return Fetched(None, "fetch_failed", f"{type(err).__name__}: {err}")


@lru_cache(maxsize=4)
def source(s3_endpoint: str = "", timeout: float = 30.0, connections: int = 10) -> ImageSource:
    """The process's :class:`ImageSource` for these settings: clients and connections are reused across tasks."""
    return ImageSource(s3_endpoint, timeout, connections)


T = TypeVar("T")


def read_ahead(batches: Iterable[tuple[T, list[str | None]]], reader: ImageSource,
               threads: int = 8) -> Iterator[tuple[T, list[Fetched]]]:
    """Read each batch's URIs on ``threads`` threads, one batch ahead of the caller.

    Args:
        batches: ``(key, uris)`` pairs; ``key`` is passed through (e.g. the batch's photo ids).
        reader: the :class:`ImageSource` to read with.
        threads: reads in flight at once; remote stores need many to hide their latency.

    Yields:
        ``(key, fetched)`` in input order, ``fetched[i]`` the :class:`Fetched` of ``uris[i]``.
        While the caller decodes batch i, batch i + 1 is being read.
    """
    with ThreadPoolExecutor(max(1, int(threads)), thread_name_prefix="im2vec-read") as pool:
        pending = None
        for key, uris in batches:
            futures = [pool.submit(reader.read, uri) for uri in uris]
            if pending is not None:
                yield pending[0], [f.result() for f in pending[1]]
            pending = (key, futures)
        if pending is not None:
            yield pending[0], [f.result() for f in pending[1]]


def source_for(config: Mapping) -> ImageSource:
    """The process's :class:`ImageSource` for a run configuration (``s3_endpoint``, ``fetch_timeout``, ``fetch_threads``)."""
    return source(str(config.get("s3_endpoint") or ""), float(config.get("fetch_timeout") or 30.0),
                  int(config.get("fetch_threads") or 8))
