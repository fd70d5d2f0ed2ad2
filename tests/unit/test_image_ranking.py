"""How the evaluate stage ranks test images for a tag (mAP): by the tagger's p(tag | image), not by cosine.

A toy model in which the two rankings disagree: image A lies nearer tag 0's direction than image B
(higher cosine), but B's scores leave tag 0 a larger share of its softmax over the vocabulary.
"""
import numpy as np
import pytest

from model import evaluate, metrics
from model.baselines import cosine_scores
from pipeline import query

TAG_VECTORS = np.array([[1, 0], [0, 1]], np.float32)
EMBEDDINGS = np.array([[3, 1], [10, 5]], np.float32)      # A: cosine with tag 0 0.949, B: 0.894
TRUTH = (np.array([0, 1, 2]), np.array([1, 0], np.int32), 2)   # A carries tag 1, B carries tag 0


@pytest.fixture(scope="module")
def model():
    """g(f) = f (a real Keras layer with the identity as its weights), the two tags above, no offsets."""
    import keras

    projection = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    projection.layers[0].set_weights([np.eye(2, dtype=np.float32)])
    return query.Model(projection=projection, tag_vectors=TAG_VECTORS, tag_bias=np.zeros(2, np.float32),
                       tags=["zero", "one"])


def test_the_toy_rankings_disagree(model):
    probability = query.tag_probabilities(model, EMBEDDINGS)
    cosine = cosine_scores(EMBEDDINGS, TAG_VECTORS)(np.arange(2))
    # tag 0: cosine ranks A first, the probability B (0.88 vs 0.99); tag 1 the other way round
    assert cosine[0, 0] > cosine[1, 0] and probability[0, 0] < probability[1, 0]
    assert cosine[0, 1] < cosine[1, 1] and probability[0, 1] > probability[1, 1]
    terms = query.image_terms(model, EMBEDDINGS)
    by_probability = metrics.mean_average_precision(lambda ids: query.probability_columns(model, terms, ids), *TRUTH)
    by_cosine = metrics.mean_average_precision(cosine_scores(EMBEDDINGS, TAG_VECTORS), *TRUTH)
    assert by_probability["map"] == 1.0 and by_cosine["map"] == 0.5


def test_evaluate_ranks_images_for_a_tag_by_the_taggers_probability(model):
    train_ids = np.array([7, 8], np.int64)

    def feature_blocks():      # two training images, one per tag, for the knn baseline
        yield train_ids, TAG_VECTORS.copy()

    def neighbour_tags(photo_ids):
        return np.searchsorted(train_ids, photo_ids), np.array([0, 1, 2]), np.array([0, 1], np.int32)

    test = {"photo_id": np.array([1, 2], np.int64), "feature": EMBEDDINGS, "offsets": TRUTH[0],
            "tag_ids": TRUTH[1], "split_images": 2, "without_features": 0}
    inputs = evaluate.Inputs(model=model, vocab_manifest={"parameters": {"zero_shot_fraction": 0}},
                             train_manifest={}, test=test, train_ids=train_ids, train_counts=np.array([1, 1]),
                             held_out=None, feature_blocks=feature_blocks, neighbours=None,
                             neighbour_tags=neighbour_tags, photo_tags=lambda ids: {}, images=lambda ids: [])
    report, _ = evaluate.evaluate(inputs, {"knn_k": 1}, "file:///toy")
    assert report["im2vec"]["map"] == 1.0            # B first for tag 0, A first for tag 1: both relevant on top
    assert report["im2vec"]["map_by_cosine"] == 0.5  # cosine puts the wrong image first for both tags
