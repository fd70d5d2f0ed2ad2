import json
import os
import threading

import pytest

from pipeline import Im2vecError, storage


def test_a_manifest_is_never_seen_half_written(tmp_path):
    """A trainer polls for an epoch's manifest while the scheduler writes it: every read is whole."""
    uri = storage.to_uri(str(tmp_path / "epoch=00001"))
    big = {"inputs": ["x" * 200] * 500}   # ~100 kB, more than one write() of a stream
    done = threading.Event()
    seen, errors = [], []

    def poll():
        while not done.is_set():
            try:
                manifest = storage.read_manifest(uri)
            except Im2vecError as error:   # a half-written file is not JSON
                errors.append(error)
                continue
            if manifest is not None:
                seen.append(manifest["rows_in"])

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        for i in range(200):
            storage.write_manifest(uri, "sample", rows_in=i, rows_out=i, rows_rejected=0, parameters={},
                                   started=0.0, **big)
    finally:
        done.set()
        reader.join()
    assert not errors and seen and seen == sorted(seen)
    assert storage.read_manifest(uri)["rows_in"] == 199
    assert os.listdir(tmp_path / "epoch=00001") == ["_manifest.json"]   # no hidden leftovers
    assert json.loads((tmp_path / "epoch=00001" / "_manifest.json").read_text())["inputs"] == big["inputs"]


def test_a_damaged_manifest_is_one_line_naming_it(tmp_path):
    uri = storage.to_uri(str(tmp_path / "vocab"))
    storage.write_manifest(uri, "vocab", rows_in=1, rows_out=1, rows_rejected=0, parameters={}, inputs=[], started=0.0)
    path = tmp_path / "vocab" / storage.MANIFEST
    path.write_text(path.read_text()[:-20])
    with pytest.raises(Im2vecError, match=r"vocab/_manifest.json is damaged .*run the stage that writes vocab/ again"):
        storage.read_manifest(uri)
