"""The vocab stage on a real local Spark session."""
import math

import pyarrow.parquet as pq
import pytest

from jobs import clean, vocab
from pipeline import Im2vecError, config as configuration, synth
from tests.yfcc_rows import line


def cfg(*overrides):
    return configuration.load(overrides=["master=local[2]", *overrides])


@pytest.fixture(scope="module")
def synth_root(spark, tmp_path_factory):
    """A cleaned synthetic corpus (20k rows), shared by the tests that only read it."""
    folder = tmp_path_factory.mktemp("synth")
    synth.write(str(folder / "meta.tsv"), rows=20_000, layout=25, seed=5)
    root = "file://" + str(folder / "run")
    clean.run(spark, cfg(), root, [str(folder / "meta.tsv")])
    return root


def read(root, name):
    return pq.read_table(root.removeprefix("file://") + "/" + name)


def test_vocab_filters_by_images_and_users_and_orders_ids(spark, tmp_path, root):
    lines = []
    pid = 1
    for user in range(6):                      # "beach": 6 users, 12 images
        for _ in range(2):
            lines.append(line(25, photo_id=pid, user_id=f"{user}@N03", tags=("beach", "sunset")))
            pid += 1
    for _ in range(30):                        # "spamtag": 30 images, all from one bulk uploader
        lines.append(line(25, photo_id=pid, user_id="bulk@N03", tags=("spamtag", "sunset")))
        pid += 1
    lines.append(line(25, photo_id=pid, user_id="9@N03", tags=("rare",)))   # 1 image, 1 user
    (tmp_path / "m.tsv").write_text("\n".join(lines) + "\n")
    clean.run(spark, cfg(), root, [str(tmp_path / "m.tsv")])
    manifest = vocab.run(spark, cfg("min_images=2", "min_users=2", "pos_power=-0.5"), root)

    table = read(root, "vocab").sort_by("tag_id").to_pylist()
    assert [(r["tag_id"], r["tag"], r["images"], r["users"]) for r in table] == [
        (0, "sunset", 42, 7), (1, "beach", 12, 6)]
    assert math.isclose(table[1]["neg_weight"], 12 ** 0.75)
    assert math.isclose(table[1]["pos_weight"], 12 ** -0.5)
    # Photos left without a vocabulary tag are counted, not lost.
    assert manifest["rows_in"] == 43 and manifest["rows_out"] == 42 and manifest["untagged"] == 1
    assert manifest["rows_in"] == manifest["rows_out"] + manifest["untagged"]


def test_max_size_keeps_the_most_frequent_with_ties_by_tag(spark, tmp_path, root):
    lines = [line(25, photo_id=i + 1, user_id=f"{i}@N04", tags=("b", "a", "c") if i < 3 else ("c",))
             for i in range(6)]
    (tmp_path / "m.tsv").write_text("\n".join(lines) + "\n")
    clean.run(spark, cfg(), root, [str(tmp_path / "m.tsv")])
    vocab.run(spark, cfg("min_images=1", "min_users=1", "max_size=2"), root)
    assert read(root, "vocab").sort_by("tag_id")["tag"].to_pylist() == ["c", "a"]


def test_split_is_by_user_and_roughly_the_configured_fractions(spark, synth_root):
    vocab.run(spark, cfg(), synth_root)
    tagged = read(synth_root, "tagged").to_pandas()
    splits_per_user = tagged.groupby("user_id")["split"].nunique()
    assert (splits_per_user == 1).all()
    users = tagged.drop_duplicates("user_id")["split"].value_counts(normalize=True)
    assert set(users.index) == {"train", "validation", "test"}
    assert abs(users["test"] - 0.1) < 0.05 and abs(users["validation"] - 0.1) < 0.05
    # tag_ids are valid vocabulary ids, sorted and unique per photo.
    size = read(synth_root, "vocab").num_rows
    for ids in tagged["tag_ids"].head(2000):
        assert list(ids) == sorted(set(ids)) and all(0 <= i < size for i in ids) and len(ids) > 0


def test_ids_and_split_are_stable_across_reruns_and_partitionings(spark, synth_root):
    vocab.run(spark, cfg("output_partitions=1"), synth_root)
    v1, t1 = read(synth_root, "vocab"), read(synth_root, "tagged").sort_by("photo_id")
    vocab.run(spark, cfg("output_partitions=5", "spark.sql.shuffle.partitions=7"), synth_root)
    v2, t2 = read(synth_root, "vocab"), read(synth_root, "tagged").sort_by("photo_id")
    assert v1.sort_by("tag_id").equals(v2.sort_by("tag_id"))
    assert t1.equals(t2)
    assert v1.num_rows > 100


def test_vocab_needs_a_complete_clean_stage(spark, root):
    with pytest.raises(Im2vecError, match="run `im2vec clean` first"):
        vocab.run(spark, cfg(), root)


def test_synthetic_counts_add_up_against_the_generator(spark, tmp_path):
    counts = synth.write(str(tmp_path / "m.tsv.bz2"), rows=8000, layout=23, seed=9)
    root = "file://" + str(tmp_path / "r")
    manifest = clean.run(spark, cfg(), root, [str(tmp_path / "m.tsv.bz2")])
    assert manifest["rows_in"] == counts["rows"]
    assert manifest["videos"] == counts["videos"]
    assert manifest["rows_out"] == counts["photos"]
    assert manifest["rejects_by_reason"] == {k: v for k, v in counts["malformed"].items() if v}


def test_synthetic_layouts_give_the_same_clean_rows(spark, tmp_path):
    tables = []
    for layout in (23, 25):
        synth.write(str(tmp_path / f"m{layout}.tsv"), rows=6000, layout=layout, seed=3)
        root = "file://" + str(tmp_path / f"r{layout}")
        clean.run(spark, cfg(), root, [str(tmp_path / f"m{layout}.tsv")])
        tables.append(read(root, "clean").sort_by("photo_id").drop(["hash"]))
    assert tables[0].num_rows > 5000
    assert tables[0].equals(tables[1])


def test_zero_shot_tags_are_held_out_of_the_vocabulary_and_of_tagged(spark, synth_root):
    vocab.run(spark, cfg("zero_shot_fraction=0"), synth_root)
    candidates = read(synth_root, "vocab").to_pandas().set_index("tag")
    assert read(synth_root, "zero_shot").num_rows == 0
    manifest = vocab.run(spark, cfg("zero_shot_fraction=0.2"), synth_root)
    kept = read(synth_root, "vocab").sort_by("tag_id").to_pandas()
    held = read(synth_root, "zero_shot").to_pandas()
    assert held.columns.tolist() == ["tag", "images", "users"]
    # Every candidate is either in the vocabulary or held out, never both, with its own counts.
    assert set(kept["tag"]).isdisjoint(held["tag"])
    assert sorted([*kept["tag"], *held["tag"]]) == sorted(candidates.index)
    assert (held.set_index("tag")[["images", "users"]] == candidates.loc[held["tag"], ["images", "users"]]).all().all()
    assert manifest["zero_shot_tags"] == len(held) and manifest["vocab_size"] == len(kept)
    assert abs(len(held) / len(candidates) - 0.2) < 0.05
    # Chosen by hash, not by rank: held-out tags come from the frequent and the rare half alike.
    rank = candidates["images"].rank(ascending=False, method="first")
    held_ranks = rank.loc[held["tag"]]
    assert (held_ranks <= len(candidates) / 2).mean() > 0.3 and (held_ranks > len(candidates) / 2).mean() > 0.3
    # Ids run 0..V-1 over the kept tags; no photo's tag_ids name a held-out tag.
    assert kept["tag_id"].tolist() == list(range(len(kept)))
    tagged = read(synth_root, "tagged").to_pandas()
    seen = {kept["tag"][i] for ids in tagged["tag_ids"] for i in ids}
    assert seen.isdisjoint(held["tag"]) and len(seen) > 0.9 * len(kept)
    assert manifest["rows_in"] == manifest["rows_out"] + manifest["untagged"]
    # The same tags on a re-run.
    vocab.run(spark, cfg("zero_shot_fraction=0.2", "output_partitions=3"), synth_root)
    assert sorted(read(synth_root, "zero_shot")["tag"].to_pylist()) == sorted(held["tag"])
    with pytest.raises(Im2vecError, match="zero_shot_fraction"):
        vocab.run(spark, cfg("zero_shot_fraction=1"), synth_root)
