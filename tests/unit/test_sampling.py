"""pipeline.sampling: alias tables, counter-based draws, exclusion of own tags, Arrow batches."""
import io

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

from pipeline import sampling


def zipf_images(size, top=1_000_000):
    """Images per tag for a Zipf-like vocabulary, most frequent first."""
    return np.maximum(1.0, np.floor(top / np.arange(1, size + 1)))


def ragged_tags(rng, n, size, max_tags=12):
    """Random tag lists: (offsets int64[n+1], tag_ids int32), 1..max_tags unique ascending tags each."""
    counts = rng.integers(1, max_tags + 1, n)
    keys = np.unique(np.repeat(np.arange(n), counts) * size + rng.integers(0, size, counts.sum()))
    rows, tags = keys // size, (keys % size).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))])
    return offsets, tags


def tv_distance(counts, probabilities):
    return 0.5 * np.abs(counts / counts.sum() - probabilities).sum()


def test_alias_table_represents_the_weights_exactly():
    weights = np.concatenate([zipf_images(997) ** 0.75, [0.0, 0.0, 3.5]])
    prob, alias = sampling.build_alias(weights)
    size = len(weights)
    # Column i gives i with prob[i] and alias[i] otherwise; each column is picked with 1/V.
    implied = (prob + np.bincount(alias, weights=1 - prob, minlength=size)) / size
    np.testing.assert_allclose(implied, weights / weights.sum(), rtol=0, atol=1e-12)
    assert implied[997] == implied[998] == 0


def test_alias_draws_match_neg_weight_on_2m_draws():
    # 2M draws over V = 1000 Zipf^0.75 weights. Sampling noise alone gives a TV distance of about
    # 0.5 * sum_t sqrt(2 p_t (1 - p_t) / (pi N)) ~ 0.006 here, so the stated tolerance is TV < 0.01.
    weights = zipf_images(1000) ** 0.75
    expected = weights / weights.sum()
    prob, alias = sampling.build_alias(weights)
    bits = sampling.draw_bits(sampling.stream_key(13, 1, sampling.NEGATIVES),
                              np.arange(100_000)[:, None], np.arange(20))
    counts = np.bincount(sampling.alias_draw(prob, alias, bits).ravel(), minlength=1000)
    noise = 0.5 * np.sqrt(2 * expected * (1 - expected) / (np.pi * counts.sum())).sum()
    assert counts.sum() == 2_000_000
    assert tv_distance(counts, expected) < 0.01
    assert tv_distance(counts, expected) < 1.5 * noise
    assert stats.chisquare(counts, expected * counts.sum()).pvalue > 1e-4


def test_negatives_never_hit_own_tags_and_follow_the_restricted_distribution():
    rng = np.random.default_rng(1)
    size = 200
    weights = zipf_images(size) ** 0.75
    tables = sampling.build_tables(weights, zipf_images(size) ** -0.5)
    offsets, tag_ids = ragged_tags(rng, 5000, size)
    photo_id = rng.choice(2**40, 5000, replace=False).astype(np.int64)
    negatives = sampling.draw_negatives(photo_id, offsets, tag_ids, tables.alias_prob, tables.alias, 13, 1, 20)
    assert negatives.shape == (5000, 20) and negatives.dtype == np.int32
    own = np.zeros((5000, size), bool)
    own[np.repeat(np.arange(5000), np.diff(offsets)), tag_ids] = True
    assert not own[np.arange(5000)[:, None], negatives].any()

    # One image carrying the 3 heaviest tags (about 20% of the mass), drawn for 50k photo ids:
    # negatives follow neg_weight over the other tags, renormalized.
    one = np.array([0, 1, 2], np.int32)
    n = 50_000
    drawn = sampling.draw_negatives(np.arange(n, dtype=np.int64), np.arange(n + 1) * 3, np.tile(one, n),
                                    tables.alias_prob, tables.alias, 13, 1, 20)
    restricted = weights.copy()
    restricted[one] = 0
    counts = np.bincount(drawn.ravel(), minlength=size)
    assert counts[one].sum() == 0
    assert tv_distance(counts, restricted / restricted.sum()) < 0.01


def test_an_image_holding_almost_all_the_mass_still_gets_valid_negatives():
    # Tag 0 holds all but 1e-12 of neg_weight and the image carries it: every draw needs
    # NEGATIVE_TRIES redraws and then the uniform fallback over the tags it does not carry.
    weights = np.full(10, 1e-12)
    weights[0] = 1.0
    tables = sampling.build_tables(weights, np.ones(10))
    drawn = sampling.draw_negatives(np.arange(2000, dtype=np.int64), np.arange(2001) * 2,
                                    np.tile(np.array([0, 5], np.int32), 2000), tables.alias_prob, tables.alias,
                                    13, 1, 20)
    counts = np.bincount(drawn.ravel(), minlength=10)
    assert counts[0] == counts[5] == 0
    assert counts.min() == 0 and np.count_nonzero(counts) == 8
    assert stats.chisquare(counts[counts > 0]).pvalue > 1e-4  # uniform over the 8 absent tags

    with pytest.raises(ValueError, match="every tag"):
        sampling.draw_negatives(np.array([1]), np.array([0, 10]), np.arange(10, dtype=np.int32),
                                tables.alias_prob, tables.alias, 13, 1, 5)


def test_nth_absent_tag_matches_a_plain_enumeration():
    rng = np.random.default_rng(2)
    size = 30
    offsets, tag_ids = ragged_tags(rng, 50, size, max_tags=25)
    rows, ranks, expected = [], [], []
    for row in range(50):
        absent = sorted(set(range(size)) - set(tag_ids[offsets[row]:offsets[row + 1]].tolist()))
        rows += [row] * len(absent)
        ranks += range(len(absent))
        expected += absent
    got = sampling.nth_absent_tag(np.array(rows), np.array(ranks), offsets, tag_ids, size)
    assert got.tolist() == expected


def test_positives_come_from_own_tags_in_proportion_to_pos_weight():
    size = 100
    pos_weight = zipf_images(size) ** -0.5
    tables = sampling.build_tables(np.ones(size), pos_weight)
    own = np.array([0, 3, 40, 99], np.int32)
    n = 100_000
    drawn = sampling.draw_positives(np.arange(n, dtype=np.int64), np.arange(n + 1) * 4, np.tile(own, n),
                                    tables.pos_weight, 13, 1, 2)
    assert drawn.shape == (n, 2) and set(np.unique(drawn)) <= set(own)
    counts = np.bincount(drawn.ravel(), minlength=size)[own]
    expected = pos_weight[own] / pos_weight[own].sum()
    assert tv_distance(counts, expected) < 0.005
    assert counts[3] > counts[0]  # the rarest tag is drawn most


def test_draws_depend_only_on_seed_epoch_photo_and_slot():
    rng = np.random.default_rng(3)
    size = 300
    tables = sampling.build_tables(zipf_images(size) ** 0.75, zipf_images(size) ** -0.5)
    offsets, tag_ids = ragged_tags(rng, 1000, size)
    photo_id = rng.choice(2**40, 1000, replace=False).astype(np.int64)

    def draw(rows, epoch=1, seed=13):
        counts = np.diff(offsets)[rows]
        sub_offsets = np.concatenate([[0], np.cumsum(counts)])
        sub_tags = np.concatenate([tag_ids[offsets[r]:offsets[r + 1]] for r in rows])
        return (sampling.draw_positives(photo_id[rows], sub_offsets, sub_tags, tables.pos_weight, seed, epoch, 2),
                sampling.draw_negatives(photo_id[rows], sub_offsets, sub_tags, tables.alias_prob, tables.alias,
                                        seed, epoch, 20))

    whole = draw(np.arange(1000))
    # Another batch split and row order give the same draws per photo: partitioning cannot matter.
    permutation = rng.permutation(1000)
    for part in np.array_split(permutation, 7):
        for got, want in zip(draw(part), whole):
            np.testing.assert_array_equal(got, want[part])
    for other in (draw(np.arange(1000), epoch=2), draw(np.arange(1000), seed=14)):
        for got, want in zip(other, whole):
            assert (got != want).mean() > 0.5


def test_sample_batch_keeps_ndarray_codec_features_as_they_came():
    rng = np.random.default_rng(4)
    size, n, dim = 50, 300, 8
    tables = sampling.build_tables(zipf_images(size) ** 0.75, zipf_images(size) ** -0.5)
    offsets, tag_ids = ragged_tags(rng, n + 5, size)
    features = rng.normal(size=(n + 5, dim)).astype(np.float16)   # features/ holds float16[D]

    def encode(array):  # what Petastorm's NdarrayCodec stores
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    batch = pa.RecordBatch.from_arrays(
        [pa.array(np.arange(n + 5, dtype=np.int64)),
         pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(tag_ids)),
         pa.array([encode(f) for f in features], pa.binary())],
        names=["photo_id", "tag_ids", "feature"]).slice(5)  # a slice: offsets not starting at 0
    out = sampling.sample_batch(batch, tables, 13, 1, 2, 20)
    assert out.schema == sampling.output_schema(with_feature=True)
    assert out.column("feature").to_pylist() == batch.column("feature").to_pylist()
    decoded = np.stack([np.load(io.BytesIO(value)) for value in out.column("feature").to_pylist()])
    np.testing.assert_array_equal(decoded, features[5:])
    assert out.column("photo_id").to_pylist() == list(range(5, n + 5))
    neg_ids = np.array(out.column("neg_ids").to_pylist())
    pos_ids = np.array(out.column("pos_ids").to_pylist())
    assert neg_ids.shape == (n, 20) and pos_ids.shape == (n, 2)
    for row in range(n):
        own = set(tag_ids[offsets[row + 5]:offsets[row + 6]].tolist())
        assert set(pos_ids[row]) <= own and not set(neg_ids[row]) & own

    plain = pa.RecordBatch.from_arrays(batch.columns[:2], names=["photo_id", "tag_ids"])
    without = sampling.sample_batch(plain, tables, 13, 1, 2, 20)
    assert without.schema == sampling.output_schema(with_feature=False)
    assert without.column("neg_ids").equals(out.column("neg_ids"))


def test_bad_weights_are_refused():
    for bad in ([0.0, 0.0], [1.0, -1.0], [1.0, np.inf], []):
        with pytest.raises(ValueError):
            sampling.build_alias(np.array(bad))


def test_images_without_tags_get_plain_draws_beside_tagged_ones():
    size = 64
    tables = sampling.build_tables(np.ones(size), np.ones(size))
    offsets = np.array([0, 0, 2, 2, 3])  # images 0 and 2 carry no tag
    tag_ids = np.array([1, 63, 5], np.int32)
    drawn = sampling.draw_negatives(np.arange(4, dtype=np.int64), offsets, tag_ids, tables.alias_prob,
                                    tables.alias, 13, 1, 500)
    assert not {1, 63} & set(drawn[1]) and 5 not in drawn[3]
    assert {1, 63, 5} <= set(drawn[0]) | set(drawn[2])


def test_the_sampling_method_is_a_registry_entry_named_by_config():
    from pipeline import Im2vecError, config as configuration

    # The default is mixed (it won the demo's comparison); a config without the key (an older epoch's
    # manifest) means presampled, the only method there was.
    assert sampling.method(configuration.load()) is sampling.METHODS["mixed"]
    presampled = sampling.method({})
    assert presampled is sampling.METHODS["presampled"]
    assert presampled.written(2, 20) == (2, 20) and not presampled.own_ids
    assert sampling.METHODS["next_image"].written(2, 20) == (2, 0)
    with pytest.raises(Im2vecError, match=r"sampling: unknown method 'option_i'; known methods: full_softmax, "
                                          r"in_batch, mixed, next_image, presampled$"):
        sampling.method({"sampling": "option_i"})
