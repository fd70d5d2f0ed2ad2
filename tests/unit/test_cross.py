"""Cross-corpus evaluation's pure parts: the shared-tag mapping and scoring over the shared tags."""
import numpy as np
import pytest

from model import baselines, cross, metrics
from model.baselines import normalize_rows
from pipeline import Im2vecError, query
from pipeline.datasets import cross as cross_data


def test_shared_tags_pair_ids_by_tag_string_in_trained_order():
    trained = ["dog", "cat", "tree", "car", "sun"]
    other = ["sun", "boat", "dog", "car", "kite"]
    trained_ids, other_ids = cross.shared_tags(trained, other)
    assert trained_ids.tolist() == [0, 3, 4] and other_ids.tolist() == [2, 3, 0]
    assert [trained[t] for t in trained_ids] == [other[o] for o in other_ids] == ["dog", "car", "sun"]
    nothing = cross.shared_tags(trained, ["boat"])
    assert len(nothing[0]) == len(nothing[1]) == 0


def test_to_columns_keeps_the_shared_tags_renumbered_and_empty_images():
    # Three images in the other vocabulary's ids; columns: other id 2 -> 0, 3 -> 1, 0 -> 2.
    offsets = np.array([0, 3, 4, 6])
    tag_ids = np.array([0, 1, 2, 4, 3, 2], np.int32)
    new_offsets, new_ids = cross.to_columns(offsets, tag_ids, np.array([2, 3, 0]), 5)
    assert new_offsets.tolist() == [0, 2, 2, 4]
    assert new_ids.tolist() == [0, 2, 0, 1]      # image 0: ids 0, 2 -> columns 2, 0, ascending; image 1: none
    assert new_ids.dtype == np.int32


def test_scoring_over_shared_tags_ranks_them_by_the_trained_models_probability():
    """im2vec over the shared tags is the fused tagger's p(tag | image) of all V tags, restricted to the shared columns."""
    rng = np.random.default_rng(3)
    n, size, d = 40, 12, 6
    tag_vectors = rng.normal(size=(size, d)).astype(np.float32)
    tag_bias = rng.normal(size=size).astype(np.float32)
    embeddings = rng.normal(size=(n, d)).astype(np.float32)
    train_counts = rng.integers(1, 50, size=size)
    shared = np.array([1, 2, 5, 7, 8, 9, 11])
    truth = [sorted(rng.choice(len(shared), size=rng.integers(0, 3), replace=False).tolist()) for _ in range(n)]
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in truth])]).astype(np.int64)
    tag_ids = np.array([c for t in truth for c in t], np.int32)
    neighbour_scores = rng.uniform(0.1, 1, size=(n, 3)).astype(np.float32)
    neighbour_rows = rng.integers(0, 20, size=(n, 3))
    lists = [sorted(rng.choice(size, size=3, replace=False).tolist()) for _ in range(20)]
    list_offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    list_ids = np.array([t for x in lists for t in x], np.int32)
    votes = baselines.Votes(neighbour_scores, neighbour_rows, list_offsets, list_ids, size)

    model = query.Model(projection=None, tag_vectors=tag_vectors, tag_bias=tag_bias, tags=[f"t{i}" for i in range(size)])
    voters = query.Neighbours(normalize_rows(rng.normal(size=(20, d)).astype(np.float32)), list_offsets, list_ids)
    terms = query.image_terms(model, embeddings, None, voters)

    report = cross.score(model, terms, train_counts, votes, shared, offsets, tag_ids)

    # Every tag's probability (rows summing to 1), then the shared columns: what the cross report ranks by.
    shared_probability = query.tag_probabilities(model, embeddings, None, voters)[:, shared]
    assert np.allclose(query.tag_probabilities(model, embeddings, None, voters).sum(axis=1), 1)
    expected = metrics.summary(metrics.top_k_of_scores(shared_probability, metrics.CURVE_K), offsets, tag_ids,
                               len(shared), lambda columns: shared_probability[:, columns])
    for key in ("precision", "recall", "f1", "n_plus", "p_at_5", "r_at_5", "map"):
        assert report["im2vec"][key] == pytest.approx(expected[key]), key
    assert report["im2vec"]["curve"] == expected["curve"]
    assert report["im2vec"]["map_by_cosine"] == pytest.approx(metrics.mean_average_precision(
        baselines.cosine_scores(embeddings, tag_vectors[shared]), offsets, tag_ids, len(shared))["map"])
    assert report["popularity"]["p_at_5"] == metrics.summary(
        baselines.popularity_top_k(train_counts[shared], n, metrics.CURVE_K), offsets, tag_ids, len(shared))["p_at_5"]
    # knn over the shared tags: a vote for an unshared tag never counts, one for a shared tag always does.
    column = {t: c for c, t in enumerate(shared)}
    dense = np.zeros((n, len(shared)), np.float32)
    for i in range(n):
        for score, row in zip(neighbour_scores[i], neighbour_rows[i]):
            for t in lists[row]:
                if t in column:
                    dense[i, column[t]] += score
    expected = metrics.summary(metrics.top_k_of_scores(dense, metrics.CURVE_K), offsets, tag_ids, len(shared),
                               lambda columns: dense[:, columns])
    assert report["knn"]["p_at_5"] == pytest.approx(expected["p_at_5"])
    assert report["knn"]["map"] == pytest.approx(expected["map"])
    for name in ("im2vec", "popularity", "knn"):
        assert report[name]["tags"] == len(set(tag_ids.tolist()))


def test_the_report_folder_is_named_after_the_other_root():
    assert cross_data.name_of("file:///data/runs/openmoji/") == "cross-openmoji"
    assert cross_data.dataset("s3a://bucket/x y").folder == "reports/cross-x_y"
    with pytest.raises(Im2vecError, match="folder name"):
        cross_data.name_of("file:///")
