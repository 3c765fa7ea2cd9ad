"""pipeline/classify.py: ZeroShotCoder on hand-made vectors, then on the real model and codebook."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from pipeline.classify import (NO_CODE, TWO_SIDED_DEFINITION_WEIGHT, ZeroShotCoder, codebook_training_set,
                               fit_zero_shot_coder, prototype_weights)
from pipeline.store import Store

E = np.eye(4)

# Three prototypes per code, each exactly on its own axis, and two uncoded ones on the fourth axis.
# Labels are deliberately not in sorted order.
X_TRAIN = np.vstack([E[0], E[0], E[0], E[1], E[1], E[1], E[2], E[2], E[2], E[3], E[3]])
Y_TRAIN = ["LA02"] * 3 + ["BR01"] * 3 + ["LA01"] * 3 + [NO_CODE] * 2
# After sorting, the columns are BR01 (axis 1), LA01 (axis 2), LA02 (axis 0).

# Thresholds by hand: leave-one-out, a prototype's own centroid is still its axis (score 1.0), and every
# other prototype scores 0.0 against that code. Sorted scores for a code are 1, 1, 1, 0, ..., 0; the best
# F1 (= 1) is after the third 1, so the cut-off is the midpoint (1 + 0) / 2 = 0.5; shifted by -0.05 -> 0.45.
HAND_THRESHOLD = 0.5 - 0.05


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


@pytest.fixture
def coder():
    return ZeroShotCoder().fit(X_TRAIN, Y_TRAIN)


def test_fit_learns_sorted_classes_axis_centroids_and_hand_thresholds(coder):
    assert coder.classes_.tolist() == ["BR01", "LA01", "LA02"]
    assert coder.n_features_in_ == 4
    np.testing.assert_allclose(coder.centroids_, [E[1], E[2], E[0]])
    np.testing.assert_allclose(coder.uncoded_prototypes_, [E[3], E[3]])
    np.testing.assert_allclose(coder.thresholds_, [HAND_THRESHOLD] * 3)


def test_shapes_of_predict_and_decision_function(coder):
    X = np.array([[1.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0.5, 0], [0, 0, 0, 1.0], [1.0, 1.0, 0, 0]])
    scores = coder.decision_function(X)
    predicted = coder.predict(X)
    assert scores.shape == predicted.shape == (5, 3)
    assert predicted.dtype == np.int8
    # Rows are normalised, so scores are cosines: [1,0,0,0] -> LA02 column = 1.
    np.testing.assert_allclose(scores[0], [0, 0, 1])
    np.testing.assert_allclose(scores[1], [1, 0, 0])
    assert predicted.tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1]]
    with pytest.raises(ValueError, match="3 features"):
        coder.predict(np.ones((2, 3)))


def test_thresholds_stay_within_bounds():
    low_high = ZeroShotCoder(threshold_bounds=(0.6, 0.7)).fit(X_TRAIN, Y_TRAIN)
    np.testing.assert_allclose(low_high.thresholds_, [0.6] * 3)  # 0.45 lifted to the lower bound
    capped = ZeroShotCoder(threshold_bounds=(0.2, 0.3)).fit(X_TRAIN, Y_TRAIN)
    np.testing.assert_allclose(capped.thresholds_, [0.3] * 3)  # 0.45 cut to the upper bound
    shifted = ZeroShotCoder(threshold_shift=0.1).fit(X_TRAIN, Y_TRAIN)
    np.testing.assert_allclose(shifted.thresholds_, [0.6] * 3)  # 0.5 + 0.1, within (0.2, 0.7)


def test_noisy_prototypes_keep_thresholds_within_bounds():
    rng = np.random.default_rng(3)
    X = np.vstack([E[i % 3] + 0.4 * rng.standard_normal(4) for i in range(30)])
    y = [["LA01", "LA02", "BR01"][i % 3] for i in range(30)]
    for bounds in ((0.2, 0.7), (0.35, 0.4)):
        coder = ZeroShotCoder(threshold_bounds=bounds).fit(X, y)
        assert ((coder.thresholds_ >= bounds[0]) & (coder.thresholds_ <= bounds[1])).all()


# A passage between three codes. Normalised: |(0.62, 0.6, 0.5, 0)| = sqrt(0.3844 + 0.36 + 0.25) = 0.9972,
# so scores are LA02 0.6217, BR01 0.6017, LA01 0.5014 (all above the 0.45 thresholds).
BETWEEN = np.array([[0.62, 0.6, 0.5, 0.0]])


def test_margin_keeps_codes_near_the_best(coder):
    np.testing.assert_allclose(coder.decision_function(BETWEEN)[0], [0.6017, 0.5014, 0.6217], atol=1e-4)
    # margin 0.05: best - margin = 0.5717, so BR01 (0.6017) and LA02 are in, LA01 (0.5014) is out.
    assert coder.predict(BETWEEN).tolist() == [[1, 0, 1]]
    wide = ZeroShotCoder(margin=0.2).fit(X_TRAIN, Y_TRAIN)
    assert wide.predict(BETWEEN).tolist() == [[1, 1, 1]]
    narrow = ZeroShotCoder(margin=0.0).fit(X_TRAIN, Y_TRAIN)
    assert narrow.predict(BETWEEN).tolist() == [[0, 0, 1]]


def test_max_codes_caps_the_strongest(coder):
    for max_codes, expected in ((1, [[0, 0, 1]]), (2, [[1, 0, 1]]), (3, [[1, 1, 1]])):
        capped = ZeroShotCoder(margin=0.2, max_codes=max_codes).fit(X_TRAIN, Y_TRAIN)
        assert capped.predict(BETWEEN).tolist() == expected


def test_uncoded_gate_gives_no_code_to_a_passage_nearest_the_uncoded_examples(coder):
    # (0.6, 0, 0, 0.8): LA02 scores 0.6 (>= 0.45 and the best) but the uncoded examples score 0.8.
    passage = np.array([[0.6, 0.0, 0.0, 0.8]])
    scores, uncoded = coder.score_codes(passage)
    np.testing.assert_allclose(scores[0], [0.0, 0.0, 0.6])
    np.testing.assert_allclose(uncoded, [0.8])
    assert coder.predict(passage).tolist() == [[0, 0, 0]]
    # Without uncoded examples the same passage gets LA02: the gate is what held it back.
    no_negatives = ZeroShotCoder().fit(X_TRAIN[:9], Y_TRAIN[:9])
    assert no_negatives.uncoded_prototypes_ is None
    assert no_negatives.predict(passage).tolist() == [[0, 0, 1]]
    # Closer to the code than to the uncoded examples: coded.
    assert coder.predict(np.array([[0.8, 0.0, 0.0, 0.6]])).tolist() == [[0, 0, 1]]


def test_apply_thresholds_matches_predict(coder):
    X = np.vstack([BETWEEN, [[0.6, 0.0, 0.0, 0.8]], [[0.0, 0.0, 1.0, 0.0]]])
    assert np.array_equal(coder.apply_thresholds(*coder.score_codes(X)), coder.predict(X))


@pytest.mark.parametrize("params, message", [
    ({"max_codes": 0}, "max_codes"),
    ({"max_codes": 1.5}, "max_codes"),
    ({"margin": -0.1}, "margin"),
    ({"margin": 2.5}, "margin"),
    ({"threshold_bounds": (0.7, 0.2)}, "threshold_bounds"),
    ({"threshold_bounds": (-1.5, 0.5)}, "threshold_bounds"),
])
def test_invalid_params_raise_in_fit_not_in_init(params, message):
    coder = ZeroShotCoder(**params)  # scikit-learn convention: __init__ only stores
    with pytest.raises(ValueError, match=message):
        coder.fit(X_TRAIN, Y_TRAIN)


def test_invalid_data_raises():
    with pytest.raises(ValueError, match="one row per label"):
        ZeroShotCoder().fit(X_TRAIN, Y_TRAIN[:-1])
    with pytest.raises(ValueError, match="names no code"):
        ZeroShotCoder().fit(X_TRAIN[:2], [NO_CODE, None])
    with pytest.raises(NotFittedError):
        ZeroShotCoder().predict(X_TRAIN)


def test_clone_and_get_params_round_trip(coder):
    custom = ZeroShotCoder(margin=0.1, max_codes=2, threshold_shift=0.0, threshold_bounds=(0.1, 0.9),
                           uncoded_neighbours=5)
    params = custom.get_params()
    assert params == {"margin": 0.1, "max_codes": 2, "threshold_shift": 0.0, "threshold_bounds": (0.1, 0.9),
                      "uncoded_neighbours": 5}
    assert ZeroShotCoder(**params).get_params() == params
    fitted = custom.fit(X_TRAIN, Y_TRAIN)
    copy = clone(fitted)
    assert copy.get_params() == params
    assert not hasattr(copy, "thresholds_")  # clone gives an unfitted copy
    copy.fit(X_TRAIN, Y_TRAIN)
    assert np.array_equal(copy.predict(BETWEEN), fitted.predict(BETWEEN))
    assert copy.set_params(margin=0.3).margin == 0.3


def test_fingerprint_is_stable_and_tracks_params_and_data(coder):
    again = ZeroShotCoder().fit(X_TRAIN, Y_TRAIN)
    assert len(coder.fingerprint()) == 8
    assert again.fingerprint() == coder.fingerprint()
    assert ZeroShotCoder(margin=0.1).fit(X_TRAIN, Y_TRAIN).fingerprint() != coder.fingerprint()
    assert ZeroShotCoder(max_codes=2).fit(X_TRAIN, Y_TRAIN).fingerprint() != coder.fingerprint()
    moved = X_TRAIN.copy()
    moved[0] = [1.0, 0.3, 0.0, 0.0]
    assert ZeroShotCoder().fit(moved, Y_TRAIN).fingerprint() != coder.fingerprint()
    with pytest.raises(NotFittedError):
        ZeroShotCoder().fingerprint()


def test_codebook_training_set(codebook):
    texts, labels = codebook_training_set(codebook)
    first = codebook.codes[0]
    per_code = 1 + len(first.include) + len(first.restatements) + len(first.examples)
    assert texts[:per_code] == [f"{first.label}. {first.definition}", *first.include, *first.restatements,
                                *first.examples]
    assert labels[:per_code] == [first.id] * per_code
    assert len(texts) == sum(1 + len(c.include) + len(c.restatements) + len(c.examples)
                             for c in codebook.codes) + len(codebook.uncoded_examples)
    assert labels.count(NO_CODE) == len(codebook.uncoded_examples) > 0
    assert texts[-1] == codebook.uncoded_examples[-1]


def test_prototype_weights_give_each_side_of_a_code_its_share(codebook):
    _, labels = codebook_training_set(codebook)
    weights = prototype_weights(codebook, 0.5, 0.3)
    assert len(weights) == len(labels)
    first = codebook.codes[0]
    sides = np.cumsum([0, 1 + len(first.include), len(first.restatements), len(first.examples)])
    shares = [weights[a:b].sum() for a, b in zip(sides[:-1], sides[1:])]
    assert shares == pytest.approx([0.5, 0.3, 0.2])
    for code in codebook.codes:
        assert weights[np.array(labels) == code.id].sum() == pytest.approx(1.0)
    assert (weights[np.array(labels) == NO_CODE] == 1.0).all()
    with pytest.raises(ValueError, match="add up to at most 1"):
        prototype_weights(codebook, 0.8, 0.4)


def test_a_code_without_restatements_keeps_two_sides(codebook):
    plain = replace(codebook, codes=tuple(replace(c, restatements=()) for c in codebook.codes))
    _, labels = codebook_training_set(plain)
    weights = prototype_weights(plain)
    first = plain.codes[0]
    definition_rows = 1 + len(first.include)
    assert weights[:definition_rows].sum() == pytest.approx(TWO_SIDED_DEFINITION_WEIGHT)
    assert weights[definition_rows:definition_rows + len(first.examples)].sum() == pytest.approx(
        1 - TWO_SIDED_DEFINITION_WEIGHT)


def test_sample_weight_moves_a_codes_centroid_towards_its_heavier_prototypes():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-0.7, -0.7]])
    y = ["LA01", "LA01", "BR01", "BR01"]
    even = ZeroShotCoder().fit(X, y)
    leaning = ZeroShotCoder().fit(X, y, sample_weight=[0.9, 0.1, 0.5, 0.5])
    la01 = list(even.classes_).index("LA01")
    assert even.centroids_[la01] == pytest.approx([2 ** -0.5, 2 ** -0.5])
    assert leaning.centroids_[la01] == pytest.approx(np.array([0.9, 0.1]) / np.hypot(0.9, 0.1))
    ignored = ZeroShotCoder().fit(X, y, sample_weight=[1.0, 0.0, 0.5, 0.5])
    assert ignored.centroids_[la01] == pytest.approx([1.0, 0.0])
    with pytest.raises(ValueError, match="one non-negative weight per row"):
        ZeroShotCoder().fit(X, y, sample_weight=[1.0, -1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="one non-negative weight per row"):
        ZeroShotCoder().fit(X, y, sample_weight=[1.0, 1.0])


# the real model and codebook -------------------------------------------------

@pytest.fixture(scope="module")
def real_coder(embedder, codebook, tmp_path_factory):
    with Store(tmp_path_factory.mktemp("classify") / "q.duckdb") as store:
        yield (*fit_zero_shot_coder(codebook, embedder, store), store)


@pytest.mark.slow
def test_fit_zero_shot_coder_on_the_shipped_codebook(real_coder, codebook, embedder):
    coder, coder_id, store = real_coder
    assert coder.classes_.tolist() == sorted(codebook.ids)
    assert coder_id == f"zero-shot:{embedder.model_id}:{coder.fingerprint()}"
    assert ((coder.thresholds_ >= 0.2) & (coder.thresholds_ <= 0.7)).all()
    texts, _ = codebook_training_set(codebook)
    assert store.count("embeddings") == len(set(texts))
    # Refitting from the cache gives the same coder id.
    assert fit_zero_shot_coder(codebook, embedder, store)[1] == coder_id


@pytest.mark.slow
def test_on_topic_sentence_gets_its_code_and_small_talk_gets_none(real_coder, embedder):
    coder, _, _ = real_coder
    texts = [
        "We pooled our budget with the NHS trust and the voluntary sector, so one joint team "
        "commissions care for the whole town.",
        "Shall I pour the coffee?",
    ]
    vectors = embedder.encode(texts)
    scores = coder.decision_function(vectors)
    applied = coder.predict(vectors)
    classes = coder.classes_.tolist()
    assert classes[int(np.argmax(scores[0]))] == "LA02"
    assert applied[0, classes.index("LA02")] == 1
    assert applied[1].sum() == 0


def test_the_uncoded_score_is_the_mean_of_the_nearest_uncoded_examples():
    X = np.vstack([E[0], E[0], unit([0, 1, 0, 0]), unit([0, 0, 1, 0]), unit([0, 0, 0, 1])])
    y = ["LA01", "LA01", NO_CODE, NO_CODE, NO_CODE]
    passage = np.array([unit([0.3, 0.8, 0.5, 0.0])])
    _, nearest_one = ZeroShotCoder(uncoded_neighbours=1).fit(X, y).score_codes(passage)
    _, nearest_two = ZeroShotCoder(uncoded_neighbours=2).fit(X, y).score_codes(passage)
    _, all_three = ZeroShotCoder(uncoded_neighbours=9).fit(X, y).score_codes(passage)
    np.testing.assert_allclose(nearest_one, passage[0, 1])
    np.testing.assert_allclose(nearest_two, (passage[0, 1] + passage[0, 2]) / 2)
    np.testing.assert_allclose(all_three, passage[0, 1:].sum() / 3)  # more neighbours than examples: all of them
    _, centroid = ZeroShotCoder(uncoded_neighbours=None).fit(X, y).score_codes(passage)
    np.testing.assert_allclose(centroid, passage[0] @ unit([0, 1, 1, 1]))  # the rule qcode first shipped with
    with pytest.raises(ValueError, match="uncoded_neighbours must be a positive integer or None"):
        ZeroShotCoder(uncoded_neighbours=0).fit(X, y)
