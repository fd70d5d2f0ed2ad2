"""model.projection and model.metrics: losses against their formulas, sparse tag-table updates, ranking metrics."""
import numpy as np
import pytest
import tensorflow as tf

from model import baselines, metrics, train
from model.projection import (TagTable, build_projection, merge_rows, negative_sampling_loss, ranking_loss,
                              scores, softmax_loss, tag_bias)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.fixture
def vectors():
    rng = np.random.default_rng(3)
    return rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 2, 4)).astype(np.float32), \
        rng.normal(size=(6, 5, 4)).astype(np.float32)


def test_negative_sampling_loss_is_word2vecs(vectors):
    g, pos, neg = vectors
    expected = [np.mean([-np.log(sigmoid(p @ g[i])) for p in pos[i]]) - sum(np.log(sigmoid(-n @ g[i])) for n in neg[i])
                for i in range(len(g))]
    np.testing.assert_allclose(negative_sampling_loss(scores(g, pos), scores(g, neg)).numpy(), expected, rtol=1e-5)


def test_ranking_loss_is_fast0tags(vectors):
    g, pos, neg = vectors
    expected = [np.mean([sum(np.log1p(np.exp(n @ g[i] - p @ g[i])) for n in neg[i]) for p in pos[i]])
                for i in range(len(g))]
    np.testing.assert_allclose(ranking_loss(scores(g, pos), scores(g, neg)).numpy(), expected, rtol=1e-5)


def test_softmax_loss_is_cross_entropy_of_each_positive_against_the_negatives(vectors):
    g, pos, neg = vectors
    expected = []
    for i in range(len(g)):
        neg_scores = neg[i] @ g[i]
        expected.append(np.mean([-np.log(np.exp(p @ g[i]) / (np.exp(p @ g[i]) + np.exp(neg_scores).sum()))
                                 for p in pos[i]]))
    np.testing.assert_allclose(softmax_loss(scores(g, pos), scores(g, neg)).numpy(), expected, rtol=1e-5)


def test_losses_stay_finite_for_large_scores():
    g = np.full((1, 4), 100.0, np.float32)
    pos, neg = -np.ones((1, 2, 4), np.float32), np.ones((1, 3, 4), np.float32)
    for loss in (negative_sampling_loss, ranking_loss, softmax_loss):
        value = loss(scores(g, pos), scores(g, neg)).numpy()
        assert np.all(np.isfinite(value)) and value[0] > 100


def test_projection_is_linear_or_an_mlp():
    linear, mlp = build_projection(12, 3, []), build_projection(12, 3, [8, 5])
    assert [w.shape for w in linear.trainable_weights] == [(12, 3), (3,)]
    assert [tuple(w.shape) for w in mlp.trainable_weights] == [(12, 8), (8,), (8, 5), (5,), (5, 3), (3,)]
    assert mlp(np.zeros((7, 12), np.float32)).shape == (7, 3)


def test_tag_table_adagrad_touches_only_the_given_rows():
    rng = np.random.default_rng(0)
    initial = rng.normal(size=(50, 3)).astype(np.float32)
    table = TagTable(initial, learning_rate=0.5, initial_accumulator=0.1)
    ids = np.array([7, 2, 40], np.int32)
    grads = rng.normal(size=(3, 3)).astype(np.float32)
    for _ in range(2):
        table.apply_gradients(tf.constant(ids), tf.constant(grads))
    expected, accumulator = initial.copy(), np.full_like(initial, 0.1)
    for _ in range(2):
        accumulator[ids] += grads ** 2
        expected[ids] -= 0.5 * grads / np.sqrt(accumulator[ids])
    np.testing.assert_allclose(table.vectors.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(table.accumulator.numpy(), accumulator, rtol=1e-5)
    untouched = np.setdiff1d(np.arange(50), ids)
    assert np.array_equal(table.vectors.numpy()[untouched], initial[untouched])
    assert "CPU" in table.vectors.device


def test_frozen_table_has_no_accumulator_and_never_moves():
    initial = np.ones((5, 2), np.float32)
    table = TagTable(initial, learning_rate=0.0)
    assert table.frozen and table.accumulator is None
    table.apply_gradients(tf.constant([1], tf.int32), tf.constant([[1.0, 1.0]]))
    assert np.array_equal(table.vectors.numpy(), initial)


def test_lookup_and_merge_rows():
    table = TagTable(np.arange(20, dtype=np.float32).reshape(10, 2))
    ids = tf.constant([[3, 3, 9], [1, 9, 3]], tf.int32)
    unique_ids, rows, index = table.lookup(ids)
    assert sorted(unique_ids.numpy().tolist()) == [1, 3, 9]
    np.testing.assert_array_equal(tf.gather(rows, index).numpy(), table.vectors.numpy()[ids.numpy()])
    merged_ids, merged = merge_rows(tf.constant([4, 1, 4], tf.int32), tf.constant([[1.0], [2.0], [3.0]]))
    assert dict(zip(merged_ids.numpy().tolist(), merged.numpy()[:, 0].tolist())) == {4: 4.0, 1: 2.0}


@pytest.mark.parametrize("tag_learning_rate, loss", [(0.0, "negative_sampling"), (0.1, "negative_sampling"),
                                                     (0.1, "softmax")])
def test_a_training_step_updates_the_projection_and_only_the_batchs_rows(tag_learning_rate, loss):
    import keras

    rng = np.random.default_rng(1)
    initial = rng.normal(size=(1000, 8)).astype(np.float32)
    strategy = tf.distribute.get_strategy()
    projection = build_projection(16, 8, [])
    optimizer = keras.optimizers.Adam(0.01)
    table = TagTable(initial, tag_learning_rate)
    step = train.make_train_step(strategy, projection, optimizer, table, loss)
    batch = {"feature": rng.normal(size=(32, 16)).astype(np.float16),
             "pos_ids": rng.integers(0, 50, (32, 2)).astype(np.int32),
             "neg_ids": rng.integers(50, 100, (32, 5)).astype(np.int32)}
    kernel = projection.trainable_weights[0].numpy().copy()
    losses = [float(step(batch)) for _ in range(20)]
    assert losses[-1] < losses[0]
    assert not np.allclose(projection.trainable_weights[0].numpy(), kernel)
    after = table.vectors.numpy()
    touched = np.unique(np.concatenate([batch["pos_ids"].ravel(), batch["neg_ids"].ravel()]))
    untouched = np.setdiff1d(np.arange(1000), touched)
    assert np.array_equal(after[untouched], initial[untouched])
    if tag_learning_rate:
        assert np.all(np.any(after[touched] != initial[touched], axis=1))
    else:
        assert np.array_equal(after, initial)


def test_a_sampling_methods_draw_replaces_the_epochs_negatives():
    """A method that draws from the batch trains on its draw: here the first negative of each row only."""
    import keras
    from pipeline import sampling

    rng = np.random.default_rng(3)
    initial = rng.normal(size=(100, 8)).astype(np.float32)
    batch = {"feature": rng.normal(size=(16, 16)).astype(np.float16),
             "pos_ids": rng.integers(0, 50, (16, 2)).astype(np.int32),
             "neg_ids": rng.integers(50, 100, (16, 5)).astype(np.int32)}
    first_only = sampling.Method("the first negative", lambda b, size: sampling.Candidates(b["neg_ids"][:, :1]),
                                 lambda shares, P, K, B: shares.negative)
    losses = []
    for method, neg_ids in ((first_only, batch["neg_ids"]), (sampling.METHODS["presampled"], batch["neg_ids"][:, :1])):
        keras.utils.set_random_seed(4)
        projection = build_projection(16, 8, [])
        step = train.make_train_step(tf.distribute.get_strategy(), projection, keras.optimizers.Adam(0.01),
                                     TagTable(initial, 0.1), train.Objective("softmax", method))
        losses.append([float(step({**batch, "neg_ids": neg_ids})) for _ in range(3)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-6)


def test_tag_bias_undoes_the_share_of_the_sampling_weights_it_is_told():
    rng = np.random.default_rng(2)
    images = rng.integers(1, 10_000, 200).astype(np.float64)
    neg_weight, pos_weight = images ** 0.75, images ** -0.5
    odds = rng.normal(size=200)
    # What the loss converges to: log odds + log pos_weight - log neg_weight (+ a constant).
    scores = odds + np.log(pos_weight) - np.log(neg_weight) + 3.0
    full = tag_bias(neg_weight, pos_weight, strength=1.0)
    assert full.dtype == np.float32 and abs(float(full.mean())) < 1e-4
    assert np.array_equal(np.argsort(-(scores + full)), np.argsort(-odds))
    assert not np.array_equal(np.argsort(-scores)[:10], np.argsort(-odds)[:10])
    # a share of it: scores + bias = log odds - (1 - strength) * log(neg_weight / pos_weight) + const
    half = tag_bias(neg_weight, pos_weight, strength=0.5)
    np.testing.assert_allclose(half, 0.5 * full, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(tag_bias(neg_weight, pos_weight, strength=0.0), np.zeros(200, np.float32))
    assert np.array_equal(tag_bias(neg_weight, pos_weight), half)   # the default strength


def test_the_projection_sees_unit_length_features():
    projection = build_projection(12, 3, [8])
    features = np.random.default_rng(5).normal(size=(4, 12)).astype(np.float32)
    np.testing.assert_allclose(projection(features).numpy(), projection(7.5 * features).numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(projection(np.zeros((2, 12), np.float32)).numpy()))


def test_parameters_refuse_a_tag_bias_strength_outside_0_to_1():
    from pipeline import Im2vecError, config as configuration

    config = configuration.load()
    assert train.parameters(config)["tag_bias_strength"] == 0.25
    with pytest.raises(Im2vecError, match="tag_bias_strength"):
        train.parameters({**config, "tag_bias_strength": 1.5})


def test_parameters_name_the_known_sampling_methods():
    from pipeline import Im2vecError, config as configuration

    config = configuration.load()
    assert train.parameters(config)["sampling"] == "mixed"
    assert train.parameters({**config, "sampling": "in_batch"})["sampling"] == "in_batch"
    with pytest.raises(Im2vecError, match=r"sampling: unknown method 'option_iii'; known methods: full_softmax, "):
        train.parameters({**config, "sampling": "option_iii"})


def test_top_k_tags_matches_a_full_sort(monkeypatch):
    rng = np.random.default_rng(4)
    images, tags, bias = rng.normal(size=(37, 5)), rng.normal(size=(60, 5)), rng.normal(size=60)
    monkeypatch.setattr(metrics, "SCORE_BLOCK", 60 * 4)    # four images per block
    for offsets in (None, bias):
        scores = images.astype(np.float32) @ tags.astype(np.float32).T + (0 if offsets is None else offsets)
        top = metrics.top_k_tags(images, tags, 5, None if offsets is None else offsets.astype(np.float32))
        assert top.shape == (37, 5) and top.dtype == np.int32
        np.testing.assert_array_equal(top, np.argsort(-scores, axis=1, kind="stable")[:, :5])
    assert metrics.top_k_tags(images, tags[:3], 5).shape == (37, 3)


def test_precision_and_recall_at_k_by_hand():
    true = [[1, 4, 9], [2], [], [0, 1, 2, 3, 5, 6, 7]]
    top = np.array([[4, 1, 8], [3, 5, 6], [1, 2, 3], [7, 8, 0]])
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in true])])
    tag_ids = np.array([t for row in true for t in row], np.int32)
    np.testing.assert_array_equal(metrics.hits(top, offsets, tag_ids), [2, 0, 0, 2])
    precision, recall = metrics.precision_recall_at_k(top, offsets, tag_ids)
    # the untagged image is left out of both means
    assert precision == pytest.approx(np.mean([2 / 3, 0, 2 / 3]))
    assert recall == pytest.approx(np.mean([2 / 3, 0, 2 / 7]))


def test_popularity_ranks_the_most_frequent_tags():
    top = baselines.popularity_top_k(np.array([5, 50, 1, 50, 20]), n=3, k=3)
    assert top.tolist() == [[1, 3, 4]] * 3



# keep_freed_memory, in fresh processes with and without it
GLIBC_SCRIPT = """
import sys
from model import memory
from tests.glibc_heap import large_block_fate

if sys.argv[1] == "keep":
    memory.keep_freed_memory()
print(*large_block_fate())
"""


def test_keep_freed_memory_has_glibc_keep_large_blocks_on_its_heap():
    import subprocess
    import sys
    from pathlib import Path

    from tests.glibc_heap import has_mallinfo2

    def run(mode: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", GLIBC_SCRIPT, mode], check=True, capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[2]).stdout.split()

    if not has_mallinfo2():
        pytest.skip("not glibc >= 2.33")
    assert run("default") == ["True", "False"]     # the control: mapped fresh, handed back on free
    assert run("keep") == ["False", "True"]


def test_best_epoch_is_the_highest_validation_f1_and_the_earliest_of_equals():
    history = [{"epoch": 1, "val_f1": 0.1}, {"epoch": 2, "val_f1": 0.3}, {"epoch": 3, "val_f1": 0.3},
               {"epoch": 4, "val_f1": 0.2}]
    assert train.best_epoch(history)["epoch"] == 2
    assert train.best_epoch([]) == {}
    assert not train.patience_spent(history, 3) and train.patience_spent(history, 2)
    assert not train.patience_spent(history, 0) and not train.patience_spent([], 2)


def test_train_png_draws_the_validation_curves(monkeypatch):
    from matplotlib.axes import Axes

    drawn = []
    plot = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda self, *args, **kw: drawn.append(kw.get("label")) or plot(self, *args, **kw))
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 2.0, "val_p_at_5": 0.1 * e, "val_r_at_5": 0.2,
                "val_f1": 0.05 * e, "popularity_p_at_5": 0.1, "popularity_r_at_5": 0.1, "popularity_f1": 0.01}
               for e in (1, 2, 3)]
    assert train.plot_history(history)[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"P@5", "R@5", "per-tag F1"} <= set(drawn)
