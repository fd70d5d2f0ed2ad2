"""model.metrics against hand-computed examples, and the knn baseline's pieces (model.baselines)."""
import numpy as np
import pytest

from model import baselines, metrics


def ragged(lists):
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in lists])]).astype(np.int64)
    return offsets, np.array([t for row in lists for t in row], np.int32)


# 4 images, 5 tags (0..4), k = 2.
#   image  true tags   predicted   hits
#   0      {0, 1}      [0, 2]      0 ✓, 2 ✗      -> 1
#   1      {1}         [1, 0]      1 ✓, 0 ✗      -> 1
#   2      {2, 3}      [3, 4]      3 ✓, 4 ✗      -> 1
#   3      {}          [0, 1]      -             -> 0
TRUE = [[0, 1], [1], [2, 3], []]
TOP = np.array([[0, 2], [1, 0], [3, 4], [0, 1]])


def test_per_image_precision_and_recall_by_hand():
    offsets, tag_ids = ragged(TRUE)
    np.testing.assert_array_equal(metrics.hit_mask(TOP, offsets, tag_ids),
                                  [[True, False], [True, False], [True, False], [False, False]])
    precision, recall = metrics.precision_recall_at_k(TOP, offsets, tag_ids)
    # Image 3 has no true tag and is left out: P@2 = (1/2 + 1/2 + 1/2) / 3, R@2 = (1/2 + 1/1 + 1/2) / 3.
    assert precision == pytest.approx(0.5)
    assert recall == pytest.approx(2 / 3)


def test_per_tag_precision_recall_f1_and_n_plus_by_hand():
    offsets, tag_ids = ragged(TRUE)
    predicted, correct, relevant = metrics.per_tag_counts(TOP, offsets, tag_ids, 5)
    # tag:        0  1  2  3  4
    assert predicted.tolist() == [3, 2, 1, 1, 1]    # tag 0 on images 0, 1, 3; tag 1 on 1, 3; ...
    assert correct.tolist() == [1, 1, 0, 1, 0]      # tag 0 right on image 0 only; tag 1 on image 1; tag 3 on 2
    assert relevant.tolist() == [1, 2, 1, 1, 0]     # tag 4 is on no image: left out of the averages
    result = metrics.per_tag_metrics(TOP, offsets, tag_ids, 5)
    # P_t over tags 0..3: 1/3, 1/2, 0/1, 1/1 -> 11/24; R_t: 1/1, 1/2, 0/1, 1/1 -> 5/8
    assert result["precision"] == pytest.approx(11 / 24)
    assert result["recall"] == pytest.approx(5 / 8)
    # F1 of the averages: 2 * (11/24) * (5/8) / (11/24 + 5/8) = 55/104
    assert result["f1"] == pytest.approx(55 / 104)
    assert result["n_plus"] == 3 and result["tags"] == 4     # tags 0, 1 and 3 recalled at least once


def test_a_tag_never_predicted_has_precision_zero_and_popularity_scores_low():
    # 3 images, tags 0..3; every image gets the same two tags (0, 1), as the popularity baseline does.
    offsets, tag_ids = ragged([[0], [0, 2], [3]])
    top = baselines.popularity_top_k(np.array([9, 5, 1, 1]), n=3, k=2)
    assert top.tolist() == [[0, 1]] * 3
    result = metrics.per_tag_metrics(top, offsets, tag_ids, 4)
    # evaluated tags 0, 2, 3 (tag 1 is on no image). P: tag 0 = 2/3, tags 2 and 3 never predicted = 0
    # -> (2/3) / 3 = 2/9. R: tag 0 = 2/2, tags 2 and 3 = 0 -> 1/3.
    assert result["precision"] == pytest.approx(2 / 9)
    assert result["recall"] == pytest.approx(1 / 3)
    assert result["f1"] == pytest.approx(2 * (2 / 9) * (1 / 3) / (2 / 9 + 1 / 3))
    assert result["n_plus"] == 1
    assert metrics.per_tag_metrics(top, *ragged([[], [], []]), 4) == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "n_plus": 0, "tags": 0}
    assert metrics.f1(0.0, 0.0) == 0.0


def test_average_precision_by_hand():
    scores = np.array([[0.9, 0.5, 0.1, 0.4],
                       [0.8, 0.5, 0.9, 0.3],
                       [0.7, 0.5, 0.5, 0.2],
                       [0.6, 0.5, 0.3, 0.1],
                       [0.5, 0.5, 0.2, 0.0]])
    relevant = np.array([[1, 1, 1, 0],
                         [0, 0, 0, 0],
                         [1, 0, 0, 0],
                         [0, 1, 0, 0],
                         [0, 0, 0, 0]], bool)
    ap = metrics.average_precision(scores, relevant)
    # query 0: relevant at ranks 1 and 3 -> (1/1 + 2/3) / 2 = 5/6
    # query 1: every score ties; ties put the irrelevant first, so the relevant images (rows 0 and 3)
    #          come 4th and 5th -> (1/4 + 2/5) / 2 = 13/40
    # query 2: order by score is rows 1, 2, 3, 4, 0 -> the one relevant image is 5th: 1/5
    # query 3: nothing relevant -> NaN
    assert ap[:3] == pytest.approx([5 / 6, 13 / 40, 1 / 5])
    assert np.isnan(ap[3])


def test_relevance_matrix():
    offsets, tag_ids = ragged([[0, 4], [4], []])
    np.testing.assert_array_equal(metrics.relevance(offsets, tag_ids, np.array([4, 0, 2])),
                                  [[True, True, False], [True, False, False], [False, False, False]])


def test_top_k_of_scores_breaks_ties_by_column_and_matches_a_full_sort():
    assert metrics.top_k_of_scores(np.array([[1.0, 3.0, 3.0, 0.0]]), 1).tolist() == [[1]]
    assert metrics.top_k_of_scores(np.array([[1.0, 3.0, 3.0, 0.0]]), 3).tolist() == [[1, 2, 0]]
    assert metrics.top_k_of_scores(np.zeros((2, 4)), 2).tolist() == [[0, 1], [0, 1]]
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 30)).astype(np.float32)     # many ties
    np.testing.assert_array_equal(metrics.top_k_of_scores(scores, 5),
                                  np.argsort(-scores, axis=1, kind="stable")[:, :5])
    assert metrics.top_k_of_scores(scores, 40).shape == (50, 30)


def test_mean_average_precision_over_tags_with_a_relevant_image():
    offsets, tag_ids = ragged([[0], [0, 2], [3], []])          # tag 1 is on no image: not a query
    scores = np.array([[0.9, 0.1, 0.2, 0.3], [0.8, 0.2, 0.1, 0.0], [0.1, 0.3, 0.9, 0.9], [0.0, 0.0, 0.8, 0.1]])
    result = metrics.mean_average_precision(lambda ids: scores[:, ids], offsets, tag_ids, 4)
    # tag 0: rows 0, 1 first -> 1; tag 2: row 1 (0.1) ranks 4th (0.9, 0.8, 0.2, 0.1) -> 1/4; tag 3: row 2 first -> 1
    assert result["queries"] == 3
    assert result["map"] == pytest.approx((1 + 1 / 4 + 1) / 3)
    assert result["map_random"] == pytest.approx((2 / 4 + 1 / 4 + 1 / 4) / 3)


# --- the knn baseline's pieces -------------------------------------------------------------------

def test_merge_nearest_keeps_the_k_best_over_blocks():
    scores, ids = baselines.merge_nearest(np.full((1, 0), -np.inf, np.float32), np.zeros((1, 0), np.int64),
                                          np.array([[0.5]], np.float32), np.array([7]), 2)
    assert scores.tolist() == [[0.5]] and ids.tolist() == [[7]]
    scores, ids = baselines.merge_nearest(scores, ids, np.array([[0.9, 0.1, 0.6]], np.float32), np.array([1, 2, 3]),
                                          2)
    np.testing.assert_allclose(scores, [[0.9, 0.6]])
    assert ids.tolist() == [[1, 3]]


def test_votes_sum_neighbour_cosines_per_tag():
    # Neighbour tag lists: row 0 = {0, 1}, row 1 = {1}, row 2 = {2}.
    offsets, tag_ids = ragged([[0, 1], [1], [2]])
    # Image 0's neighbours: rows 0 (cosine 0.9) and 1 (0.5); image 1's: rows 2 (0.8) and 0 (0.2).
    votes = baselines.Votes(np.array([[0.9, 0.5], [0.8, 0.2]], np.float32), np.array([[0, 1], [2, 0]]),
                            offsets, tag_ids, 4)
    # image 0: tag 0 = 0.9, tag 1 = 0.9 + 0.5; image 1: tag 2 = 0.8, tags 0 and 1 = 0.2 each
    np.testing.assert_allclose(votes.row_block(0, 2), [[0.9, 1.4, 0, 0], [0.2, 0.2, 0.8, 0]], rtol=1e-6)
    np.testing.assert_allclose(votes.column_block(np.array([1, 2])), [[1.4, 0], [0.2, 0.8]], rtol=1e-6)
    # ties (0.2, 0.2) go to the lower tag_id, the more frequent tag
    assert votes.top_k(2).tolist() == [[1, 0], [2, 0]]
