"""Where stages read and write: run-root URIs, file systems, manifests and atomic replacement.

A run lives under one root URI (``file:///data/run1``, ``hdfs://nn/im2vec/run1``,
``s3a://bucket/run1``); each stage writes one folder under it (``clean/``, ``vocab/`` ...).
Spark reads and writes those URIs itself; code that runs in Python (drivers and tasks that
write with pyarrow) goes through :func:`filesystem`, which maps the same URI onto a pyarrow
file system. A stage is complete when its folder holds ``_manifest.json``, written last.
"""
from __future__ import annotations

import json
import os
import posixpath
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import urlparse

import pyarrow.fs as pafs

import pipeline

MANIFEST = "_manifest.json"
# Hidden names (. or _) are not data (Spark's _SUCCESS and .crc files, staging and attempt files),
# except Parquet's summary files: Petastorm keeps its Unischema in features/_common_metadata and
# cannot read the dataset without it, so it is listed and checked like a part file.
SUMMARY_FILES = ("_common_metadata", "_metadata")


def to_uri(path: str) -> str:
    """A path or URI as a URI: plain and relative paths become absolute ``file://`` URIs."""
    if "://" in path:
        return path.rstrip("/") if not path.endswith(":///") else path
    return "file://" + os.path.abspath(os.path.expanduser(path))


def join(uri: str, *parts: str) -> str:
    """``join("s3a://b/run", "clean")`` -> ``"s3a://b/run/clean"``."""
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """Map a URI to ``(pyarrow FileSystem, path inside it)``.

    ``s3a://`` and ``s3://`` use pyarrow's S3 client with the standard AWS credential chain;
    ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points it at an S3-compatible server.
    """
    uri = to_uri(uri)
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return pafs.LocalFileSystem(), parsed.path
    if parsed.scheme in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        kwargs = {}
        if endpoint:
            ep = urlparse(endpoint)
            kwargs = {"endpoint_override": ep.netloc or ep.path, "scheme": ep.scheme or "https"}
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        return pafs.S3FileSystem(**kwargs), parsed.netloc + parsed.path
    if parsed.scheme == "hdfs":
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    raise ValueError(f"unsupported URI scheme {parsed.scheme!r} in {uri} (use file://, hdfs:// or s3a://)")


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def delete(uri: str) -> None:
    """Delete a file or a folder tree; a missing one is fine."""
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole file so that a reader sees the old one or the new one, never half of it.

    Readers poll while writers rewrite: a trainer waits for an epoch's ``_manifest.json``, which the
    sample stage writes once the epoch's folder is in place; the scheduler reads the trainer's
    ``progress.json``. On local disks and HDFS the bytes go to a hidden sibling (which no Spark,
    pyarrow or Petastorm reader takes for data) renamed into place; an object store shows an
    object only once its upload is complete, so there they are written directly.
    """
    fs, path = filesystem(uri)
    folder, name = os.path.split(path)
    fs.create_dir(folder, recursive=True)
    renames = _renames_atomically(fs)
    target = f"{folder}/.{name}.{uuid.uuid4().hex[:12]}" if renames else path
    with fs.open_output_stream(target) as out:
        out.write(data)
    if renames:
        if isinstance(fs, pafs.HadoopFileSystem) and fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_file(path)   # an HDFS rename does not overwrite
        fs.move(target, path)


def write_text(uri: str, text: str) -> None:
    """:func:`write_bytes` of ``text`` as UTF-8."""
    write_bytes(uri, text.encode())


def _renames_atomically(fs: pafs.FileSystem) -> bool:
    """Local disks and HDFS rename a file or folder in one step; object stores copy and delete."""
    return isinstance(fs, (pafs.LocalFileSystem, pafs.HadoopFileSystem))


def read_bytes(uri: str) -> bytes:
    """The whole file at ``uri``."""
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as src:
        return src.read()


def read_text(uri: str) -> str:
    """The whole file at ``uri``, decoded as UTF-8."""
    return read_bytes(uri).decode()


def staging_uri(final_uri: str) -> str:
    """A fresh sibling folder to build a stage's output in before :func:`replace` moves it."""
    parent, _, name = to_uri(final_uri).rstrip("/").rpartition("/")
    return f"{parent}/_staging-{name}-{uuid.uuid4().hex[:12]}"


def replace(staged_uri: str, final_uri: str) -> None:
    """Move a finished staging folder into place, replacing any earlier output.

    The old output's manifest goes first, so a crash between the steps leaves a folder
    without a manifest, which every reader treats as incomplete.
    """
    delete(join(final_uri, MANIFEST))
    delete(final_uri)
    fs, staged = filesystem(staged_uri)
    _, final = filesystem(final_uri)
    fs.create_dir(os.path.dirname(final.rstrip("/")), recursive=True)
    if _renames_atomically(fs):
        fs.move(staged, final)
    else:
        # Object stores have no folder rename; copy, then drop the staging copy.
        pafs.copy_files(staged, final, source_filesystem=fs, destination_filesystem=fs)
        fs.delete_dir(staged)


def attempt_file(partition: int, attempt: int) -> str:
    """The name a task attempt writes its Parquet output under, inside a staging folder.

    The leading underscore hides it from Spark and pyarrow readers until
    :func:`commit_attempt_files` renames it, so a zombie attempt can never leave a file that
    passes for data.
    """
    return f"_attempt-{partition:05d}-{attempt}.parquet"


def commit_attempt_files(folder_uri: str, committed: list[str], schema) -> dict[str, str]:
    """Keep the files of the task attempts the driver collected, renamed ``part-NNNNN.parquet``.

    Args:
        folder_uri: the staging folder the attempts wrote into (:func:`attempt_file` names).
        committed: the names the successful attempts reported; every other file there (a failed
            or speculative attempt's) is deleted.
        schema: a pyarrow schema; with nothing committed an empty ``part-00000.parquet`` of it is
            written, because readers learn the schema from a file.

    Returns:
        {attempt file name: the name it has now}; {} when nothing was committed.
    """
    import pyarrow.parquet as pq

    fs, path = filesystem(folder_uri)
    keep = set(committed)
    for info in fs.get_file_info(pafs.FileSelector(path)):
        if info.base_name not in keep:
            fs.delete_file(info.path)
    renamed = {name: f"part-{name[len('_attempt-'):].rsplit('-', 1)[0]}.parquet" for name in committed}
    for name, final in renamed.items():
        fs.move(f"{path}/{name}", f"{path}/{final}")
    if not committed:
        pq.write_table(schema.empty_table(), f"{path}/part-00000.parquet", filesystem=fs)
    return renamed


def is_data_name(name: str) -> bool:
    """True for a file or folder name that holds data: not hidden (``.x``, ``_x``), or a Parquet summary file."""
    return not name.startswith((".", "_")) or name in SUMMARY_FILES


def list_data_files(folder_uri: str) -> dict[str, int]:
    """{path relative to ``folder_uri``: size in bytes} of every data file under it (:func:`is_data_name`).

    Walks non-hidden subfolders too (``wordvec/vectors/``); ``{}`` for a missing folder.
    """
    fs, path = filesystem(folder_uri)
    base = path.rstrip("/") + "/"
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True)):
        relative = info.path[len(base):] if info.path.startswith(base) else info.base_name
        if info.type == pafs.FileType.File and all(is_data_name(part) for part in relative.split("/")):
            found[relative] = info.size
    return dict(sorted(found.items()))


def relative_to(uri: str, folder_uri: str) -> str:
    """``uri``'s path seen from ``folder_uri`` (``../tagged`` for a sibling), for manifests that list files."""
    return posixpath.relpath(filesystem(uri)[1], filesystem(folder_uri)[1])


def read_manifest(stage_uri: str) -> dict | None:
    """The manifest of a stage folder, or None when the stage is missing or incomplete."""
    try:
        text = read_text(join(stage_uri, MANIFEST))
    except (FileNotFoundError, OSError):
        return None
    try:
        return json.loads(text)
    except ValueError as err:
        # The manifest is written last and whole, so a bad one was damaged afterwards: the folder's
        # data cannot be vouched for.
        raise pipeline.Im2vecError(f"{join(stage_uri, MANIFEST)} is damaged ({err}); run the stage that writes "
                          f"{stage_uri.rstrip('/').rsplit('/', 1)[-1]}/ again") from None


def write_manifest(stage_uri: str, stage: str, *, rows_in: int, rows_out: int, rows_rejected: int,
                   parameters: dict, inputs: list[str], started: float, covers: tuple[str, ...] = (),
                   data_files: dict[str, dict[str, int]] | None = None, **extra) -> dict:
    """Write ``_manifest.json`` into a finished stage folder; call it last.

    Args:
        stage_uri: the stage's output folder.
        rows_in / rows_out / rows_rejected: row counts; stages document how they add up.
        parameters: the configuration values the stage used.
        inputs: URIs the stage read.
        started: ``time.time()`` when the stage began.
        covers: other folders the stage wrote and this manifest vouches for (vocab: ``tagged/``).
        data_files: {folder relative to ``stage_uri`` ("." itself, "../tagged" a sibling): {file path
            in it: bytes}} of the data the stage wrote; by default every data file (:func:`list_data_files`)
            of ``stage_uri`` and ``covers``. Readers check the folders against it (pipeline.datasets).
        extra: stage-specific fields (e.g. ``videos`` for clean).

    Returns:
        The manifest as written.
    """
    if data_files is None:
        data_files = {relative_to(uri, stage_uri): list_data_files(uri) for uri in (stage_uri, *covers)}
    finished = time.time()
    manifest = {
        "stage": stage,
        "rows_in": int(rows_in),
        "rows_out": int(rows_out),
        "rows_rejected": int(rows_rejected),
        **extra,
        "parameters": parameters,
        "inputs": inputs,
        "output": stage_uri,
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        "finished": datetime.fromtimestamp(finished, timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(finished - started, 3),
        "code_version": pipeline.__version__,
        "data_files": data_files,
    }
    write_text(join(stage_uri, MANIFEST), json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
    return manifest
