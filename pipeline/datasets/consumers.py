"""ROOT/consumers/NAME.json: how far each trainer reading the run's epochs has got.

    {"consumer": NAME, "epoch": last finished epoch (0 before the first), "step": the consumer's own
     count (steps or batches), "updated": ISO-8601 UTC time of the write}

Any number of trainers read one run's epochs (im2vec's own, named by the ``consumer`` config key,
another model, a sweep, a user's PyTorch or Keras loop); each writes its file whole
(:func:`pipeline.storage.write_text`) when it finishes an epoch, and about every
:data:`HEARTBEAT_SECONDS` while it reads or waits for one, so a poller never reads half of it and a
slow epoch does not look like a dead trainer. ``im2vec schedule`` samples ``ahead`` epochs beyond
the fastest live consumer and deletes only what every live consumer has finished; a consumer
whose file is older than ``consumer_stale_seconds`` is stale: ``im2vec status`` shows it so and it
no longer holds epochs back. Delete a consumer's file when it is gone for good.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow.fs as pafs

from pipeline import Im2vecError, storage

FOLDER = "consumers"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# How often a reading consumer refreshes its file while its epoch number stays the same.
HEARTBEAT_SECONDS = 60


@dataclass(frozen=True)
class Consumer:
    """One consumer's last report.

    Attributes:
        name: as in its file name; epoch: last finished epoch (0 = none); step: its own count;
        updated: when it last wrote (UTC); age_seconds: seconds since then, when read.
    """
    name: str
    epoch: int
    step: int
    updated: datetime
    age_seconds: float

    def stale(self, stale_seconds: float) -> bool:
        """True when silent for longer than ``stale_seconds``: it no longer holds epochs back."""
        return self.age_seconds > stale_seconds

    def as_json(self, stale_seconds: float) -> dict:
        return {"name": self.name, "epoch": self.epoch, "step": self.step,
                "updated": self.updated.isoformat(timespec="seconds"), "age_seconds": round(self.age_seconds, 1),
                "stale": self.stale(stale_seconds)}


def uri(root: str, name: str) -> str:
    """ROOT/consumers/NAME.json; NAME is letters, digits, ``.``, ``_`` and ``-`` (a file name anywhere)."""
    if not NAME.match(name or ""):
        raise Im2vecError(f"consumer name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    return storage.join(root, FOLDER, f"{name}.json")


def report(root: str, name: str, epoch: int, step: int = 0, now: datetime | None = None) -> None:
    """Record that consumer ``name`` has finished epoch ``epoch`` (0 = none yet) at its step ``step``.

    Writes ROOT/consumers/NAME.json whole. Call it at each epoch end, and while reading or
    waiting at least every ``consumer_stale_seconds`` (with the same epoch) to stay live.
    """
    now = now or datetime.now(timezone.utc)
    body = {"consumer": name, "epoch": int(epoch), "step": int(step), "updated": now.isoformat(timespec="seconds")}
    storage.write_text(uri(root, name), json.dumps(body) + "\n")


def read_all(root: str, now: datetime | None = None, unreadable: list[str] | None = None) -> list[Consumer]:
    """Every consumer under ROOT/consumers/, by name.

    A ``NAME.json`` that is not a consumer report is skipped, its name appended to ``unreadable``
    (when given): the scheduler then deletes nothing, since that consumer may still need epochs.
    """
    now = now or datetime.now(timezone.utc)
    fs, path = storage.filesystem(storage.join(root, FOLDER))
    found = []
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        name = info.base_name[:-len(".json")]
        if info.type != pafs.FileType.File or not info.base_name.endswith(".json") or not NAME.match(name):
            continue
        try:
            body = json.loads(storage.read_text(storage.join(root, FOLDER, info.base_name)))
            updated = datetime.fromisoformat(body["updated"])
            updated = updated if updated.tzinfo else updated.replace(tzinfo=timezone.utc)
            found.append(Consumer(name, int(body["epoch"]), int(body.get("step") or 0), updated,
                                  max(0.0, (now - updated).total_seconds())))
        except (OSError, ValueError, KeyError, TypeError):
            if unreadable is not None:
                unreadable.append(name)
    return sorted(found, key=lambda c: c.name)


def problems(root: str) -> list[str]:
    """One line per ROOT/consumers/NAME.json that is not a consumer report (for ``im2vec status --verify``).

    Consumer files have no manifest: each is written whole by its consumer, so the check is that it parses.
    """
    unreadable: list[str] = []
    read_all(root, unreadable=unreadable)
    return [f"{uri(root, name)} is not a consumer report ({{consumer, epoch, step, updated}}), so `im2vec "
            f"schedule` deletes no epoch: consumer {name} rewrites it at its next report; delete it if {name} "
            "is gone for good" for name in unreadable]


def progress(consumers: list[Consumer], stale_seconds: float) -> tuple[int, int]:
    """(fastest, slowest): the highest and the lowest last finished epoch among the live consumers; (0, 0) with none."""
    live = [c.epoch for c in consumers if not c.stale(stale_seconds)]
    return (max(live), min(live)) if live else (0, 0)
