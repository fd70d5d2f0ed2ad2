"""pipeline.query on a small run root made of real files: a Keras projection, a tag table, words.kv, features/."""
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import Im2vecError, query, storage
from pipeline.datasets import features as features_data

D, d = 12, 4
TAGS = ["cat", "dog", "new york", "car"]
WORDS = ["cat", "kitten", "dog", "puppy", "new_york", "red", ",", "1998"]


def encode_features(features: np.ndarray) -> pa.Array:
    """NdarrayCodec bytes, one np.save per row, as Petastorm writes them (independent of jobs.features)."""
    rows = []
    for row in np.asarray(features, np.float16):
        buffer = io.BytesIO()
        np.save(buffer, row)
        rows.append(buffer.getvalue())
    return pa.array(rows, pa.binary())


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    """A root with vocab/, model/ (linear g), wordvec/words.kv and features/ of 30 images."""
    import keras
    from gensim.models import KeyedVectors

    base = tmp_path_factory.mktemp("query")
    root = "file://" + str(base)
    rng = np.random.default_rng(3)
    vocab = pa.table({"tag_id": pa.array(range(len(TAGS)), pa.int32()), "tag": TAGS})
    (base / "vocab").mkdir()
    pq.write_table(vocab, base / "vocab" / "part-0.parquet")
    storage.write_text(storage.join(root, "vocab", "_manifest.json"), "{}")
    word_vectors = rng.normal(size=(len(WORDS), d)).astype(np.float32)
    words = KeyedVectors(d)
    words.add_vectors(WORDS, word_vectors)
    (base / "wordvec").mkdir()
    words.save(str(base / "wordvec" / "words.kv"))
    # The tag table: trained rows differ from the pretrained vectors of the same words.
    tag_vectors = rng.normal(size=(len(TAGS), d)).astype(np.float32)
    (base / "model").mkdir()
    np.save(base / "model" / "tag_vectors.npy", tag_vectors)
    np.save(base / "model" / "tag_bias.npy", np.array([0.5, -0.5, 0.0, 0.0], np.float32))
    projection = keras.Sequential([keras.Input((D,)), keras.layers.Dense(d)])
    projection.save(str(base / "model" / "projection.keras"))
    photo_id = np.arange(100, 130, dtype=np.int64)
    features = rng.normal(size=(30, D)).astype(np.float16)
    (base / "features").mkdir()
    pq.write_table(pa.table({"photo_id": photo_id, "feature": encode_features(features)}),
                   base / "features" / "part-0.parquet")
    storage.write_text(storage.join(root, "features", "_manifest.json"), "{}")
    return {"root": root, "photo_id": photo_id, "features": features.astype(np.float32),
            "tag_vectors": tag_vectors, "word_vectors": dict(zip(WORDS, word_vectors))}


@pytest.fixture(scope="module")
def model(run_root):
    return query.load_model(run_root["root"])


def test_read_features_decodes_rows_in_the_order_asked(run_root):
    ids, features = features_data.read_rows(run_root["root"])
    assert np.array_equal(ids, run_root["photo_id"]) and np.array_equal(features, run_root["features"])
    ids, features = features_data.read_rows(run_root["root"], [117, 999, 102, 117])
    assert ids.tolist() == [117, 102]
    assert np.array_equal(features, run_root["features"][[17, 2]])


def test_embed_is_the_projection(run_root, model):
    embeddings = query.embed(model, run_root["features"])
    expected = np.asarray(model.projection(run_root["features"]))
    assert embeddings.shape == (30, d) and np.allclose(embeddings, expected, atol=1e-6)


def test_rank_tags_uses_the_trainers_scores(run_root, model):
    from model import metrics

    embeddings = query.embed(model, run_root["features"])
    ranked = query.rank_tags(model, embeddings, k=3)
    expected = metrics.top_k_tags(embeddings, model.tag_vectors, 3, model.tag_bias)
    for row, ids, vector in zip(ranked, expected, embeddings):
        assert [tag for tag, _ in row] == [TAGS[i] for i in ids]
        assert np.allclose([s for _, s in row], model.tag_vectors[ids] @ vector + model.tag_bias[ids], atol=1e-5)


def test_any_word_ranks_pretrained_words_outside_the_vocabulary(run_root, model):
    # An image whose g(f) is the word "puppy" itself (no CNN features given: g(f) stands in for the
    # ConSE vector): puppy, not a tag, must be among its tags.
    puppy = run_root["word_vectors"]["puppy"] * 10
    ranked = query.rank_tags(model, puppy[None, :], k=len(TAGS) + 3, any_word=True)[0]
    names = [tag for tag, _ in ranked]
    assert "puppy" in names
    assert "," not in names and "1998" not in names      # not words
    assert "new_york" not in names and names.count("cat") == 1   # vocabulary tags are scored once, as tags
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    # scores are the mixture's probabilities: words share ANY_WORD_SHARE, tags the rest
    words = model.word_candidates()
    vectors = query.normalize_rows(model.words.vectors[words])
    share = query.softmax((query.normalize_rows(puppy[None, :]) @ vectors.T) / query.WORD_TEMPERATURE)[0]
    puppy_row = list(words).index(model.words.key_to_index["puppy"])
    assert dict(ranked)["puppy"] == pytest.approx(query.ANY_WORD_SHARE * share[puppy_row], rel=1e-5)
    assert sum(s for _, s in ranked) <= 1 + 1e-6


def test_any_word_scores_do_not_grow_with_a_words_vector_length(run_root, model):
    # "shoh"'s GloVe vector is twice the typical norm: scored by dot product it beat every tag on any
    # image. Words are now scored by cosine: a longer vector changes nothing.
    import copy
    import dataclasses

    image = (run_root["word_vectors"]["red"] + run_root["tag_vectors"][0])[None, :] * 3
    before = query.rank_tags(model, image, k=len(TAGS) + 3, any_word=True)[0]
    words = copy.deepcopy(model.words)
    words.vectors = np.array(words.vectors)
    words.vectors[words.key_to_index["red"]] *= 2
    longer = dataclasses.replace(model, words=words, _word_candidates=None)
    after = query.rank_tags(longer, image, k=len(TAGS) + 3, any_word=True)[0]
    assert [t for t, _ in after] == [t for t, _ in before]
    assert np.allclose([s for _, s in after], [s for _, s in before], rtol=1e-5)


def test_conse_vectors_need_features_of_a_cnn_with_a_classifier(model):
    import dataclasses

    assert query.conse_vectors(model, np.zeros((2, 7), np.float32)) is None     # not the CNN's feature size
    other = dataclasses.replace(model, cnn="keras:ResNet50", _classes=None)     # no classifier of its own
    assert query.conse_vectors(other, np.zeros((2, 1280), np.float32)) is None


def test_conse_vectors_average_the_likeliest_class_names(model):
    weight, bias, class_vectors = model.classes()
    # a feature that makes class 0 by far the likeliest: its ConSE vector is class 0's name vector
    feature = (weight[0] / np.linalg.norm(weight[0]) ** 2 * 100)[None, :]
    vector = query.conse_vectors(model, feature)
    assert vector.shape == (1, model.tag_vectors.shape[1])
    if np.linalg.norm(class_vectors[0]) > 0:
        np.testing.assert_allclose(vector[0], query.normalize_rows(class_vectors[:1])[0], atol=1e-3)


def test_word_vector_prefers_the_tag_table_then_words_then_the_mean(run_root, model):
    assert np.array_equal(query.word_vector(model, " CAT "), run_root["tag_vectors"][0])
    assert np.array_equal(query.word_vector(model, "kitten"), run_root["word_vectors"]["kitten"])
    assert np.array_equal(query.word_vector(model, "New  York"), run_root["tag_vectors"][2])
    assert np.allclose(query.word_vector(model, "red kitten"),
                       (run_root["word_vectors"]["red"] + run_root["word_vectors"]["kitten"]) / 2)
    assert np.allclose(query.word_vector(model, "red cat"), (run_root["word_vectors"]["red"] + run_root["tag_vectors"][0]) / 2)
    with pytest.raises(Im2vecError, match="'zzyzx'.*'qqq'|'qqq'.*'zzyzx'") as err:
        query.word_vector(model, "cat zzyzx qqq")
    assert "'cat'" not in str(err.value)
    with pytest.raises(Im2vecError, match="empty"):
        query.word_vector(model, "   ")


def test_search_returns_the_best_cosines_first(run_root, model):
    embeddings = query.normalize_rows(query.embed(model, run_root["features"]))
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    index = query.Index(run_root["photo_id"], embeddings)
    results = query.search(model, index, "kitten", k=5)
    q = run_root["word_vectors"]["kitten"] / np.linalg.norm(run_root["word_vectors"]["kitten"])
    cosines = embeddings @ q
    assert [p for p, _ in results] == run_root["photo_id"][np.argsort(-cosines)[:5]].tolist()
    assert np.allclose([s for _, s in results], np.sort(cosines)[::-1][:5], atol=1e-5)
    assert len(query.search(model, index, "dog", k=100)) == 30


def test_missing_model_and_index_are_clear_errors(tmp_path, run_root):
    with pytest.raises(Im2vecError, match="im2vec train"):
        query.load_model("file://" + str(tmp_path))
    with pytest.raises(Im2vecError, match="im2vec index"):
        query.load_index(run_root["root"])


def test_index_embeddings_round_trip_through_float16_bytes(tmp_path):
    from pipeline.datasets.index import encode as encode_embeddings

    embeddings = query.normalize_rows(np.random.default_rng(5).normal(size=(7, d)))
    folder = tmp_path / "index"
    folder.mkdir()
    pq.write_table(pa.table({"photo_id": np.arange(7, dtype=np.int64), "embedding": encode_embeddings(embeddings)}),
                   folder / "part-0.parquet")
    storage.write_text("file://" + str(folder / "_manifest.json"), '{"dim": %d}' % d)
    index = query.load_index("file://" + str(tmp_path))
    assert index.photo_ids.tolist() == list(range(7))
    assert np.allclose(index.embeddings, embeddings, atol=1e-3)


def test_tag_probabilities_mix_the_tag_softmax_with_the_conse_prior(run_root, model):
    embeddings = run_root["tag_vectors"][[0, 1]] * 3
    plain = query.tag_probabilities(model, embeddings)
    scores = embeddings @ model.tag_vectors.T + model.tag_bias
    np.testing.assert_allclose(plain, query.softmax(scores), rtol=1e-6)
    features = np.random.default_rng(0).random((2, 1280)).astype(np.float32)   # the default CNN's size
    mixed = query.tag_probabilities(model, embeddings, features)
    np.testing.assert_allclose(mixed.sum(axis=1), 1, rtol=1e-6)
    prior = (mixed - (1 - query.CONSE_WEIGHT) * plain) / query.CONSE_WEIGHT
    assert np.all(prior >= -1e-9) and np.allclose(prior.sum(axis=1), 1)
    # rank_tags with features answers these probabilities, best first
    ranked = query.rank_tags(model, embeddings, k=3, features=features)
    for row, answer in zip(mixed, ranked):
        best = np.argsort(-row, kind="stable")[:3]
        assert [t for t, _ in answer] == [TAGS[i] for i in best]
        np.testing.assert_allclose([s for _, s in answer], row[best], rtol=1e-6)


def test_top_tags_in_blocks_equal_one_pass(run_root, model, monkeypatch):
    from model import metrics

    embeddings = query.embed(model, run_root["features"])
    features = np.random.default_rng(1).random((len(embeddings), 1280)).astype(np.float32)
    neighbours = voters(np.random.default_rng(2))
    whole = query.top_tags(model, query.image_terms(model, embeddings, features, neighbours), 2)
    monkeypatch.setattr(metrics, "SCORE_BLOCK", 3 * len(TAGS))    # three images per block (terms: one)
    blocked = query.top_tags(model, query.image_terms(model, embeddings, features, neighbours), 2)
    np.testing.assert_array_equal(whole[0], blocked[0])
    np.testing.assert_allclose(whole[1], blocked[1])


def voters(rng) -> query.Neighbours:
    """Twelve training images in the tag space (d), each with one to three of the vocabulary's tags."""
    counts = rng.integers(1, 4, size=12)
    return query.Neighbours(embeddings=query.normalize_rows(rng.normal(size=(12, d))),
                            offsets=np.concatenate([[0], np.cumsum(counts)]),
                            tag_ids=np.concatenate([rng.choice(len(TAGS), c, replace=False) for c in counts]
                                                   ).astype(np.int32))


def test_probability_columns_are_the_tag_probabilities_columns(run_root, model):
    embeddings = query.embed(model, run_root["features"])
    features = np.random.default_rng(4).random((len(embeddings), 1280)).astype(np.float32)
    neighbours = voters(np.random.default_rng(5))
    whole = query.tag_probabilities(model, embeddings, features, neighbours)
    np.testing.assert_allclose(whole.sum(axis=1), 1, rtol=1e-9)
    terms = query.image_terms(model, embeddings, features, neighbours)
    assert terms.conse is not None and terms.votes is not None     # every part of the mixture is in play
    np.testing.assert_allclose(query.probability_columns(model, terms, np.array([3, 1])), whole[:, [3, 1]],
                               rtol=1e-6)
    np.testing.assert_allclose(query.probability_columns(model, terms.images(7, 11), np.arange(len(TAGS))),
                               whole[7:11], rtol=1e-6)


def test_neighbour_votes_weigh_each_neighbours_tags_by_its_cosine(monkeypatch):
    monkeypatch.setattr(query, "NEIGHBOURS", 2)
    neighbours = query.Neighbours(embeddings=np.array([[1, 0], [0.6, 0.8], [-1, 0]], np.float32),
                                  offsets=np.array([0, 2, 3, 4]), tag_ids=np.array([0, 1, 1, 2], np.int32))
    votes = query.neighbour_votes(neighbours, np.array([[2, 0]], np.float32), vocab_size=4).row_block(0, 1)
    # nearest two: row 0 (cosine 1: tags 0, 1) and row 1 (cosine 0.6: tag 1); row 2 (cosine -1) is not one
    np.testing.assert_allclose(votes[0], np.array([1, 1.6, 0, 0]) / 2.6, rtol=1e-6)
    monkeypatch.setattr(query, "NEIGHBOUR_BLOCK", 1)    # one training image per block: the same votes
    np.testing.assert_allclose(query.neighbour_votes(neighbours, np.array([[2, 0]], np.float32), 4).row_block(0, 1),
                               votes)


def test_load_neighbours_pairs_the_train_splits_index_rows_with_their_tags(run_root, model, tmp_path):
    import dataclasses

    # the train split: photos 100 (tags 0, 1), 102 (tag 3) and 140 (not indexed); 101 is a test photo
    folder = tmp_path / "tagged"
    folder.mkdir()
    pq.write_table(pa.table({"photo_id": pa.array([100, 101, 102, 140], pa.int64()),
                             "split": ["train", "test", "train", "train"],
                             "tag_ids": pa.array([[0, 1], [2], [3], [2]], pa.list_(pa.int32()))}),
                   folder / "part-0.parquet")
    storage.write_text("file://" + str(tmp_path / "vocab" / "_manifest.json"), "{}")   # tagged/ is vocab's
    embeddings = query.normalize_rows(np.random.default_rng(6).normal(size=(3, d)))
    index = query.Index(photo_ids=np.array([102, 101, 100]), embeddings=embeddings, model_sha256=model.model_sha256)
    neighbours = query.load_neighbours("file://" + str(tmp_path), model, index)
    np.testing.assert_array_equal(neighbours.embeddings, embeddings[[2, 0]])
    assert neighbours.offsets.tolist() == [0, 2, 3] and neighbours.tag_ids.tolist() == [0, 1, 3]
    assert query.load_neighbours("file://" + str(tmp_path), model, dataclasses.replace(index, model_sha256="other")) \
        is None
    assert query.load_neighbours(run_root["root"], model) is None     # no index/


def test_tag_probabilities_give_the_neighbours_votes_their_share(run_root, model):
    neighbours = query.Neighbours(embeddings=query.normalize_rows(run_root["tag_vectors"][[0]]),   # cosine 1
                                  offsets=np.array([0, 1]), tag_ids=np.array([3], np.int32))
    embeddings = run_root["tag_vectors"][[0]] * 3
    plain = query.tag_probabilities(model, embeddings)
    mixed = query.tag_probabilities(model, embeddings, neighbours=neighbours)
    expected = (1 - query.NEIGHBOUR_WEIGHT) * plain
    expected[:, 3] += query.NEIGHBOUR_WEIGHT     # the one neighbour votes tag 3 only
    np.testing.assert_allclose(mixed, expected, rtol=1e-6)
