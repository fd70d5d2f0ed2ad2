"""The sampling methods of pipeline.sampling.METHODS as the trainer draws and scores them: own tags kept out,
the log-Q correction by hand, expected candidate counts, the settings refused in one line, and each
method's step learning on a toy batch."""
import math

import numpy as np
import pytest
import tensorflow as tf

from model import train
from model.projection import TagTable, build_projection
from pipeline import Im2vecError, config as configuration, sampling


def own_lists(rng, rows: int, size: int, most: int = 6) -> list[list[int]]:
    """Random own-tag lists, 1..most unique tags each from a small vocabulary (so rows share tags)."""
    return [sorted(rng.choice(size, rng.integers(1, most + 1), replace=False).tolist()) for _ in range(rows)]


def padded(lists: list[list[int]], width: int, shuffle_rng=None) -> np.ndarray:
    out = np.full((len(lists), width), -1, np.int32)
    for i, tags in enumerate(lists):
        tags = list(tags)
        if shuffle_rng is not None:
            shuffle_rng.shuffle(tags)
        out[i, :len(tags)] = tags
    return out


def negatives_by_row(drawn: sampling.Candidates, rows: int) -> list[list[int]]:
    """The candidates each row is handed as negatives (valid ones), in order, shared ones after the row's own."""
    parts = []
    if drawn.row_ids is not None:
        parts.append(drawn.row_ids.numpy())
    if drawn.shared_ids is not None:
        parts.append(np.tile(drawn.shared_ids.numpy(), (rows, 1)))
    candidates = np.concatenate(parts, axis=1)
    valid = np.ones(candidates.shape, bool) if drawn.valid is None else drawn.valid.numpy()
    return [candidates[i][valid[i]].tolist() for i in range(rows)]


def test_own_tag_mask_matches_set_membership_with_padding_and_any_order():
    rng = np.random.default_rng(0)
    lists = own_lists(rng, 40, 30)
    own_ids = tf.constant(padded(lists, 8, shuffle_rng=rng))
    ids = rng.integers(0, 30, (40, 25)).astype(np.int32)
    shared = rng.integers(0, 30, 17).astype(np.int32)
    for candidates, expect in ((ids, [[t in set(lists[i]) for t in ids[i]] for i in range(40)]),
                               (shared, [[t in set(lists[i]) for t in shared] for i in range(40)])):
        np.testing.assert_array_equal(sampling.own_tag_mask(own_ids, tf.constant(candidates)).numpy(), expect)


def test_option_i_never_hands_an_image_one_of_its_own_tags():
    rng = np.random.default_rng(1)
    for _ in range(20):
        rows = int(rng.integers(1, 30))
        lists = own_lists(rng, rows, 12)    # 12 tags: neighbours share many
        batch = {"pos_ids": tf.constant([[tags[0]] for tags in lists], tf.int32),
                 "own_ids": tf.constant(padded(lists, 7, shuffle_rng=rng))}
        handed = negatives_by_row(sampling.next_image_tags(batch, 12), rows)
        for i in range(rows):
            following = lists[(i + 1) % rows]
            assert not set(handed[i]) & set(lists[i])
            # exactly the next image's tags minus its own, each once
            assert sorted(handed[i]) == sorted(set(following) - set(lists[i]))


@pytest.mark.parametrize("name", ["in_batch", "mixed", "full_softmax"])
def test_the_trainers_draws_hand_out_no_own_tag_and_nothing_else_is_lost(name):
    rng = np.random.default_rng(2)
    size, rows, positives = 15, 9, 2
    lists = own_lists(rng, rows, size)
    pos_ids = np.array([rng.choice(tags, positives) for tags in lists], np.int32)
    # mixed's pre-drawn part may hold own tags (drawn with exclude_own_tags false): kept as drawn
    neg_ids = rng.integers(0, size, (rows, 4)).astype(np.int32)
    batch = {"pos_ids": tf.constant(pos_ids), "neg_ids": tf.constant(neg_ids), "own_ids": tf.constant(padded(lists, 6))}
    handed = negatives_by_row(sampling.METHODS[name].draw(batch, size), rows)
    for i in range(rows):
        drawn = neg_ids[i].tolist() if name == "mixed" else []
        offered = {"in_batch": pos_ids.ravel().tolist(), "mixed": pos_ids.ravel().tolist(),
                   "full_softmax": list(range(size))}[name]
        assert handed[i] == drawn + [t for t in offered if t not in set(lists[i])]


def test_the_log_q_correction_matches_a_hand_computed_toy_batch():
    """In-batch negatives of three images with the correction of Yi et al. (RecSys 2019), by hand.

    Images A {0, 1}, B {2}, C {1, 3} with positives 0, 2, 3 and pos_weight flat: a drawn positive is
    tag 0, 1, 2, 3 with chance (1/2, 1/2 + 1/2, 1, 1/2) / 3, so among a batch's B·P = 3 positives tag t
    is expected Q = (0.5, 1, 1, 0.5) times. Every score drops by log Q_t; row A's candidates are 2 and 3
    (0 and 1 are its own), B's 0 and 3, C's 0 and 2.
    """
    offsets, tag_ids = np.array([0, 2, 3, 5]), np.array([0, 1, 2, 1, 3], np.int32)
    positive = sampling.positive_shares(offsets, tag_ids, np.ones(4)) / 3
    shares = sampling.TagShares(np.full(4, 0.25), positive, np.array([1, 2, 1, 1]) / 3)
    expected = sampling.expected_candidates(sampling.METHODS["in_batch"], shares, 1, 0, 3)
    np.testing.assert_allclose(expected, [0.5, 1, 1, 0.5])

    tag_vectors = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)
    image_vectors = tf.constant([[2, 1], [0, 1], [1, -1]], tf.float32)    # scores A 2 1 -2 -1, B 0 1 0 -1, C 1 -1 -1 1
    batch = {"pos_ids": tf.constant([[0], [2], [3]], tf.int32), "neg_ids": tf.zeros([3, 0], tf.int32),
             "own_ids": tf.constant([[0, 1], [2, -1], [1, 3]], tf.int32)}
    ln2 = math.log(2)
    by_hand = [math.log(1 + math.exp(-2 - (2 + ln2)) + math.exp(-1 + ln2 - (2 + ln2))),   # A: 0 vs 2, 3
               math.log(1 + math.exp(ln2 - 0) + math.exp(-1 + ln2 - 0)),                 # B: 2 vs 0, 3
               math.log(1 + math.exp(1 + ln2 - (1 + ln2)) + math.exp(-1 - (1 + ln2)))]   # C: 3 vs 0, 2
    without = [math.log(1 + math.exp(-2 - 2) + math.exp(-1 - 2)), math.log(1 + math.exp(0) + math.exp(-1)),
               math.log(1 + math.exp(1 - 1) + math.exp(-1 - 1))]
    for log_q, want in ((np.log(expected).astype(np.float32), by_hand), (None, without)):
        objective = train.Objective("softmax", sampling.METHODS["in_batch"], log_q, batch_size=3)
        drawn = objective.method.draw(batch, 4)
        got = objective.per_image_loss(image_vectors, batch["pos_ids"], drawn,
                                       tf.gather(tag_vectors, train.row_ids(batch["pos_ids"], drawn)),
                                       tf.gather(tag_vectors, drawn.shared_ids))
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
        validation = {"pos_ids": batch["pos_ids"].numpy(), "neg_ids": np.zeros((3, 0), np.int32),
                      "own_ids": batch["own_ids"].numpy()}
        assert train.validation_loss(objective, image_vectors.numpy(), tag_vectors, validation) == \
            pytest.approx(np.mean(want), rel=1e-5)


def test_expected_candidate_counts_of_each_method():
    shares = sampling.TagShares(np.array([0.5, 0.3, 0.2, 0.0]), np.array([0.1, 0.2, 0.7, 0.0]),
                                np.array([0.4, 0.4, 0.9, 0.0]))
    P, K, B = 2, 10, 64
    want = {"presampled": K * shares.negative, "next_image": shares.image, "in_batch": B * P * shares.positive,
            "mixed": K * shares.negative + B * P * shares.positive, "full_softmax": np.ones(4)}
    for name, counts in want.items():
        got = sampling.expected_candidates(sampling.METHODS[name], shares, P, K, B)
        # a tag never offered gets the smallest count of one that is, so log Q stays finite
        floor = counts[counts > 0].min()
        np.testing.assert_allclose(got, np.maximum(counts, floor))
        assert np.all(np.isfinite(np.log(got)))


def test_ranking_follows_the_method_and_is_flat_under_full_softmax_or_log_q():
    config = configuration.load()
    params = train.parameters({**config, "tag_bias_strength": 1.0})
    images = np.array([100.0, 10.0, 1.0])
    shares = sampling.TagShares(images ** 0.75 / (images ** 0.75).sum(), np.array([0.2, 0.3, 0.5]), images / 111)
    bias = {name: train.sampling_terms({**params, "sampling": name}, images ** -0.5, shares, 64)[0]
            for name in ("presampled", "in_batch", "full_softmax")}
    # log Q_t - log pos_weight_t, centred: Option II's Q ∝ images ** 0.75, pos_weight = images ** -0.5
    np.testing.assert_allclose(bias["presampled"], 1.25 * (np.log(images) - np.log(images).mean()), atol=1e-5)
    in_batch = np.log(np.array([0.2, 0.3, 0.5]) / images ** -0.5)
    np.testing.assert_allclose(bias["in_batch"], in_batch - in_batch.mean(), atol=1e-5)
    np.testing.assert_allclose(bias["full_softmax"], 0.5 * (np.log(images) - np.log(images).mean()), atol=1e-5)
    corrected, objective = train.sampling_terms({**params, "sampling": "in_batch", "logq_correction": True},
                                                images ** -0.5, shares, 64)
    np.testing.assert_allclose(corrected, bias["full_softmax"], atol=1e-6)
    np.testing.assert_allclose(objective.log_q, np.log(64 * 2 * np.array([0.2, 0.3, 0.5])), rtol=1e-6)


def test_bad_sampling_settings_are_one_clear_error():
    config = configuration.load()
    cases = [({"sampling": "option_iii"}, r"^sampling: unknown method 'option_iii'; known methods: full_softmax, "
                                          r"in_batch, mixed, next_image, presampled$"),
             ({"sampling": "in_batch", "exclude_own_tags": False}, r"^exclude_own_tags: false keeps own tags"),
             ({"logq_correction": "yes"}, r"^logq_correction must be true or false, got 'yes'$")]
    for overrides, message in cases:
        with pytest.raises(Im2vecError, match=message) as refused:
            train.parameters({**config, **overrides})
        assert "\n" not in str(refused.value)
    sampling.check_vocabulary({**config, "sampling": "full_softmax"}, 20_000)
    with pytest.raises(Im2vecError, match=r"^sampling full_softmax scores every tag of the vocabulary for every "
                                          r"image, and it has 20,001 tags, more than full_softmax_max_tags "
                                          r"\(20,000\): pick another sampling method or raise the limit$"):
        sampling.check_vocabulary({**config, "sampling": "full_softmax"}, 20_001)
    sampling.check_vocabulary(config, 10 ** 6)   # the other methods never score the whole vocabulary


def test_an_epoch_without_what_the_method_reads_is_refused():
    config = configuration.load()
    positives_only = {"negatives": 0, "own_tags": 9, "sampling": "in_batch"}
    sampling.check_epoch({**config, "sampling": "next_image"}, positives_only, "file:///r/epochs/epoch=00001")
    with pytest.raises(Im2vecError, match=r"epoch=00001 was sampled for sampling in_batch and holds no negatives, "
                                          r"which sampling presampled needs: sample it again"):
        sampling.check_epoch({**config, "sampling": "presampled"}, positives_only, "file:///r/epochs/epoch=00001")
    with pytest.raises(Im2vecError, match="holds no own_ids, which sampling mixed needs"):
        sampling.check_epoch({**config, "sampling": "mixed"}, {"negatives": 20, "schema_version": 1}, "e")
    # a mixed epoch (negatives and own_ids) serves every method
    for name in sampling.METHODS:
        sampling.check_epoch({**config, "sampling": name}, {"negatives": 20, "own_tags": 9}, "e")


def test_neg_power_and_pos_power_0_draw_uniformly():
    """neg_power and pos_power reach the draws through vocab/'s weights: images ** power. At 0 negatives are
    uniform over the vocabulary and positives uniform over an image's tags; at 1 negatives follow raw frequency."""
    rng = np.random.default_rng(4)
    size, n = 200, 20_000
    images = np.maximum(1.0, np.floor(10_000 / np.arange(1, size + 1)))
    offsets = np.arange(0, 3 * n + 1, 3)
    tag_ids = np.concatenate([np.sort(rng.choice(size, 3, replace=False)) for _ in range(n)]).astype(np.int32)
    photo_id = np.arange(n, dtype=np.int64)
    for power in (0.0, 1.0):
        tables = sampling.build_tables(images ** power, images ** power)
        drawn = sampling.draw_negatives(photo_id, offsets, tag_ids, tables.alias_prob, tables.alias, 13, 1, 5,
                                        exclude_own=False)
        fit = sampling.draw_fit(np.bincount(drawn.ravel(), minlength=size), images ** power)
        assert fit["tv_distance"] < 2 * fit["tv_noise"] and fit["p_value"] > 1e-3
    uniform = sampling.build_tables(images ** 0.0, images ** 0.0)
    pos_ids = sampling.draw_positives(photo_id, offsets, tag_ids, uniform.pos_weight, 13, 1, 3)
    slot = (pos_ids[:, :, None] == tag_ids.reshape(n, 3)[:, None, :]).argmax(axis=2)    # which own tag was drawn
    assert abs(np.bincount(slot.ravel(), minlength=3) / slot.size - 1 / 3).max() < 0.01


def test_without_exclusion_only_the_own_tag_draws_differ():
    rng = np.random.default_rng(5)
    size, n = 50, 3000
    offsets = np.arange(0, 4 * n + 1, 4)
    tag_ids = np.concatenate([np.sort(rng.choice(size, 4, replace=False)) for _ in range(n)]).astype(np.int32)
    tables = sampling.build_tables(np.arange(1, size + 1.0) ** 0.75, np.ones(size))
    args = (np.arange(n, dtype=np.int64), offsets, tag_ids, tables.alias_prob, tables.alias, 13, 2, 20)
    excluded, kept = sampling.draw_negatives(*args), sampling.draw_negatives(*args, exclude_own=False)
    own = np.zeros((n, size), bool)
    own[np.repeat(np.arange(n), 4), tag_ids] = True
    hit = own[np.arange(n)[:, None], kept]
    assert hit.mean() > 0.03 and not own[np.arange(n)[:, None], excluded].any()
    np.testing.assert_array_equal(excluded[~hit], kept[~hit])


def test_padded_tags_and_positive_shares():
    offsets, tag_ids = np.array([0, 2, 2, 5]), np.array([1, 4, 0, 2, 3], np.int32)
    np.testing.assert_array_equal(sampling.padded_tags(offsets, tag_ids, 4),
                                  [[1, 4, -1, -1], [-1, -1, -1, -1], [0, 2, 3, -1]])
    with pytest.raises(ValueError, match="carries 3 tags, more than the 2"):
        sampling.padded_tags(offsets, tag_ids, 2)
    np.testing.assert_allclose(sampling.positive_shares(offsets, tag_ids, np.array([1.0, 1, 2, 1, 3])),
                               [0.25, 0.25, 0.5, 0.25, 0.75])


@pytest.mark.parametrize("name", sorted(sampling.METHODS))
def test_every_methods_step_learns_and_touches_only_the_rows_it_scores(name):
    import keras

    rng = np.random.default_rng(6)
    size, rows = 40, 32
    lists = own_lists(rng, rows, size)
    batch = {"feature": rng.normal(size=(rows, 16)).astype(np.float16),
             "pos_ids": np.array([rng.choice(tags, 2) for tags in lists], np.int32),
             "neg_ids": rng.integers(0, size, (rows, 5)).astype(np.int32), "own_ids": padded(lists, 6)}
    initial = rng.normal(size=(size, 8)).astype(np.float32)
    keras.utils.set_random_seed(7)
    table = TagTable(initial, 0.1)
    # the log-Q correction where it is meant for (scores with and without it are both exercised)
    log_q = np.log(rng.uniform(0.5, 3, size)).astype(np.float32) if name in ("in_batch", "mixed") else None
    step = train.make_train_step(tf.distribute.get_strategy(), build_projection(16, 8, []),
                                 keras.optimizers.Adam(0.02), table, train.Objective("softmax", sampling.METHODS[name],
                                                                                     log_q))
    losses = [float(step(batch)) for _ in range(15)]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    scored = set(batch["pos_ids"].ravel()) | set(batch["own_ids"].ravel()) | set(batch["neg_ids"].ravel()) \
        if name != "full_softmax" else set(range(size))
    untouched = np.setdiff1d(np.arange(size), sorted(scored))
    np.testing.assert_array_equal(table.vectors.numpy()[untouched], initial[untouched])
