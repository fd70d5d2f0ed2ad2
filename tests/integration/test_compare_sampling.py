"""`im2vec compare-sampling` on the shared openclipart run of conftest.py: two variants (the default,
mixed, and presampled with neg_power 0) x two seeds x two epochs, through the real stages."""
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli, storage
from pipeline.datasets import comparisons, vocab as vocab_data
from tests.integration.conftest import SETTINGS, needs_openclipart

pytestmark = [pytest.mark.slow, needs_openclipart]

VARIANTS, SEEDS = ("default", "neg_power_0"), (1, 2)


def test_every_variant_and_seed_is_trained_reported_and_not_run_twice(prepared, tmp_path, capsys):
    folder = tmp_path / "root"
    shutil.copytree(prepared, folder, ignore=shutil.ignore_patterns("epochs", "model", "index", "reports"))
    root = "file://" + str(folder)
    vocab_before = storage.read_text(storage.join(root, "vocab", storage.MANIFEST))
    args = ["compare-sampling", "--root", str(folder), "--variants", ",".join(VARIANTS),
            "--seeds", ",".join(map(str, SEEDS)), "--set", "num_epochs=2",
            *(a for key, value in SETTINGS.items() for a in ("--set", f"{key}={value}"))]
    started = time.time()
    assert cli.main(args) == 0
    first_seconds = time.time() - started
    out = capsys.readouterr().out

    report = folder / "reports" / "sampling"
    result = json.loads((report / "sampling.json").read_text())
    assert sorted((r["variant"], r["seed"]) for r in result["runs"]) == sorted(
        (v, s) for v in VARIANTS for s in SEEDS)
    assert [row["variant"] for row in result["variants"]] == list(VARIANTS)
    assert [row["seeds"] for row in result["variants"]] == [list(SEEDS)] * 2
    assert sum(row["wins_on_validation"] for row in result["variants"]) == 1
    best = max(result["variants"], key=lambda row: row["validation_f1"]["mean"])
    assert result["winner"] == best["variant"]
    markdown = (report / "sampling.md").read_text()
    assert all(f"| {name} |" in markdown or f"**{name}**" in markdown for name in VARIANTS)
    assert markdown in out
    assert (report / "sampling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert comparisons.REPORT.require(root)["rows_out"] == 4

    for run in result["runs"]:
        assert 0 < run["validation"]["f1"] <= 1 and run["validation"]["best_epoch"] in (1, 2)
        assert run["test"]["f1"] is not None and run["test"]["map"] is not None
        assert run["zero_shot"]["map"] is not None          # the shared run holds 10% of the tags out
        assert run["baselines"]["knn"]["f1"] == result["runs"][0]["baselines"]["knn"]["f1"]   # one test set
        cost = run["cost"]
        assert cost["epochs_sampled"] == 2 and cost["sample_seconds_per_epoch"] > 0
        assert cost["bytes_per_epoch"] > 1e5 and cost["examples_per_second"] > 0
        run_root = Path(storage.filesystem(comparisons.run_uri(root, run["variant"], run["seed"]))[1])
        assert (run_root / comparisons.RESULT).is_file() and (run_root / "features").is_symlink()
        assert not (run_root / "epochs").exists() and not (run_root / "model" / "checkpoints").exists()
        weights = vocab_data.read("file://" + str(run_root), ["neg_weight"]).column("neg_weight").to_numpy()
        if run["variant"] == "neg_power_0":
            assert np.all(weights == 1.0)
        else:
            assert np.array_equal(weights, vocab_data.read(root, ["neg_weight"]).column("neg_weight").to_numpy())
    by_run = {(r["variant"], r["seed"]): r for r in result["runs"]}
    assert any(by_run["default", s]["validation"] != by_run["neg_power_0", s]["validation"] for s in SEEDS)
    assert storage.read_text(storage.join(root, "vocab", storage.MANIFEST)) == vocab_before

    started = time.time()
    assert cli.main(args) == 0
    again = capsys.readouterr().out
    assert again.count("not run again") == 4 and "[im2vec] train:" not in again
    assert time.time() - started < first_seconds / 4
    assert json.loads((report / "sampling.json").read_text())["runs"] == result["runs"]
