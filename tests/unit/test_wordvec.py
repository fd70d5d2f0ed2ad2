"""The wordvec stage: pretrained lookup rules, streamed word2vec, the map between spaces, files, CLI."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import types
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gensim.models import KeyedVectors

from pipeline import Im2vecError, config as configuration, storage, wordvec

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Four topics of real English words: images of one topic carry tags of that topic only.
TOPICS = {
    "animals": "dog cat puppy kitten horse cow pig sheep goat rabbit mouse bird duck chicken owl parrot".split(),
    "vehicles": "car truck tractor bus train bicycle motorcycle van taxi trailer engine wheel tire highway garage jeep".split(),
    "food": "bread cheese pizza pasta salad soup cake cookie chocolate apple banana orange coffee tea butter sandwich".split(),
    "weather": "rain snow storm cloud thunder lightning wind fog hail sunshine tornado hurricane drizzle frost ice breeze".split(),
}
# Tags no pretrained file knows, each used with one topic only: they must land near it.
INVENTED = {"animals": "zqpetfur", "vehicles": "zqmotorbolt", "food": "zqyumbite", "weather": "zqgloomsky"}


@pytest.fixture(scope="module")
def glove() -> KeyedVectors:
    return wordvec.load_pretrained("glove-6b-50d")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def topic_images(count: int, seed: int, extra: dict | None = None) -> list[tuple[str, list[str]]]:
    """(split, tags) per image: 3-6 tags of one topic, the topic's invented tag on a third of them."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        topic = list(TOPICS)[i % len(TOPICS)]
        tags = list(rng.choice(TOPICS[topic], size=rng.integers(3, 7), replace=False))
        if rng.random() < 1 / 3:
            tags.append(INVENTED[topic])
        images.append(("train", tags))
    return images + list((extra or {}).items())


def write_root(root: str, images: list[tuple[str, list[str]]], files: int = 2) -> list[str]:
    """A run root with vocab/ and tagged/ as the vocab stage writes them; returns the tags by tag_id."""
    counts = collections.Counter(tag for _, tags in images for tag in set(tags))
    tags = sorted(counts, key=lambda tag: (-counts[tag], tag))
    tag_id = {tag: i for i, tag in enumerate(tags)}
    vocab = pa.table({
        "tag_id": pa.array(range(len(tags)), pa.int32()), "tag": tags,
        "images": pa.array([counts[t] for t in tags], pa.int64()), "users": pa.array([counts[t] for t in tags], pa.int64()),
        "neg_weight": [counts[t] ** 0.75 for t in tags], "pos_weight": [counts[t] ** -0.5 for t in tags]})
    os.makedirs(os.path.join(root, "vocab"))
    pq.write_table(vocab, os.path.join(root, "vocab", "part-00000.parquet"))
    tagged = pa.table({
        "photo_id": pa.array(range(len(images)), pa.int64()),
        "user_id": [f"{i % 37}@N00" for i in range(len(images))],
        "split": [split for split, _ in images],
        "tag_ids": pa.array([sorted(tag_id[t] for t in set(tags)) for _, tags in images], pa.list_(pa.int32()))})
    os.makedirs(os.path.join(root, "tagged"))
    step = -(-len(images) // files)
    for part, start in enumerate(range(0, len(images), step)):
        pq.write_table(tagged.slice(start, step), os.path.join(root, "tagged", f"part-{part:05d}.parquet"),
                       row_group_size=100)
    for stage in ("vocab", "tagged"):
        storage.write_manifest(storage.to_uri(os.path.join(root, stage)), stage, rows_in=0, rows_out=0,
                               rows_rejected=0, parameters={}, inputs=[], started=0.0)
    return tags


def config(**overrides) -> dict:
    conf = configuration.defaults()
    conf.update(wordvec_workers=1, wordvec_sample=0, wordvec_epochs=10, seed=7)
    conf.update(overrides)
    return conf


# --- pretrained lookup -------------------------------------------------------------------

def test_glove_has_common_tags_and_multiword_rule(glove):
    tags = ["dog", "beach", "sunset", "new york", "puppy", "tractor", "new qzxqv", "qzxqv"]
    vectors, sources = wordvec.lookup_pretrained(tags, glove)
    found = dict(zip(tags, sources))
    assert [found[t] for t in ("dog", "beach", "sunset", "puppy", "tractor")] == ["pretrained"] * 5
    assert found["new york"] == "multiword"
    np.testing.assert_allclose(vectors[3], (glove["new"] + glove["york"]) / 2, rtol=1e-6)
    # one unknown word and the phrase has no vector; unknown tags have none
    assert found["new qzxqv"] == found["qzxqv"] == ""
    assert not vectors[6].any()
    dog, puppy, tractor = vectors[0], vectors[4], vectors[5]
    assert cosine(dog, puppy) > cosine(dog, tractor) + 0.2


def test_phrase_keys_and_case_are_found():
    words = wordvec.keyed_vectors(["New_York", "new", "york", "Paris"], np.eye(4, dtype=np.float32))
    vectors, sources = wordvec.lookup_pretrained(["new york", "paris", "york"], words)
    assert sources.tolist() == ["pretrained", "pretrained", "pretrained"]
    np.testing.assert_array_equal(vectors, np.eye(4, dtype=np.float32)[[0, 3, 2]])


# --- the streamed corpus -----------------------------------------------------------------

def test_word2vec_trains_from_a_parquet_stream(tmp_path):
    images = topic_images(600, seed=1, extra={})
    images += [("test", ["dog", "car"])] * 5 + [("train", [])] * 3     # held out and untagged images
    tags = write_root(str(tmp_path), images, files=3)
    corpus = wordvec.TagLists(storage.to_uri(str(tmp_path / "tagged")), tags, batch_rows=64)
    assert not isinstance(corpus, Sequence)
    assert isinstance(iter(corpus), types.GeneratorType)

    vectors, stats = wordvec.train_word2vec(corpus, vector_size=16, epochs=3, negative=5, min_count=1,
                                            sample=0, workers=1, seed=3)
    # one counting pass and one per epoch, each re-reading every batch of every file
    assert corpus.passes == 1 + 3
    batches_per_pass = corpus.batches_read // corpus.passes
    assert corpus.batches_read == corpus.passes * batches_per_pass and batches_per_pass >= 3 * 2
    assert stats["sentences"] == 600                      # train images with tags only
    assert stats["words"] == sum(len(t) for s, t in images if s == "train")
    assert stats["window"] == max(len(t) for _, t in images) - 1
    assert set(vectors.index_to_key) == set(tags)         # dog, car appear in train too


def test_learned_vectors_put_cooccurring_tags_closer(tmp_path):
    tags = write_root(str(tmp_path), topic_images(1200, seed=2))
    corpus = wordvec.TagLists(storage.to_uri(str(tmp_path / "tagged")), tags)
    vectors, _ = wordvec.train_word2vec(corpus, vector_size=24, epochs=10, negative=5, min_count=1,
                                        sample=0, workers=1, seed=3)
    within, across = [], []
    for topic, words in TOPICS.items():
        for other, other_words in TOPICS.items():
            sims = [cosine(vectors[a], vectors[b]) for a in words[:6] for b in other_words[:6] if a != b]
            (within if topic == other else across).extend(sims)
    assert np.mean(within) > np.mean(across) + 0.3
    assert cosine(vectors["dog"], vectors["puppy"]) > cosine(vectors["dog"], vectors["tractor"])
    assert cosine(vectors["zqpetfur"], vectors["kitten"]) > cosine(vectors["zqpetfur"], vectors["snow"])


# --- combining sources -------------------------------------------------------------------

def test_both_maps_learned_tags_into_the_pretrained_space(tmp_path, glove):
    images = topic_images(2000, seed=4, extra={})
    images += [("test", ["zqonlytested", "dog"]), ("train", ["new york", "city"]), ("train", ["new york", "taxi"])]
    tags = write_root(str(tmp_path), images)
    corpus = wordvec.TagLists(storage.to_uri(str(tmp_path / "tagged")), tags)
    learned, _ = wordvec.train_word2vec(corpus, vector_size=glove.vector_size, epochs=10, negative=5,
                                        min_count=1, sample=0, workers=1, seed=3)
    vectors, sources, stats = wordvec.tag_vectors(tags, words=glove, learned=learned, seed=7)

    source = dict(zip(tags, sources))
    assert {source[t] for t in INVENTED.values()} == {"learned"}
    assert source["new york"] == "multiword" and source["dog"] == "pretrained"
    assert source["zqonlytested"] == "random"               # never in a train image
    assert sum(stats["sources"].values()) == len(tags) == len(vectors)
    assert stats["sources"]["learned"] == len(INVENTED) and stats["sources"]["random"] == 1
    assert stats["map_anchors"] == len(tags) - len(INVENTED) - 1 and stats["map_cosine"] > 0.3
    assert np.isfinite(vectors).all() and (np.linalg.norm(vectors, axis=1) > 0).all()
    np.testing.assert_array_equal(vectors[tags.index("dog")], glove["dog"])
    # a learned-only tag lands among the pretrained vectors of its topic
    row = {t: vectors[i] for i, t in enumerate(tags)}
    for topic, invented in INVENTED.items():
        own = np.mean([cosine(row[invented], glove[w]) for w in TOPICS[topic]])
        others = np.mean([cosine(row[invented], glove[w]) for t, ws in TOPICS.items() if t != topic for w in ws])
        assert own > others + 0.2, (invented, own, others)


def test_random_vectors_are_deterministic_per_seed_and_tag(glove):
    vectors, sources, stats = wordvec.tag_vectors(["dog", "zqzq", "cat", "zqxx"], words=glove, seed=5)
    assert sources.tolist() == ["pretrained", "random", "pretrained", "random"]
    assert stats["sources"] == {"pretrained": 2, "multiword": 0, "learned": 0, "random": 2}
    again, _, _ = wordvec.tag_vectors(["zqxx", "cat", "dog", "zqzq"], words=glove, seed=5)
    np.testing.assert_allclose(again[0], vectors[3])                # independent of the tags' order
    other_seed, _, _ = wordvec.tag_vectors(["dog", "zqzq"], words=glove, seed=6)
    assert not np.allclose(other_seed[1], vectors[1])
    median = np.median(np.linalg.norm(vectors[[0, 2]], axis=1))
    np.testing.assert_allclose(np.linalg.norm(vectors[[1, 3]], axis=1), median, rtol=1e-5)


# --- file formats ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,name", [("word2vec_text", "v.txt"), ("word2vec_binary", "v.bin"),
                                      ("glove", "glove.txt"), ("word2vec_text", "v.txt.gz")])
def test_pretrained_files_load(tmp_path, glove, fmt, name):
    keys = ["dog", "puppy", "tractor", "new", "york", "café"]
    small = wordvec.keyed_vectors(keys, glove[keys[:5] + ["cafe"]])
    path = str(tmp_path / name)
    if fmt == "glove":
        with open(path, "w", encoding="utf-8") as out:
            for key in keys:
                out.write(key + " " + " ".join(repr(float(x)) for x in small[key]) + "\n")
    else:
        small.save_word2vec_format(path, binary=fmt == "word2vec_binary")
    assert wordvec.detect_format(path) == fmt
    for given in ("auto", fmt):
        loaded = wordvec.load_pretrained(path, given)
        assert loaded.index_to_key == keys
        np.testing.assert_allclose(loaded.vectors, small.vectors, rtol=1e-6)


def test_unreadable_pretrained_file_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("these are not vectors\n")
    with pytest.raises(wordvec.WordvecError, match="cannot tell the format"):
        wordvec.load_pretrained(str(path))
    with pytest.raises(wordvec.WordvecError, match="no such file"):
        wordvec.load_pretrained(str(tmp_path / "missing.txt"))


# --- the stage ---------------------------------------------------------------------------

def read_stage(root: str) -> tuple[dict, pa.Table, KeyedVectors]:
    out = os.path.join(root, "wordvec")
    manifest = json.load(open(os.path.join(out, "_manifest.json")))
    files = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f != "_manifest.json"]
    assert all(os.stat(f).st_mtime_ns <= os.stat(os.path.join(out, "_manifest.json")).st_mtime_ns for f in files)
    assert not [n for n in os.listdir(root) if n.startswith("_staging")]
    return manifest, pq.read_table(os.path.join(out, "vectors")), KeyedVectors.load(os.path.join(out, "tags.kv"))


def test_run_writes_tables_and_manifest_last(tmp_path, glove):
    from jobs import wordvec as job

    tags = write_root(str(tmp_path), topic_images(400, seed=5) + [("validation", ["zqvalidonly"])])
    for source in ("both", "learned", "pretrained"):    # a re-run replaces the output
        manifest = job.run(None, config(wordvec_source=source, vector_size=8), storage.to_uri(str(tmp_path)))
        on_disk, table, tag_kv = read_stage(str(tmp_path))
        assert on_disk == manifest
        dim = 8 if source == "learned" else 50
        assert manifest["rows_in"] == manifest["rows_out"] == len(tags) and manifest["rows_rejected"] == 0
        assert sum(manifest["sources"].values()) == len(tags) and manifest["dim"] == dim
        assert table.schema == wordvec.VECTORS_SCHEMA
        assert table.column("tag_id").to_pylist() == list(range(len(tags))) and table.column("tag").to_pylist() == tags
        assert set(len(v) for v in table.column("vector").to_pylist()) == {dim}
        counts = collections.Counter(table.column("source").to_pylist())
        assert {k: v for k, v in manifest["sources"].items() if v} == dict(counts)
        assert tag_kv.index_to_key == tags
        np.testing.assert_array_equal(tag_kv.vectors, np.array(table.column("vector").to_pylist(), np.float32))
        has_words = os.path.exists(tmp_path / "wordvec" / "words.kv")
        assert has_words == (source != "learned")
    assert manifest["sources"]["random"] == 1 + len(INVENTED)       # pretrained only: invented tags are random
    assert len(KeyedVectors.load(str(tmp_path / "wordvec" / "words.kv"), mmap="r")) == len(glove)


def test_run_needs_a_complete_vocab(tmp_path):
    from jobs import wordvec as job

    with pytest.raises(Im2vecError, match="run `im2vec vocab` first"):
        job.run(None, config(), storage.to_uri(str(tmp_path)))


def test_cli_end_to_end(tmp_path, glove):
    root = tmp_path / "run"
    tags = write_root(str(root), topic_images(200, seed=6))
    words = [w for ws in TOPICS.values() for w in ws]
    wordvec.keyed_vectors(words, glove[words]).save_word2vec_format(str(tmp_path / "small.bin"), binary=True)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "wordvec", "--root", str(root), "--set", "master=local[1]",
         "--set", f"pretrained_vectors={tmp_path / 'small.bin'}", "--set", "wordvec_epochs=2"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "EPOCH 1:" in result.stderr                               # gensim progress reaches the user
    manifest, table, _ = read_stage(str(root))
    assert manifest["sources"] == {"pretrained": len(words), "multiword": 0, "learned": len(INVENTED), "random": 0}
    assert table.num_rows == len(tags) and manifest["parameters"]["wordvec_epochs"] == 2
