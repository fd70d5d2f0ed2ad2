"""The sampling comparison's aggregation (model/sampling_report.py) on hand-made records, the command's
one-line errors, and a run's own vocab/ (pipeline/compare.py) on real files."""
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model import sampling_report
from pipeline import Im2vecError, cli, compare, config as configuration, storage
from pipeline.datasets import tagged, vocab as vocab_data


def record(variant, seed, val_f1, test_f1, *, test_map=0.1, zero_map=0.05, sample_seconds=4.0,
           epoch_bytes=13_000_000, examples=5000.0, overrides=None):
    return {"variant": variant, "seed": seed, "overrides": overrides or {},
            "validation": {"f1": val_f1, "p_at_5": 0.2, "r_at_5": 0.3, "best_epoch": 10 + seed, "epochs_trained": 20},
            "test": {"precision": 0.08, "recall": 0.12, "f1": test_f1, "n_plus": 40 + seed, "tags": 120,
                     "p_at_5": 0.09, "r_at_5": 0.2, "map": test_map, "map_random": 0.02},
            "zero_shot": {"f1": 0.07, "map": zero_map, "map_random": 0.022},
            "baselines": {"popularity": {"precision": 0.001, "recall": 0.026, "f1": 0.002, "n_plus": 4,
                                         "p_at_5": 0.039, "map": None},
                          "knn": {"precision": 0.101, "recall": 0.151, "f1": 0.121, "n_plus": 50, "p_at_5": 0.116,
                                  "map": 0.135}},
            "sizes": {"test_images": 538},
            "cost": {"sample_seconds_per_epoch": sample_seconds, "bytes_per_epoch": epoch_bytes,
                     "examples_per_second": examples}}


def test_mean_and_sample_standard_deviation_skip_missing_values():
    assert sampling_report.mean_sd([0.1, 0.2, 0.3, None]) == pytest.approx({"mean": 0.2, "sd": 0.1, "n": 3})
    assert sampling_report.mean_sd([0.4]) == {"mean": 0.4, "sd": None, "n": 1}
    assert sampling_report.mean_sd([None, None]) == {"mean": None, "sd": None, "n": 0}


def test_validation_chooses_even_where_test_disagrees():
    # "sampled" wins on validation (0.15 vs 0.14), "batch" on test (0.10 vs 0.08): validation decides.
    records = [record("sampled", s, v, t) for s, v, t in ((1, 0.15, 0.08), (2, 0.16, 0.07), (3, 0.14, 0.09))] + \
              [record("batch", s, v, t, examples=2000.0) for s, v, t in ((1, 0.14, 0.10), (2, 0.13, 0.11), (3, 0.15, 0.09))]
    table = sampling_report.rows(records, order=["batch", "sampled"])
    assert [row["variant"] for row in table] == ["batch", "sampled"]
    batch, sampled = table
    assert sampled["wins_on_validation"] and not batch["wins_on_validation"]
    assert sampled["validation_f1"]["mean"] == pytest.approx(0.15)
    assert sampled["validation_f1"]["sd"] == pytest.approx(0.01)
    assert batch["test"]["f1"] == pytest.approx({"mean": 0.10, "sd": 0.01, "n": 3})
    assert batch["behind_winner"] == pytest.approx(0.01) and sampled["behind_winner"] == 0
    assert sampled["best_epochs"] == [11, 12, 13] and sampled["seeds"] == [1, 2, 3]
    assert batch["cost"]["examples_per_second"]["mean"] == 2000.0 and batch["cost"]["examples_per_second"]["sd"] == 0


def test_a_variant_with_fewer_seeds_cannot_win():
    records = [record("full", s, 0.15, 0.1) for s in (1, 2, 3)] + [record("lucky", 1, 0.30, 0.1)]
    assert sampling_report.winner(sampling_report.rows(records)) == "full"


def test_report_names_winner_runner_up_and_margin_and_the_tables_carry_cost():
    records = [record("default", s, 0.150 + 0.002 * s, 0.08, sample_seconds=4.0 + s) for s in (1, 2, 3)] + \
              [record("neg_power_0", s, 0.140, 0.09, epoch_bytes=12_500_000, overrides={"neg_power": 0})
               for s in (1, 2, 3)]
    result = sampling_report.report(records)
    assert (result["winner"], result["runner_up"]) == ("default", "neg_power_0")
    assert result["margin"] == pytest.approx(0.154 - 0.140)
    json.dumps(result)    # sampling.json
    text = sampling_report.markdown(result)
    assert "**default** (wins on validation)" in text and "0.154 ± 0.002" in text
    assert '{"neg_power": 0}' in text and "as configured" in text
    # cost table: seconds per epoch (5, 6, 7 and 4), 13.0 and 12.5 MB per epoch, examples/s
    assert "| default | 6.0 ± 1.0 | 13.0 ± 0.0 | 5,000 ± 0 |" in text
    assert "| neg_power_0 | 4.0 ± 0.0 | 12.5 ± 0.0 | 5,000 ± 0 |" in text
    assert "| knn (baseline) |" in text and "0.121" in text
    assert "0.014 above the runner-up neg_power_0" in text
    assert sampling_report.plot(result)[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_seed_reports_no_spread():
    text = sampling_report.markdown(sampling_report.report([record("default", 1, 0.151, 0.08)]))
    assert "| 0.151 |" in text and "±" not in text.split("\n")[4]


def run_cli(root, *args):
    return cli.main(["compare-sampling", "--root", str(root), *args])


def test_a_variant_that_cannot_run_is_one_line_naming_it_before_anything_runs(tmp_path, capsys):
    variants = "sampling_variants={ok: {}, bogus: {sampling: no_such_method}, fixed: {min_images: 2}}"
    assert run_cli(tmp_path / "root", "--set", variants, "--variants", "bogus,fixed") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "sampling variant 'bogus'" in err and "no_such_method" in err
    assert "sampling variant 'fixed': min_images cannot vary" in err
    assert not (tmp_path / "root").exists()
    assert run_cli(tmp_path / "root", "--variants", "nope") == 2
    assert "unknown sampling variant(s) 'nope'" in capsys.readouterr().err


def test_the_default_variants_cover_the_issues_list():
    variants = compare.chosen_variants(configuration.load(), None)
    assert list(variants) == ["default", "presampled", "neg_power_0", "neg_power_1", "own_tags_kept", "research_code",
                              "next_image", "in_batch", "in_batch_logq", "mixed_logq", "uniform_positives",
                              "full_softmax"]
    # The default is mixed; Option II's questions (neg_power, own tags, positives) are asked of Option II itself.
    assert variants["default"] == {} and configuration.load()["sampling"] == "mixed"
    assert variants["research_code"] == {"sampling": "presampled", "neg_power": 1, "exclude_own_tags": False}
    assert compare.chosen_variants(configuration.load(), ["uniform_positives"]) == {
        "uniform_positives": {"sampling": "presampled", "pos_power": 0}}


def test_a_root_that_is_not_local_is_refused():
    with pytest.raises(Im2vecError, match="needs a file:// run root"):
        compare.check_root("s3a://bucket/run")


def make_root(folder):
    """vocab/ (neg_power 0.75, pos_power -0.5 under its old name pos_alpha 0.5, as roots made before 0.2 say)
    vouching for tagged/ and zero_shot/, as the vocab stage leaves them."""
    images = np.array([9, 5, 2], np.int64)
    for name, table in (
            ("vocab", pa.table({"tag_id": pa.array([0, 1, 2], pa.int32()), "tag": ["a", "b", "c"], "images": images,
                                "users": images, "neg_weight": images ** 0.75, "pos_weight": images ** -0.5})),
            ("tagged", pa.table({"photo_id": [1, 2], "user_id": ["u", "v"], "split": ["train", "test"],
                                 "tag_ids": pa.array([[0, 1], [2]], pa.list_(pa.int32()))})),
            ("zero_shot", pa.table({"tag": ["d"], "images": [3], "users": [2]}))):
        (folder / name).mkdir(parents=True)
        pq.write_table(table, folder / name / "part-00000.parquet")
    root = "file://" + str(folder)
    storage.write_manifest(storage.join(root, "vocab"), "vocab", rows_in=2, rows_out=2, rows_rejected=0,
                           parameters={"neg_power": 0.75, "pos_alpha": 0.5, "zero_shot_fraction": 0.1},
                           inputs=[], started=0.0, covers=(storage.join(root, "tagged"), storage.join(root, "zero_shot")),
                           vocab_size=3)
    return root


def test_a_runs_vocab_has_the_variants_weights_and_links_the_roots_tagged(tmp_path):
    root = make_root(tmp_path / "root")
    run_root = "file://" + str(tmp_path / "root" / "comparisons" / "sampling" / "neg_power_0" / "seed-1")
    compare.link_shared(root, run_root)
    compare.write_vocab(root, run_root, {**configuration.load(), "neg_power": 0, "pos_power": -0.5})
    made, theirs = vocab_data.read(run_root), vocab_data.read(root)
    assert made.column("neg_weight").to_pylist() == [1.0, 1.0, 1.0]
    assert made.column("pos_weight").equals(theirs.column("pos_weight"))   # the root's power: kept as it is
    assert made.column("tag").equals(theirs.column("tag"))
    assert vocab_data.DATASET.require(run_root)["parameters"]["neg_power"] == 0
    assert tagged.read_split(run_root, "test").column("photo_id").to_pylist() == [2]    # through the link
    assert (tmp_path / "root" / "comparisons" / "sampling" / "neg_power_0" / "seed-1" / "tagged").is_symlink()
    storage.delete(run_root)
    assert tagged.read_split(root, "train").num_rows == 1 and not math.isnan(theirs.column("neg_weight")[0].as_py())
