"""jobs.daemon: a zip archive's directory is read again only when the archive changed, and a
worker's objects are frozen after its first task (the Spark side: tests/integration/test_worker_daemon.py)."""
import gc
import os
import sys
import zipfile
import zipimport

from jobs import daemon


def write_zip(path, modules: dict[str, str]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in modules.items():
            archive.writestr(f"{name}.py", text)


def test_an_unchanged_archive_is_not_read_again_and_a_changed_one_is(tmp_path):
    archive = tmp_path / "code.zip"
    write_zip(archive, {"im2vec_zip_a": "VALUE = 1\n"})
    importer = zipimport.zipimporter(str(archive))
    daemon.invalidate_when_changed(importer)          # the first call reads, as pyspark's would
    directory = importer._files
    for _ in range(3):
        daemon.invalidate_when_changed(importer)
    assert importer._files is directory               # not read again: the archive is the same

    write_zip(archive, {"im2vec_zip_a": "VALUE = 2\n", "im2vec_zip_b": "VALUE = 3\n"})
    os.utime(archive, ns=(1, 1))                      # a different time, even within one clock tick
    daemon.invalidate_when_changed(importer)
    assert importer._files is not directory
    assert "im2vec_zip_b.py" in importer._files
    sys.path.insert(0, str(archive))
    try:
        sys.path_importer_cache[str(archive)] = importer
        import im2vec_zip_b
        assert im2vec_zip_b.VALUE == 3
    finally:
        sys.path.remove(str(archive))
        sys.path_importer_cache.pop(str(archive), None)
        sys.modules.pop("im2vec_zip_b", None)


def test_a_missing_archive_is_passed_on_to_pythons_own_invalidation(tmp_path):
    archive = tmp_path / "gone.zip"
    write_zip(archive, {"m": ""})
    importer = zipimport.zipimporter(str(archive))
    archive.unlink()
    daemon.invalidate_when_changed(importer)          # Python's own forgets the directory
    assert importer._files == {}


def test_objects_are_frozen_after_the_first_task_only():
    calls = []

    def run_task(sock, authenticated):
        calls.append((sock, authenticated))
        return 0

    worker = daemon.freezing_after_first_task(run_task)
    gc.unfreeze()
    try:
        assert worker("socket", False) == 0
        frozen = gc.get_freeze_count()
        assert frozen > 0
        kept = [[] for _ in range(1000)]              # made by a later task: left to the collector
        assert worker("socket", True) == 0
        # Not frozen again (frozen objects may still be freed meanwhile, so the count may drop).
        assert gc.get_freeze_count() < frozen + len(kept)
        assert calls == [("socket", False), ("socket", True)]
    finally:
        gc.unfreeze()
