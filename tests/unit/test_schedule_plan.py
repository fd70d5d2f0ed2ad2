"""jobs.schedule.plan: what a pass samples and deletes, from the consumers' reports and the epochs on disk
(epochs written as the sample stage writes them, no Spark)."""
from datetime import datetime, timedelta, timezone

import pytest

from jobs import schedule
from pipeline import Im2vecError, config as configuration, storage
from pipeline.datasets import consumers
from tests.unit.test_train_data import write_epoch


def make_config(**overrides) -> dict:
    return configuration.load(overrides=[f"{k}={v}" for k, v in overrides.items()])


def test_without_consumers_the_first_epochs_are_sampled_and_nothing_deleted(root):
    planned = schedule.plan(make_config(num_epochs=10, ahead=3, keep=0), root)
    assert (planned.fastest, planned.slowest, planned.missing, planned.batch(), planned.delete) == (0, 0, [1, 2, 3],
                                                                                                   [1, 3], [])
    assert not planned.finished()


def test_two_consumers_keep_what_the_slower_needs_and_sample_ahead_of_the_faster(root):
    for epoch in (1, 2, 3, 5):
        write_epoch(root, epoch, rows=10, files=1)
    consumers.report(root, "fast", epoch=3)
    consumers.report(root, "slow", epoch=1)
    planned = schedule.plan(make_config(num_epochs=10, ahead=3, keep=0), root)
    assert (planned.fastest, planned.slowest, planned.sampled) == (3, 1, [1, 2, 3, 5])
    assert planned.missing == [4, 6] and planned.batch() == [4, 4]   # a batch is consecutive epochs
    assert planned.delete == [1]                                      # both finished it; 2 and 3 wait for slow
    assert schedule.plan(make_config(num_epochs=10, ahead=3, keep=1), root).delete == []
    as_json = planned.as_json()
    assert as_json["sample"] == [4, 4] and [c["name"] for c in as_json["consumers"]] == ["fast", "slow"]


def test_a_stale_consumer_no_longer_holds_epochs_back_and_an_unreadable_one_holds_everything(root):
    for epoch in (1, 2, 3, 4):
        write_epoch(root, epoch, rows=10, files=1)
    consumers.report(root, "fast", epoch=4)
    consumers.report(root, "gone", epoch=1, now=datetime.now(timezone.utc) - timedelta(hours=2))
    config = make_config(num_epochs=5, ahead=2, keep=1, consumer_stale_seconds=3600)
    planned = schedule.plan(config, root)
    assert (planned.fastest, planned.slowest, planned.delete, planned.missing) == (4, 4, [1, 2, 3], [5])
    assert planned.as_json()["consumers"][1]["stale"] is True
    assert schedule.plan(make_config(num_epochs=5, ahead=2, keep=1, consumer_stale_seconds=3 * 3600), root).delete == []
    storage.write_text(consumers.uri(root, "broken"), "{not json")
    planned = schedule.plan(config, root)
    assert planned.unreadable == ["broken"] and planned.delete == [] and planned.missing == [5]


def test_the_schedule_is_finished_when_the_last_epoch_a_consumer_needs_exists(root):
    for epoch in (3, 4):
        write_epoch(root, epoch, rows=10, files=1)
    consumers.report(root, "only", epoch=2)
    assert schedule.plan(make_config(num_epochs=4, ahead=2, keep=0), root).finished()
    assert not schedule.plan(make_config(num_epochs=5, ahead=2, keep=0), root).finished()
    with pytest.raises(Im2vecError, match="consumer_stale_seconds > 0"):
        schedule.plan(make_config(consumer_stale_seconds=0), root)
