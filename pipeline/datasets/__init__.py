"""One module per dataset of a run root: its layout, reader and writer helpers, and its data guard.

    module      folder under ROOT            written by         manifest that lists its files
    clean       clean/                       im2vec clean       clean/
    rejects     rejects/clean/, hashes/,     clean, features    clean/, features/
                features/
    vocab       vocab/                       im2vec vocab       vocab/
    zero_shot   zero_shot/                   im2vec vocab       vocab/
    tagged      tagged/                      im2vec vocab       vocab/
    wordvec     wordvec/                     im2vec wordvec     wordvec/
    features    features/                    im2vec features    features/
    epochs      epochs/epoch=EEEEE/          im2vec sample      each epoch's own
    model       model/                       im2vec train       model/
    index       index/                       im2vec index       index/
    reports     reports/                     im2vec evaluate    reports/
    cross       reports/cross-NAME/          im2vec evaluate    its own
                                             --against
    consumers   consumers/NAME.json          each trainer       none: each file is checked by parsing it
    comparisons reports/sampling/            im2vec compare-    its own
                                             sampling
                comparisons/sampling/V/S/    (a run root per variant and seed: `status --root` it)

``encoding`` holds the float16 vector encodings that features/, epochs/ and index/ share;
``base`` the :class:`~pipeline.datasets.base.Dataset` every module describes its folder with.
Stages, the trainer, query, serve and the command line read and write datasets through these
modules only.
"""
from __future__ import annotations

from pipeline import storage
from pipeline.datasets import (clean, comparisons, consumers, cross, epochs, features, index, model, rejects, reports,
                               tagged, vocab, wordvec, zero_shot)
from pipeline.datasets.base import Dataset

FIXED = [clean.DATASET, rejects.CLEAN, rejects.HASHES, vocab.DATASET, zero_shot.DATASET, tagged.DATASET, wordvec.DATASET,
         features.DATASET, rejects.FEATURES, model.DATASET, index.DATASET, reports.DATASET, comparisons.REPORT]


def every(root: str) -> list[Dataset]:
    """Every dataset a run root can hold, in pipeline order, with one entry per epoch folder and
    per reports/cross-NAME/ folder found."""
    at = FIXED.index(rejects.FEATURES) + 1
    return FIXED[:at] + [epochs.dataset(e) for e in epochs.folders(root)] + FIXED[at:] + cross.found(root)


def verify(root: str) -> tuple[list[str], list[str], list[str]]:
    """Check every finished dataset under ``root`` against its manifest, and every consumer's report.

    Returns:
        ``(problems, checked, unchecked)``: one line per missing, extra or wrong-sized data file
        (see :meth:`Dataset.problems`) and per consumer report that does not parse; the names of the
        datasets checked (``consumers`` when that folder exists); and of those that exist but whose
        manifest does not list their files (written by an older im2vec), which cannot be.
    """
    problems, checked, unchecked = [], [], []
    for dataset in every(root):
        manifest = dataset.manifest(root)
        if manifest is None:
            continue
        if dataset.listed(manifest) is not None:
            checked.append(dataset.name)
            problems += dataset.problems(root, manifest)
        elif storage.exists(dataset.uri(root)):
            unchecked.append(dataset.name)
    if storage.exists(storage.join(root, consumers.FOLDER)):
        checked.append(consumers.FOLDER)
        problems += consumers.problems(root)
    return problems, checked, unchecked
