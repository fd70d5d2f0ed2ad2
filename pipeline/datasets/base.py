"""What every dataset of a run root shares: where it lives, which manifest vouches for it, and the data guard.

A stage writes its folder, then ``_manifest.json`` last (pipeline.storage.write_manifest), which
lists the data files it wrote with their sizes, per folder (``data_files``: {"." for the manifest's own
folder, "../tagged" for a sibling the same stage wrote: {file: bytes}}). Before a reader
reads a dataset it checks the folder against that list, so a missing, extra or truncated file
is one clear :class:`pipeline.Im2vecError` naming the file and the command that remakes it,
instead of a stack trace from deep inside Spark or Arrow.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from pipeline import Im2vecError, storage


@dataclass(frozen=True)
class Dataset:
    """One folder of a run root.

    Attributes:
        name: what status and errors call it (``"clean"``, ``"rejects/clean"``, ``"epochs/epoch=00001"``).
        folder: its path under the run root.
        manifest_folder: the folder (under the root) whose ``_manifest.json`` lists its files: its own,
            or the stage's main output (vocab/ vouches for tagged/ and zero_shot/).
        remake: the command that writes it again, e.g. ``"im2vec vocab"``.
        subfolders: False when only the files directly in ``folder`` are the dataset (model/: its
            checkpoints/ and logs/ are the trainer's working state, not what readers read).
    """
    name: str
    folder: str
    manifest_folder: str
    remake: str
    subfolders: bool = True

    def uri(self, root: str) -> str:
        """The dataset's folder URI under ``root``."""
        return storage.join(root, self.folder)

    def manifest(self, root: str) -> dict | None:
        """The manifest that vouches for the dataset, or None while it is missing or incomplete."""
        return storage.read_manifest(storage.join(root, self.manifest_folder))

    def require(self, root: str) -> dict:
        """Check the dataset before reading it; returns its manifest.

        Raises:
            Im2vecError: one line: the stage never finished (no manifest), or a data file is
                missing, extra or of another size than the manifest says (see :meth:`problems`).
        """
        manifest = self.manifest(root)
        if manifest is None:
            raise Im2vecError(f"{self.uri(root)} is missing or incomplete: run `{self.remake}` first")
        problems = self.problems(root, manifest)
        if problems:
            raise Im2vecError(problems[0] + (f" (and {len(problems) - 1} more problem(s): "
                                             "`im2vec status --verify` lists them)" if len(problems) > 1 else ""))
        return manifest

    def check_if_finished(self, root: str) -> dict | None:
        """:meth:`require` when the dataset has a manifest; None without one (for readers that also
        read a dataset still being written, such as the model while training runs)."""
        return self.require(root) if self.manifest(root) is not None else None

    def arrow(self, root: str, finished: bool = True):
        """The folder as a pyarrow Parquet dataset (hidden files are not read), after :meth:`require`;
        with ``finished=False`` also a folder without a manifest (:meth:`check_if_finished`)."""
        import pyarrow.dataset as ds

        if finished:
            self.require(root)
        else:
            self.check_if_finished(root)
        fs, path = storage.filesystem(self.uri(root))
        return ds.dataset(path, filesystem=fs, format="parquet")

    def spark(self, spark, root: str):
        """The folder as a Spark DataFrame, after :meth:`require`."""
        self.require(root)
        return spark.read.parquet(self.uri(root))

    def problems(self, root: str, manifest: dict | None = None) -> list[str]:
        """One line per data file that disagrees with the manifest; [] when the folder matches it.

        A manifest that does not list the folder (written by an older im2vec, or by hand) cannot
        be checked and gives []; so does a dataset without a manifest (reported as missing elsewhere).
        """
        manifest = manifest if manifest is not None else self.manifest(root)
        expected = self.listed(manifest)
        if expected is None:
            return []
        found = {name: size for name, size in storage.list_data_files(self.uri(root)).items()
                 if self.subfolders or "/" not in name}
        again = f"run `{self.remake}` again"
        lines = []
        for name in sorted(expected.keys() | found.keys()):
            uri = storage.join(self.uri(root), name)
            if name not in found:
                lines.append(f"{uri} is missing, the manifest lists it ({expected[name]:,} bytes); {again}")
            elif name not in expected:
                lines.append(f"{uri} is not in the manifest: an extra file; delete it or {again}")
            elif found[name] != expected[name]:
                state = "truncated" if found[name] < expected[name] else "longer than written"
                lines.append(f"{uri} is {found[name]:,} bytes, the manifest says {expected[name]:,}: "
                             f"the file is {state}; {again}")
        return lines

    def listed(self, manifest: dict | None) -> dict[str, int] | None:
        """{file path in the folder: bytes} as the manifest lists them; None when it does not list the folder."""
        folders = (manifest or {}).get("data_files")
        files = folders.get(posixpath.relpath(self.folder, self.manifest_folder)) if isinstance(folders, dict) else None
        if files is None:
            return None
        return {name: int(size) for name, size in files.items() if self.subfolders or "/" not in name}
