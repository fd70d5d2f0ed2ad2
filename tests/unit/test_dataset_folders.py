"""`im2vec status --verify` covers every folder a run root can hold.

Each module of pipeline.datasets describes the folders it owns: as Dataset constants (clean.DATASET,
rejects.CLEAN, ...), or, for folders found under a root, through a function (one per epoch, one
per other corpus evaluated against). A root holding one finished example of each, every data file
cut short, and a consumer report that does not parse must give one --verify line for each: a new
module (or a new folder of an old one) that --verify does not check fails here.
"""
import importlib
import pkgutil
import posixpath
from pathlib import Path

import pipeline.datasets
from pipeline import cli, datasets, storage
from pipeline.datasets import consumers, cross, epochs
from pipeline.datasets.base import Dataset

HELPERS = {"base", "encoding"}   # modules that own no folder of a run root
OTHER_ROOT = "file:///data/openmoji"
# Modules whose folders are found under a root: an example of each, and what its manifest records.
FOUND = {"epochs": ([epochs.dataset(1)], {}),
         "cross": ([cross.dataset(OTHER_ROOT)], {"against": OTHER_ROOT})}
CONSUMERS = "consumers"          # no Dataset: ROOT/consumers/NAME.json, each checked by parsing it
DATA_FILE, SIZE = "part-00000.parquet", 10


def modules() -> dict:
    return {info.name: importlib.import_module(f"pipeline.datasets.{info.name}")
            for info in pkgutil.iter_modules(pipeline.datasets.__path__)}


def described(module) -> list[Dataset]:
    """The Dataset constants of a module."""
    return [value for value in vars(module).values() if isinstance(value, Dataset)]


def every_folder() -> list[Dataset]:
    """One Dataset for every folder the modules describe, found ones by example."""
    found = [d for name, module in modules().items() if name not in FOUND for d in described(module)]
    return list({d.name: d for d in found + [d for listed, _ in FOUND.values() for d in listed]}.values())


def write_every_folder(root: str) -> list[Dataset]:
    """One data file in each folder, listed by the manifest that vouches for it; returns the folders."""
    folders, listed = every_folder(), {}
    for dataset in folders:
        path = Path(storage.filesystem(dataset.uri(root))[1]) / DATA_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * SIZE)
        listed.setdefault(dataset.manifest_folder, {})[
            posixpath.relpath(dataset.folder, dataset.manifest_folder)] = {DATA_FILE: SIZE}
    for folder, data_files in listed.items():
        extra = next((fields for found, fields in FOUND.values() if found[0].manifest_folder == folder), {})
        storage.write_manifest(storage.join(root, folder), "test", rows_in=0, rows_out=0, rows_rejected=0,
                               parameters={}, inputs=[], started=0.0, data_files=data_files, **extra)
    return folders


def test_every_module_of_pipeline_datasets_describes_its_folders_or_is_known_here():
    unknown = {name for name, module in modules().items() if not described(module)} - HELPERS - set(FOUND)
    assert unknown == {CONSUMERS}, f"modules whose folders --verify may miss: {unknown - {CONSUMERS}}"


def test_status_verify_finds_a_damaged_file_in_every_folder_a_root_can_hold(root, capsys):
    folders = write_every_folder(root)
    consumers.report(root, "im2vec-train", epoch=1)
    problems, checked, unchecked = datasets.verify(root)
    assert (problems, unchecked) == ([], [])
    assert sorted(checked) == sorted([d.name for d in folders] + [CONSUMERS])
    assert cli.main(["status", "--root", root, "--verify"]) == 0
    assert "the consumers' reports parsed: every data file is there" in capsys.readouterr().out

    for dataset in folders:
        (Path(storage.filesystem(dataset.uri(root))[1]) / DATA_FILE).write_bytes(b"x" * (SIZE // 2))
    storage.write_text(consumers.uri(root, "gone"), '{"consumer": "gone", "epo')
    assert cli.main(["status", "--root", root, "--verify"]) == 1
    out = capsys.readouterr().out
    for dataset in folders:
        assert (f"verify: {storage.join(dataset.uri(root), DATA_FILE)} is {SIZE // 2} bytes, the manifest says "
                f"{SIZE}: the file is truncated; run `{dataset.remake}` again\n") in out
    assert f"run `im2vec evaluate --against {OTHER_ROOT}` again" in out
    assert (f"verify: {consumers.uri(root, 'gone')} is not a consumer report ({{consumer, epoch, step, updated}}), "
            "so `im2vec schedule` deletes no epoch: consumer gone rewrites it at its next report; delete it if gone "
            "is gone for good\n") in out
    assert f"{len(folders) + 1} problem(s)" in out
    assert [c.name for c in consumers.read_all(root)] == ["im2vec-train"]   # the readable one still counts
