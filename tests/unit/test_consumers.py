"""ROOT/consumers/NAME.json: reports written whole, read back with their age, stale ones told apart."""
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pipeline import Im2vecError, storage
from pipeline.datasets import consumers

NOW = datetime(2026, 12, 6, 8, 0, tzinfo=timezone.utc)


def test_a_report_is_read_back_with_its_age(root):
    consumers.report(root, "im2vec-train", epoch=3, step=1200, now=NOW - timedelta(seconds=90))
    consumers.report(root, "sweep.lr-0.1", epoch=1, step=7, now=NOW)
    found = consumers.read_all(root, now=NOW)
    assert [(c.name, c.epoch, c.step, c.age_seconds) for c in found] == [("im2vec-train", 3, 1200, 90.0),
                                                                         ("sweep.lr-0.1", 1, 7, 0.0)]
    body = json.loads(storage.read_text(consumers.uri(root, "im2vec-train")))
    assert body == {"consumer": "im2vec-train", "epoch": 3, "step": 1200, "updated": "2026-12-06T07:58:30+00:00"}
    # Written whole: nothing but the report is left in the folder.
    assert sorted(p.name for p in Path(storage.filesystem(storage.join(root, "consumers"))[1]).iterdir()) == \
        ["im2vec-train.json", "sweep.lr-0.1.json"]


def test_fastest_and_slowest_count_live_consumers_only(root):
    assert consumers.progress(consumers.read_all(root), 3600) == (0, 0)     # none yet
    consumers.report(root, "fast", epoch=7, now=NOW - timedelta(seconds=10))
    consumers.report(root, "slow", epoch=2, now=NOW - timedelta(seconds=3000))
    consumers.report(root, "gone", epoch=1, now=NOW - timedelta(seconds=3601))
    found = consumers.read_all(root, now=NOW)
    assert [c.stale(3600) for c in found] == [False, True, False]           # fast, gone, slow
    assert consumers.progress(found, 3600) == (7, 2)
    assert consumers.progress(found, 60) == (7, 7)
    assert found[1].as_json(3600) == {"name": "gone", "epoch": 1, "step": 0, "updated": "2026-12-06T06:59:59+00:00",
                                      "age_seconds": 3601.0, "stale": True}


def test_names_must_be_file_names_and_other_files_are_ignored(root):
    for bad in ("", "../model", "a/b", "-x", "x" * 101):
        with pytest.raises(Im2vecError, match="consumer name"):
            consumers.report(root, bad, epoch=1)
    consumers.report(root, "ok", epoch=1, now=NOW)
    storage.write_text(storage.join(root, "consumers", "notes.txt"), "hello")
    storage.write_text(storage.join(root, "consumers", "broken.json"), '{"epoch": ')
    unreadable = []
    assert [c.name for c in consumers.read_all(root, now=NOW, unreadable=unreadable)] == ["ok"]
    assert unreadable == ["broken"]
