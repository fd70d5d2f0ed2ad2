"""`im2vec evaluate --against`: a model trained on one run root scored on another root's test images.

Fast: the made-up run of test_evaluate.py (known answers) as the trained root, and as the other
root the same images under another vocabulary: some of its tags in another order, some held-out
concepts of the trained run (with word vectors: zero-shot), one without a vector.
Slow: the shared small openclipart run (conftest.py) scored on 400 OpenMoji emoji made into a root
by the real clean, vocab and features stages.
"""
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model import cross, evaluate
from pipeline import Im2vecError, cli, storage
from pipeline.datasets import cross as cross_data, reports
from tests.integration.conftest import make_config, needs_openclipart
from tests.integration.test_evaluate import HELD_OUT, NO_VECTOR, VOCAB, fast_config, make_run, manifest

# 8 of the trained vocabulary's 11 tags, in another order, and 4 the trained vocabulary lacks.
OTHER_VOCAB = ["dog", "thing", "bird", "moon", "cat", "lamp", "car", "tree", NO_VECTOR, "boat", "sun", "frog"]


def make_other(folder: Path) -> str:
    """The made-up run's images under OTHER_VOCAB: vocab/ and tagged/ rewritten from clean/'s tags."""
    root = make_run(folder)
    clean = pq.read_table(folder / "clean")
    tagged = pq.read_table(folder / "tagged")
    tags_of = dict(zip(clean.column("photo_id").to_pylist(), clean.column("tags").to_pylist()))
    tag_ids = [sorted(OTHER_VOCAB.index(t) for t in tags_of[p] if t in OTHER_VOCAB)
               for p in tagged.column("photo_id").to_pylist()]
    shutil.rmtree(folder / "vocab")
    shutil.rmtree(folder / "tagged")
    counts = np.bincount([t for ids in tag_ids for t in ids], minlength=len(OTHER_VOCAB))
    (folder / "vocab").mkdir()
    pq.write_table(pa.table({"tag_id": pa.array(range(len(OTHER_VOCAB)), pa.int32()), "tag": OTHER_VOCAB,
                             "images": counts, "users": counts, "neg_weight": counts ** 0.75,
                             "pos_weight": np.maximum(counts, 1) ** -0.5}), folder / "vocab" / "part-00000.parquet")
    (folder / "tagged").mkdir()
    pq.write_table(tagged.set_column(tagged.schema.get_field_index("tag_ids"), "tag_ids",
                                     pa.array(tag_ids, pa.list_(pa.int32()))), folder / "tagged" / "part-00000.parquet")
    manifest(folder / "vocab", "vocab", parameters={"zero_shot_fraction": 0.0})
    return root


@pytest.fixture()
def roots(tmp_path):
    trained = make_run(tmp_path / "trained")
    evaluate.run(fast_config(), trained)
    return trained, make_other(tmp_path / "other")


def test_against_another_vocabulary_finds_the_shared_and_the_unseen_tags(roots, tmp_path, capsys):
    trained, other = roots
    before = (tmp_path / "trained" / "reports" / "evaluation.json").read_bytes()
    assert cli.main(["evaluate", "--root", trained, "--against", other, "--set", "evaluation_images=150",
                     "--set", "knn_k=5"]) == 0
    printed = capsys.readouterr().out
    assert "| im2vec |" in printed and "over the 8 tags the two vocabularies share" in printed
    report = cross_data.read_evaluation(trained, other)
    sizes = report["sizes"]
    assert sizes["shared_tags"] == 8 and sizes["other_vocab_size"] == 12 and sizes["test_images"] == 150
    assert report["shared_tags"] == [t for t in VOCAB if t in OTHER_VOCAB]
    # Every test image carries "thing" and one concept: im2vec ("thing" first by its bias) and knn
    # find both in their top 2 when the concept is shared, and rank each shared tag's images first (im2vec
    # by cosine; by p(tag | image), the "thing" images that look most like the concept mix in).
    for name in ("im2vec", "knn"):
        assert report[name]["curve"]["r_at_k"][1] > 0.95 and report[name]["map"] > 0.85, name
        assert report[name]["n_plus"] == report[name]["tags"] == 8
    assert report["knn"]["map"] > 0.95 and report["im2vec"]["map_by_cosine"] > 0.95
    assert report["popularity"]["n_plus"] <= 5 and report["popularity"]["curve"]["r_at_k"][1] < 0.8
    # bird, lamp, frog: in the other vocabulary only, found through word vectors; NO_VECTOR has none.
    zero = report["zero_shot"]
    assert zero["run"] and zero["other_only"] == 4 and zero["with_vector"] == 3
    assert set(zero["examples"]) == {"bird", "lamp", "frog"} <= set(HELD_OUT)
    assert zero["curve"]["p_at_k"][0] > 0.9 and zero["map"] > 0.95
    # Its own folder; the in-corpus report is untouched and still passes the data guard.
    assert (tmp_path / "trained" / "reports" / "evaluation.json").read_bytes() == before
    assert reports.read_evaluation(trained)["sizes"]["test_images"] == 150
    written = storage.read_manifest(storage.join(trained, "reports", "cross-other"))
    assert written["rows_out"] == 150 and set(written["data_files"]["."]) == {"evaluation.json", "evaluation.md"}
    assert written["rows_in"] == written["rows_out"] + written["without_features"] + written["left_out"]


def test_against_itself_it_is_the_in_corpus_evaluation(roots):
    trained, _ = roots
    in_corpus = json.loads(storage.read_text(storage.join(trained, "reports", "evaluation.json")))
    report = cross.run(fast_config(), trained, trained)["report"]
    for name in ("im2vec", "popularity", "knn"):
        for key in ("precision", "recall", "f1", "n_plus", "tags", "p_at_5", "r_at_5", "map"):
            assert report[name][key] == pytest.approx(in_corpus[name][key]), (name, key)
    # The same fused tagger both ways (its projection, ConSE prior and neighbours' votes), and mAP by cosine beside.
    assert report["im2vec"]["map_by_cosine"] == pytest.approx(in_corpus["im2vec"]["map_by_cosine"])
    assert report["zero_shot"]["run"] is False and "every tag" in report["zero_shot"]["reason"]


def test_features_of_another_cnn_are_one_clear_error(roots, tmp_path):
    trained, other = roots
    storage.write_manifest(other + "/features", "features", rows_in=0, rows_out=0, rows_rejected=0, inputs=[],
                           started=time.time(), parameters={"cnn": "keras:ResNet50"}, feature_dim=2048)
    with pytest.raises(Im2vecError, match=r"another CNN .*cnn None vs 'keras:ResNet50', feature_dim None vs 2048"):
        cross.run(fast_config(), trained, other)
    assert cli.main(["evaluate", "--root", trained, "--against", other]) == 2
    assert not (tmp_path / "trained" / "reports" / "cross-other" / "_manifest.json").exists()


# --- tiny real roots -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def openmoji_root(spark, tmp_path_factory):
    """400 OpenMoji emoji through clean, vocab (half the authors in the test split) and features."""
    from jobs import clean, features, vocab
    from pipeline import openmoji

    if not (openmoji.DEFAULT_SOURCE / openmoji.CSV_PATH).is_file() or not shutil.which("rsvg-convert"):
        pytest.skip("needs `make openmoji` and rsvg-convert (librsvg2-bin)")
    base = tmp_path_factory.mktemp("openmoji")
    openmoji.write_demo_data(str(base / "src"), limit=400)
    root = "file://" + str(base / "openmoji")
    config = make_config(image_uri=f"file://{base}/src/images/{{photo_id}}.png", zero_shot_fraction=0.0,
                         test_fraction=0.5, validation_fraction=0.1)
    clean.run(spark, config, root, inputs=[str(base / "src" / "metadata.tsv")])
    vocab.run(spark, config, root)
    features.run(spark, config, root)
    return root


@pytest.mark.slow
@needs_openclipart
def test_openclipart_model_on_openmoji_test_images(trained, openmoji_root, tmp_path):
    trained_root = "file://" + str(tmp_path / "trained")
    shutil.copytree(storage.filesystem(trained["root"])[1], tmp_path / "trained")
    manifest_ = cross.run(make_config(), trained_root, openmoji_root)
    report, sizes = manifest_["report"], manifest_["report"]["sizes"]
    test_split = pq.read_table(storage.filesystem(openmoji_root)[1] + "/tagged").to_pandas()
    test_split = test_split[test_split["split"] == "test"]
    assert sizes["test_split_images"] == len(test_split) > 0
    assert sizes["test_images"] + sizes["without_features"] == len(test_split)
    assert 0 < sizes["shared_tags"] <= min(sizes["trained_vocab_size"], sizes["other_vocab_size"])
    assert set(report["shared_tags"]) <= set(pq.read_table(storage.filesystem(openmoji_root)[1] + "/vocab")
                                              .column("tag").to_pylist())
    for name in ("im2vec", "popularity", "knn"):
        assert 0 < report[name]["tags"] <= sizes["shared_tags"]
        assert 0.0 <= report[name]["p_at_5"] <= 1.0 and 0.0 <= report[name]["f1"] <= 1.0
    assert report["popularity"]["n_plus"] <= 5
    # The same CNN on both corpora: a model trained on clip art ranks emoji above chance for shared words.
    assert report["im2vec"]["map"] > report["im2vec"]["map_random"]
    assert report["zero_shot"]["run"] and report["zero_shot"]["other_only"] > 0
    assert (tmp_path / "trained" / "reports" / "cross-openmoji" / "evaluation.md").read_text().startswith("## ")
