"""The evaluate stage.

Fast: a made-up run whose answers are known (features are noisy linear images of concept vectors, the
projection inverts the map, held-out concepts have word vectors): every method must find them.
Slow: the shared small real run (conftest.py: 1,500 openclipart images through the real stages, 10% of
the tags held out, trained jointly), evaluated by `im2vec evaluate`.
"""
import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from model import evaluate
from pipeline.datasets import zero_shot
from pipeline import cli, storage
from tests.integration.conftest import make_config, needs_openclipart

# --- a made-up run with known answers ----------------------------------------------------------

VOCAB = ["thing", "cat", "dog", "car", "tree", "boat", "sun", "moon", "fish", "house", "road"]   # "thing": every image
HELD_OUT = ["bird", "frog", "apple", "chair", "cloud", "horse", "lamp"]
NO_VECTOR = "zzqxv"       # held out, but no word vector


def write_parquet(folder: Path, table: pa.Table) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-00000.parquet")


def manifest(folder: Path, stage: str, **extra) -> None:
    storage.write_manifest("file://" + str(folder), stage, rows_in=0, rows_out=0, rows_rejected=0, inputs=[],
                           started=time.time(), **{"parameters": {}, **extra})


def npy_bytes(vector: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, vector)
    return buffer.getvalue()


def make_run(folder: Path, zero_shot_fraction: float = 0.2) -> str:
    """A run root: 700 images of one concept each (1 of 10 vocabulary, or of 8 held-out ones), D=24, d=8."""
    import keras
    from PIL import Image

    from pipeline.wordvec import keyed_vectors

    rng = np.random.default_rng(5)
    concepts = VOCAB[1:] + HELD_OUT + [NO_VECTOR]
    vectors = rng.normal(size=(len(concepts) + 1, 8)).astype(np.float32)     # + "thing"
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vector_of = dict(zip(["thing", *concepts], vectors))
    mixing = rng.normal(size=(24, 8)).astype(np.float32)
    photo_ids = np.arange(1, 701, dtype=np.int64)
    weights = np.linspace(3, 1, len(concepts))
    concept = rng.choice(len(concepts), size=len(photo_ids), p=weights / weights.sum())
    features = (vectors[1:][concept] @ mixing.T + 0.05 * rng.normal(size=(len(photo_ids), 24))).astype(np.float16)
    clean_tags = [["thing", concepts[c]] for c in concept]
    tag_ids = [[0] + ([VOCAB.index(concepts[c])] if concepts[c] in VOCAB else []) for c in concept]
    split = np.where(photo_ids % 3 == 0, "test", "train")
    images = folder / "images"
    images.mkdir(parents=True)
    for photo_id in photo_ids[split == "test"][:20]:
        Image.new("RGB", (16, 16), (int(photo_id) % 255, 90, 160)).save(images / f"{photo_id}.png")

    write_parquet(folder / "clean", pa.table({"photo_id": photo_ids, "tags": clean_tags}))
    counts = np.bincount([t for ids in tag_ids for t in ids], minlength=len(VOCAB))
    write_parquet(folder / "vocab", pa.table({
        "tag_id": pa.array(range(len(VOCAB)), pa.int32()), "tag": VOCAB, "images": counts, "users": counts,
        "neg_weight": counts ** 0.75, "pos_weight": counts ** -0.5}))
    manifest(folder / "vocab", "vocab", parameters={"zero_shot_fraction": zero_shot_fraction})
    if zero_shot_fraction:
        held = HELD_OUT + [NO_VECTOR]
        write_parquet(folder / "zero_shot", pa.table({"tag": held, "images": [5] * len(held),
                                                      "users": [2] * len(held)}))
    write_parquet(folder / "tagged", pa.table({
        "photo_id": photo_ids, "user_id": [str(p) for p in photo_ids], "split": split,
        "tag_ids": pa.array(tag_ids, pa.list_(pa.int32()))}))
    write_parquet(folder / "features", pa.table({"photo_id": photo_ids, "feature": [npy_bytes(f) for f in features]}))
    manifest(folder / "features", "features", parameters={"image_uri": f"file://{images}/{{photo_id}}.png"})
    words = ["thing", *VOCAB[1:], *HELD_OUT, "unrelated"]
    (folder / "wordvec").mkdir()
    keyed_vectors(words, np.stack([vector_of.get(w, -vectors[0]) for w in words])).save(
        str(folder / "wordvec" / "words.kv"))
    # g inverts the mixing: g(f) ~ the concept's vector; the tag table is the concepts' vectors.
    projection = keras.Sequential([keras.Input((24,)), keras.layers.Dense(8, use_bias=False)])
    projection.layers[0].set_weights([np.linalg.pinv(mixing).T])
    (folder / "model").mkdir()
    projection.save(folder / "model" / "projection.keras")
    np.save(folder / "model" / "tag_vectors.npy", np.stack([vector_of[t] for t in VOCAB]))
    np.save(folder / "model" / "tag_bias.npy", np.array([5.0] + [0.0] * (len(VOCAB) - 1), np.float32))  # "thing" first
    return "file://" + str(folder)


def fast_config(**overrides):
    return make_config(**{"evaluation_images": 150, "knn_k": 5, **overrides})


def test_every_method_finds_known_answers(tmp_path):
    root = make_run(tmp_path / "run")
    manifest_ = evaluate.run(fast_config(), root)
    report = manifest_["report"]
    assert report["sizes"]["test_images"] == 150 and manifest_["left_out"] == 233 - 150
    # One vocabulary concept per image (plus "thing" everywhere): top-5 finds it, so recall is ~1.
    for name in ("im2vec", "knn"):
        assert report[name]["recall"] > 0.95 and report[name]["r_at_5"] > 0.95, report[name]
        assert report[name]["n_plus"] == report[name]["tags"] == len(VOCAB)
        assert report[name]["f1"] > 2 * report["popularity"]["f1"]
        assert report[name]["ms_per_image"] > 0
    assert report["knn"]["map"] > 0.95
    # im2vec ranks images for a tag by p(tag | image). Each image's probability is shared among the
    # tags, and "thing" (offset 5, on every image) takes a share that varies with g(f)·v_thing: an
    # image of a held-out concept can leave a tag more of it than that tag's own images do (here
    # "tree" and "sun", AP 0.48 and 0.81). By cosine, as search ranks, g finds every tag's images first.
    assert report["im2vec"]["map"] > 0.9 and report["im2vec"]["map_by_cosine"] > 0.95
    assert "im2vec with the images ranked by cosine(g(f), v_t)" in (tmp_path / "run" / "reports" / "evaluation.md"
                                                                    ).read_text()
    assert report["popularity"]["n_plus"] <= 5 and report["popularity"]["map"] is None
    zero = report["zero_shot"]
    assert zero["run"] and zero["held_out"] == len(HELD_OUT) + 1 and zero["with_vector"] == len(HELD_OUT)
    assert zero["relevant_in_test"] == zero["tags"] == len(HELD_OUT)
    # Never trained on, found through word vectors alone: an image of a held-out concept gets it as its
    # best held-out tag (P@1 per image), and each held-out tag finds its images first (recall@1, mAP).
    # (Per-tag precision is about the held-out images' share: every test image is given a held-out tag.)
    assert zero["curve"]["p_at_k"][0] > 0.9 and zero["curve"]["recall"][0] > 0.9 and zero["map"] > 0.95
    folder = tmp_path / "run" / "reports"
    assert json.loads((folder / "evaluation.json").read_text())["zero_shot"]["held_out"] == len(HELD_OUT) + 1
    assert (folder / "evaluation_examples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert storage.read_manifest("file://" + str(folder))["stage"] == "evaluate"


def test_without_a_hold_out_zero_shot_is_not_run(tmp_path, capsys):
    root = make_run(tmp_path / "run", zero_shot_fraction=0.0)
    assert cli.main(["evaluate", "--root", root, "--set", "evaluation_images=30", "--set", "knn_k=3"]) == 0
    printed = capsys.readouterr().out
    assert "| zero_shot | not run: zero_shot_fraction is 0" in printed and "| im2vec |" in printed
    report = json.loads((tmp_path / "run" / "reports" / "evaluation.json").read_text())
    assert report["zero_shot"]["run"] is False and report["sizes"]["test_images"] == 30


# --- a small real run --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    """A copy of the shared trained run, evaluated by the CLI."""
    folder = tmp_path_factory.mktemp("evaluate") / "root"
    shutil.copytree(storage.filesystem(trained["root"])[1], folder)
    root = "file://" + str(folder)
    assert cli.main(["evaluate", "--root", root, "--set", "seed=24"]) == 0
    return root


def report_of(root: str) -> dict:
    return json.loads(storage.read_text(storage.join(root, "reports", "evaluation.json")))


@pytest.mark.slow
@needs_openclipart
def test_the_report_has_four_methods_with_metrics_in_range(evaluated):
    root = evaluated
    report = report_of(root)
    for name in ("im2vec", "popularity", "knn", "zero_shot"):
        method = report[name]
        for key in ("precision", "recall", "f1", "p_at_5", "r_at_5"):
            assert 0.0 <= method[key] <= 1.0, (name, key, method[key])
        assert 0 <= method["n_plus"] <= method["tags"]
        assert len(method["curve"]["k"]) == 10
    for name in ("im2vec", "knn", "zero_shot"):
        assert 0.0 < report[name]["map"] <= 1.0
    im2vec = report["im2vec"]
    assert 0.0 < im2vec["map_by_cosine"] <= 1.0 and im2vec["map"] != im2vec["map_by_cosine"]   # two rankings
    assert report["popularity"]["map"] is None
    assert report["im2vec"]["ms_per_image"] > 0 and report["knn"]["ms_per_image"] > 0
    assert report["sizes"]["test_images"] > 100
    folder = Path(storage.filesystem(root)[1]) / "reports"
    for name in ("evaluation_pr.png", "evaluation_examples.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (folder / "evaluation.md").read_text()
    assert "| im2vec |" in summary and "| zero_shot |" in summary
    assert f"{report['im2vec']['map']:.3f} |" in summary            # the table's mAP: images by p(tag | image)
    assert f"as `im2vec search` ranks them: {report['im2vec']['map_by_cosine']:.3f})" in summary
    manifest = storage.read_manifest(storage.join(root, "reports"))
    assert manifest["stage"] == "evaluate" and manifest["rows_out"] == report["sizes"]["test_images"]
    assert manifest["rows_in"] == manifest["rows_out"] + manifest["without_features"] + manifest["left_out"]


@pytest.mark.slow
@needs_openclipart
def test_knn_and_im2vec_beat_popularity_on_per_tag_f1(evaluated):
    report = report_of(evaluated)
    popularity = report["popularity"]
    assert popularity["n_plus"] <= 5          # it predicts the same 5 tags for every image
    assert report["knn"]["f1"] > popularity["f1"]
    assert report["im2vec"]["f1"] > popularity["f1"]
    # word queries rank relevant images above chance
    assert report["im2vec"]["map"] > 1.5 * report["im2vec"]["map_random"]


@pytest.mark.slow
@needs_openclipart
def test_zero_shot_reports_the_held_out_tags(evaluated):
    root = evaluated
    zero = report_of(root)["zero_shot"]
    held = storage.read_manifest(storage.join(root, "vocab"))["zero_shot_tags"]
    assert zero["run"] and zero["held_out"] == held > 0
    assert 0 < zero["with_vector"] <= held and 0 < zero["relevant_in_test"] <= zero["with_vector"]
    assert zero["tags"] == zero["relevant_in_test"] and zero["images"] > 0
    assert set(zero["examples"]) <= set(zero_shot.held_out_tags(root))


@pytest.mark.slow
@needs_openclipart
def test_without_held_out_tags_the_report_says_zero_shot_was_not_run(evaluated, tmp_path):
    root = evaluated
    copy = tmp_path / "root"
    shutil.copytree(storage.filesystem(root)[1], copy)
    storage.delete("file://" + str(copy / "zero_shot"))
    manifest = evaluate.run(make_config(evaluation_images=40, knn_k=5), "file://" + str(copy))
    zero = manifest["report"]["zero_shot"]
    assert zero["run"] is False and "im2vec vocab" in zero["reason"]
    assert manifest["rows_out"] == 40
    assert "| zero_shot | not run" in manifest["markdown"]
