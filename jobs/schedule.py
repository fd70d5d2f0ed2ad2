"""The schedule command: keep epochs sampled ahead of the run's consumers and delete what they are done with.

Consumers are the trainers that read the epochs; each reports the last epoch it finished in
ROOT/consumers/NAME.json (pipeline.datasets.consumers; im2vec's own trainer as the config key
``consumer``). One silent for longer than ``consumer_stale_seconds`` is stale and counts for
nothing. With F and S the last finished epochs of the fastest and the slowest live consumer (0
while there is none), a pass (:func:`plan`)

- deletes ROOT/epochs/epoch=E/ for every E <= S - keep: what every live consumer has finished,
  but for the last ``keep``;
- makes the epochs S+1 .. min(epochs, F+ahead) that have no _manifest.json, in order: ``ahead``
  beyond the fastest, and any a slower consumer still needs (an epoch without a manifest is
  incomplete and is made again);
- ends the loop when every epoch through ``epochs`` that a consumer still needs exists
  (F + ahead >= epochs), or after one pass with ``--once``; otherwise sleeps
  ``schedule_poll_seconds`` and goes again.

Without ``--submit`` the loop holds one Spark session and makes one epoch at a time, reading the
consumers again after each. With ``--submit PROFILE`` it starts no Spark itself: each run of
consecutive missing epochs A..B is one ``spark-submit`` of ``im2vec sample --epochs A-B``, an
application of its own, so no executor is held between batches. ``--plan`` prints what a pass
would do, as JSON, and changes nothing; ``--delete-only`` deletes and samples nothing (the
Airflow DAG in deploy/airflow/ is made of these and ``im2vec sample``).

Killed and restarted, it deletes the staging folders the killed run left under ROOT/epochs/ and
carries on: epochs are deterministic, so a remade epoch is the one that would have been made.
Do not run ``im2vec sample`` on the same root meanwhile: its staging folder would be deleted.
Run with `im2vec schedule --root ROOT [--once] [--submit PROFILE]`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow.fs as pafs

from jobs import sample
from pipeline import Im2vecError, storage
from pipeline.datasets import consumers, epochs


def log(message: str) -> None:
    print(f"[im2vec] schedule: {message}", flush=True)


@dataclass
class Plan:
    """What one pass of the schedule does (see the module docstring).

    Attributes:
        consumers: every consumer's last report; stale_seconds: when one counts as stale.
        fastest, slowest: F and S, the live consumers' last finished epochs (0 with none).
        sampled: the complete epochs on disk. missing: the epochs to make, in order.
        delete: the epoch folders to delete (complete or not); none while a consumer's report is
            unreadable (``unreadable``: their names). total, ahead: the config's.
    """
    consumers: list
    stale_seconds: float
    fastest: int
    slowest: int
    sampled: list[int]
    missing: list[int]
    delete: list[int]
    total: int
    ahead: int
    unreadable: list[str]

    def batch(self) -> list[int]:
        """``[A, B]``: the first run of consecutive missing epochs, one spark-submit's worth; [] when none."""
        if not self.missing:
            return []
        last = self.missing[0]
        while last + 1 in self.missing:
            last += 1
        return [self.missing[0], last]

    def finished(self) -> bool:
        """Nothing to make, now or later: every epoch through ``epochs`` a consumer still needs exists."""
        return not self.missing and self.fastest + self.ahead >= self.total

    def as_json(self) -> dict:
        """What ``im2vec schedule --plan`` prints: ``sample`` is :meth:`batch`."""
        return {"consumers": [c.as_json(self.stale_seconds) for c in self.consumers], "fastest": self.fastest,
                "slowest": self.slowest, "sampled": self.sampled, "missing": self.missing, "sample": self.batch(),
                "delete": self.delete, "epochs": self.total, "ahead": self.ahead, "unreadable": self.unreadable}


def settings(config: dict) -> dict:
    """The schedule's config values, checked: epochs, ahead, keep, schedule_poll_seconds, consumer_stale_seconds."""
    values = {"epochs": int(config["num_epochs"]), "ahead": int(config["ahead"]), "keep": int(config["keep"]),
              "poll": float(config["schedule_poll_seconds"]), "stale": float(config["consumer_stale_seconds"])}
    if values["ahead"] < 1 or values["keep"] < 0 or values["poll"] <= 0 or values["stale"] <= 0:
        raise Im2vecError(f"schedule needs ahead >= 1, keep >= 0, schedule_poll_seconds > 0 and "
                          f"consumer_stale_seconds > 0; got {values['ahead']}, {values['keep']}, {values['poll']}, "
                          f"{values['stale']}")
    return values


def plan(config: dict, root: str) -> Plan:
    """Read the consumers' reports and the epochs under ``root``; decide what a pass does (changes nothing)."""
    values = settings(config)
    unreadable: list[str] = []
    found = consumers.read_all(root, unreadable=unreadable)
    fastest, slowest = consumers.progress(found, values["stale"])
    folders = epochs.folders(root)
    sampled = [e for e in folders if epochs.dataset(e).manifest(root) is not None]
    needed = range(slowest + 1, min(values["epochs"], fastest + values["ahead"]) + 1)
    delete = [] if unreadable else [e for e in folders if e <= slowest - values["keep"]]
    return Plan(found, values["stale"], fastest, slowest, sampled, [e for e in needed if e not in sampled], delete,
                values["epochs"], values["ahead"], unreadable)


def delete_finished(root: str, planned: Plan) -> list[int]:
    """Delete the epoch folders of ``planned.delete``; returns them."""
    for epoch in planned.delete:
        storage.delete(epochs.uri(root, epoch))
        log(f"deleted epoch {epoch} (every live consumer has finished epoch {planned.slowest})")
    return planned.delete


def clean_staging(root: str) -> list[str]:
    """Delete the ``_staging-*`` folders under ROOT/epochs/ (left by a killed run); returns their URIs."""
    epochs_uri = epochs.parent_uri(root)
    fs, path = storage.filesystem(epochs_uri)
    stale = [storage.join(epochs_uri, info.base_name)
             for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
             if info.base_name.startswith("_staging-")]
    for uri in stale:
        storage.delete(uri)
    return stale


def submit_batch(root: str, batch: list[int], profile: str, stage_args: list[str]) -> list[dict]:
    """``im2vec sample --epochs A-B`` through spark-submit (pipeline.submit); returns the epochs' manifests.

    Args:
        stage_args: the user's ``--config``/``--set`` arguments, passed on to the sample stage.

    Raises:
        Im2vecError: spark-submit failed, or left an epoch of the batch incomplete.
    """
    from pipeline import submit

    first, last = batch
    code = submit.submit("sample", profile, ["--root", root, "--epochs", f"{first}-{last}", *stage_args])
    made = [epochs.dataset(e).manifest(root) for e in range(first, last + 1)]
    if code != 0 or any(m is None for m in made):
        raise Im2vecError(f"sampling epochs {first}-{last} through spark-submit (profile {profile}) failed "
                          f"(exit code {code}); its output is above")
    return made


def run(config: dict, root: str, once: bool = False, submit: str | None = None,
        stage_args: list[str] | None = None) -> list[dict]:
    """Run the schedule until every epoch through ``epochs`` exists (or one pass with ``once``).

    Args:
        config: the run configuration (ahead, keep, schedule_poll_seconds, consumer_stale_seconds,
            epochs, and the sample stage's keys); root: the run root URI.
        submit: a spark-submit profile: each batch of epochs is its own application (no Spark
            session here); None: one local session makes the epochs.
        stage_args: with ``submit``, the ``--config``/``--set`` arguments the sample stage gets.

    Returns:
        The manifests of the epochs made, in the order they were made.
    """
    values = settings(config)
    sample.parameters(config)
    for uri in clean_staging(root):
        log(f"deleted {uri} left by an earlier run")
    spark = inputs = None
    made: list[dict] = []
    while True:
        planned = plan(config, root)
        if planned.unreadable:
            log(f"cannot read the report of consumer(s) {', '.join(planned.unreadable)} under "
                f"{storage.join(root, consumers.FOLDER)}: deleting nothing until it is fixed or removed")
        delete_finished(root, planned)
        if planned.missing:
            if submit:
                batch = planned.batch()
                log(f"making epochs {batch[0]}-{batch[1]} through spark-submit (fastest consumer finished epoch "
                    f"{planned.fastest}, slowest {planned.slowest})")
                made += submit_batch(root, batch, submit, stage_args or [])
                continue
            if spark is None:
                from pipeline.spark import session

                spark = session(config, "im2vec schedule")
            inputs = inputs or sample.prepare(spark, config, root)
            manifest = sample.write_epoch(spark, config, root, inputs, planned.missing[0])
            made.append(manifest)
            log(f"made epoch {planned.missing[0]}: {manifest['rows_out']:,} rows in {manifest['seconds']:.1f}s "
                f"(fastest consumer finished epoch {planned.fastest}, slowest {planned.slowest})")
            continue
        if planned.finished():
            log(f"every epoch through {planned.total} is sampled (fastest consumer finished epoch "
                f"{planned.fastest}); exiting")
            return made
        if once:
            return made
        time.sleep(values["poll"])
