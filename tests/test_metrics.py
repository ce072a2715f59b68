"""Agreement scores between labellings, checked against scikit-learn, scipy and hand counts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import entropy
from sklearn import metrics as skm

from multimodal_seg.metrics import (
    adjusted_rand,
    adjusted_rand_fast,
    agreement,
    contingency,
    many_to_one_accuracy,
    many_to_one_bounded,
    matched_labels,
    mean_iou,
    nmi,
    variation_of_information,
)


def _noisy_pair(seed: int, n: int = 2000, k_truth: int = 4, k_pred: int = 6, flip: float = 0.3):
    """A truth and a prediction that agrees with it up to splits and random flips."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k_truth, n)
    pred = (truth * 2 + rng.integers(0, 2, n)) % k_pred  # split truth labels
    noisy = rng.random(n) < flip
    pred[noisy] = rng.integers(0, k_pred, noisy.sum())
    return pred, truth


def _entropy_nats(labels: np.ndarray) -> float:
    return float(entropy(np.unique(labels, return_counts=True)[1]))


def _joint_entropy_nats(a: np.ndarray, b: np.ndarray) -> float:
    return float(entropy(np.unique(np.stack([a, b]), axis=1, return_counts=True)[1]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ari_and_nmi_match_sklearn(seed):
    pred, truth = _noisy_pair(seed)
    assert adjusted_rand(pred, truth) == pytest.approx(skm.adjusted_rand_score(truth, pred), abs=1e-12)
    assert nmi(pred, truth) == pytest.approx(
        skm.normalized_mutual_info_score(truth, pred, average_method="arithmetic"), abs=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_ari_equals_sklearn(seed):
    pred, truth = _noisy_pair(seed)
    assert adjusted_rand_fast(pred, truth) == pytest.approx(skm.adjusted_rand_score(truth, pred), abs=1e-12)
    rng = np.random.default_rng(seed)
    sparse_ids = rng.choice([0, 7, 30], 500)  # unused ids in between do not matter
    other = rng.integers(0, 4, 500)
    assert adjusted_rand_fast(sparse_ids, other) == pytest.approx(
        skm.adjusted_rand_score(sparse_ids, other), abs=1e-12)
    # degenerate partitions, as scikit-learn scores them
    one, singletons = np.zeros(50, int), np.arange(50)
    for a, b in [(one, one), (singletons, singletons), (one, singletons), (one, other[:50])]:
        assert adjusted_rand_fast(a, b) == pytest.approx(skm.adjusted_rand_score(a, b), abs=1e-12)


def test_identical_partitions_score_perfectly_whatever_the_ids():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 5, (40, 50))  # image-shaped label maps are accepted
    perm = rng.permutation(5) + 10  # same partition, other ids
    pred = perm[truth]
    assert adjusted_rand(pred, truth) == pytest.approx(1.0)
    assert nmi(pred, truth) == pytest.approx(1.0)
    assert variation_of_information(pred, truth) == pytest.approx(0.0, abs=1e-12)
    assert many_to_one_accuracy(pred, truth) == pytest.approx(1.0)
    assert mean_iou(pred, truth) == pytest.approx(1.0)


def test_independent_labellings_score_near_chance():
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 4, 20000), rng.integers(0, 4, 20000)
    assert abs(adjusted_rand(a, b)) < 0.01
    assert nmi(a, b) < 0.01
    # Independent: VI is close to H(A) + H(B).
    assert variation_of_information(a, b) == pytest.approx(_entropy_nats(a) + _entropy_nats(b), rel=1e-3)


@pytest.mark.parametrize("seed", [5, 6])
def test_variation_of_information_equals_entropies_minus_twice_mutual_information(seed):
    pred, truth = _noisy_pair(seed)
    h_a, h_b = _entropy_nats(pred), _entropy_nats(truth)
    mutual = h_a + h_b - _joint_entropy_nats(pred, truth)  # I = H(A) + H(B) - H(A, B)
    assert mutual == pytest.approx(skm.mutual_info_score(truth, pred), abs=1e-10)
    vi = variation_of_information(pred, truth)
    assert vi == pytest.approx(h_a + h_b - 2 * mutual, abs=1e-10)
    assert vi == pytest.approx(variation_of_information(truth, pred), abs=1e-12)  # symmetric
    assert vi > 0


def test_variation_of_information_is_a_metric_on_partitions():
    rng = np.random.default_rng(7)
    a, b, c = (rng.integers(0, k, 3000) for k in (3, 4, 5))
    vab, vbc, vac = (variation_of_information(*p) for p in ((a, b), (b, c), (a, c)))
    assert vac <= vab + vbc + 1e-12  # triangle inequality
    # Refining a partition: VI equals the extra entropy, H(fine) - H(coarse).
    fine = rng.integers(0, 8, 3000)
    coarse = fine // 2
    assert variation_of_information(fine, coarse) == pytest.approx(
        _entropy_nats(fine) - _entropy_nats(coarse), abs=1e-10
    )


@pytest.mark.parametrize("seed", [8, 9])
def test_many_to_one_accuracy_against_a_direct_count(seed):
    pred, truth = _noisy_pair(seed)
    right = 0
    for label in np.unique(pred):
        right += np.bincount(truth[pred == label]).max()  # majority truth of this label
    assert many_to_one_accuracy(pred, truth) == pytest.approx(right / pred.size)


def test_many_to_one_rewards_over_segmentation():
    truth = np.repeat([0, 1], 50)
    pred = np.arange(100)  # every position its own label
    assert many_to_one_accuracy(pred, truth) == 1.0
    assert adjusted_rand(pred, truth) < 0.05


def test_bounded_many_to_one_stops_rewarding_over_segmentation():
    truth = np.repeat([0, 1], 50)
    pred = np.arange(100)  # every position its own label
    assert many_to_one_bounded(pred, truth, 4) == pytest.approx(0.04)
    # Two big communities (40 + 40 right) plus 20 singletons: with 2 allowed, the
    # singletons count as wrong; with room for all, it equals the unbounded score.
    pred = np.concatenate([np.zeros(40), np.arange(2, 12), np.ones(40), np.arange(12, 22)]).astype(int)
    assert many_to_one_bounded(pred, truth, 2) == pytest.approx(0.8)
    assert many_to_one_bounded(pred, truth, 100) == many_to_one_accuracy(pred, truth) == 1.0
    with pytest.raises(ValueError):
        many_to_one_bounded(pred, truth, 0)


def test_mean_iou_hand_example():
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 2])
    # Best one-to-one matching pairs each pred label with the same truth id:
    #   P0 = {0,1,2}       vs T0 = {0,1,2,3}: 3 / 4
    #   P1 = {3,...,8}     vs T1 = {4,...,7}: 4 / 6
    #   P2 = {9}           vs T2 = {8,9}    : 1 / 2
    # Any other pairing loses (e.g. P1-T0 is 1/9).  Mean over the 3 truth labels:
    expected = (3 / 4 + 4 / 6 + 1 / 2) / 3
    assert mean_iou(pred, truth) == pytest.approx(expected)


def test_mean_iou_scores_unmatched_truth_as_zero():
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    pred = np.array([5, 5, 5, 5, 7, 7, 7, 7, 7, 7])
    # P5-T0: 4/4; P7-T1: 4/6 (better than P7-T2: 2/6); T2 has no partner: 0.
    assert mean_iou(pred, truth) == pytest.approx((1 + 4 / 6 + 0) / 3)


def test_mean_iou_ignores_extra_predicted_labels():
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 0, 3, 1, 1, 1, 1])
    # P0-T0: 3/4, P1-T1: 4/4; P3 left over costs nothing beyond T0's missing pixel.
    assert mean_iou(pred, truth) == pytest.approx((3 / 4 + 1) / 2)


def test_mean_iou_matches_brute_force_over_all_matchings():
    from itertools import permutations

    rng = np.random.default_rng(10)
    truth = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.6, truth, rng.integers(0, 4, 300))
    pred = np.array([3, 0, 2, 1])[pred]  # ids scrambled
    best = 0.0
    for perm in permutations(range(4)):
        ious = [((pred == p) & (truth == t)).sum() / ((pred == p) | (truth == t)).sum() for t, p in enumerate(perm)]
        best = max(best, float(np.mean(ious)))
    assert mean_iou(pred, truth) == pytest.approx(best)


def test_matched_labels_take_the_ids_of_the_regions_they_overlap_most():
    # a segmentation of four blocks, and a truth of the same blocks under other ids, one of
    # them split in two: each true region takes its block's id, the smaller half a new id
    pred = np.repeat(np.repeat(np.array([[5, 2], [7, 9]]), 4, axis=0), 4, axis=1)
    truth = np.repeat(np.repeat(np.array([[0, 1], [3, 2]]), 4, axis=0), 4, axis=1)
    np.testing.assert_array_equal(matched_labels(truth, pred), pred)
    truth[6:, 4:] = 4  # the lower right block: 8 positions of 2, 8 of the new 4, then 4 more
    truth[4:6, 6:] = 4
    shown = matched_labels(truth, pred)
    assert shown[truth == 4].tolist() == [9] * 12 and shown[truth == 2].tolist() == [10] * 4
    np.testing.assert_array_equal(shown[truth < 2], pred[truth < 2])
    # no label stays no label; positions the reference has no label for count for nothing
    truth[0, 0], pred[0, :4] = -1, -1
    shown = matched_labels(truth, pred)
    assert shown[0, 0] == -1 and shown[0, 1] == 5
    with pytest.raises(ValueError, match="differ in shape"):
        matched_labels(truth, pred[:4])


def test_a_label_without_a_region_of_its_own_gets_a_new_id():
    # two communities split the left half, one holds the right; the reference has the left
    # half, most of the right, and a strip at the right edge.  The matching pairs the second
    # left community with the strip, which it does not touch: it takes a new id instead
    labels = np.repeat(np.array([[0, 0, 1, 1, 2, 2, 2, 2]]), 4, axis=0)
    reference = np.repeat(np.array([[7, 7, 7, 7, 3, 3, 3, 5]]), 4, axis=0)
    shown = matched_labels(labels, reference)
    np.testing.assert_array_equal(shown[labels == 2], 3)
    assert sorted([int(shown[labels == 0][0]), int(shown[labels == 1][0])]) == [7, 8]


def test_matched_labels_maximise_the_overlap_over_all_pairings():
    from itertools import permutations

    rng = np.random.default_rng(11)
    truth = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.5, truth, rng.integers(0, 4, 300))
    pred = np.array([30, 10, 20, 40])[pred]  # ids scrambled and spread out
    ids = [10, 20, 30, 40]
    best = max(sum(int(((truth == t) & (pred == p)).sum()) for t, p in enumerate(perm))
               for perm in permutations(ids))
    shown = matched_labels(truth, pred)
    assert set(np.unique(shown)) <= set(ids)  # one to one: every region found a partner
    assert int((shown == pred).sum()) == best
    # the labels themselves are kept apart: a renaming, not a merge
    assert adjusted_rand(shown, truth) == pytest.approx(1.0)


def test_negative_labels_are_ignored_on_either_side():
    pred, truth = _noisy_pair(11, n=1500)
    rng = np.random.default_rng(11)
    pred_m, truth_m = pred.copy(), truth.copy()
    pred_m[rng.random(pred.size) < 0.1] = -1
    truth_m[rng.random(truth.size) < 0.1] = -1
    keep = (pred_m >= 0) & (truth_m >= 0)
    full = agreement(pred_m, truth_m)
    clean = agreement(pred[keep], truth[keep])
    assert full == pytest.approx(clean)
    # And an explicit check that the sklearn score on the kept positions is what we get.
    assert full["ari"] == pytest.approx(skm.adjusted_rand_score(truth[keep], pred[keep]))
    assert contingency(pred_m, truth_m).sum() == keep.sum()


@pytest.mark.parametrize("seed", [12, 13])
def test_scores_are_invariant_to_relabelling(seed):
    pred, truth = _noisy_pair(seed)
    rng = np.random.default_rng(seed)
    pred2 = (rng.permutation(pred.max() + 1) * 3 + 1)[pred]
    truth2 = rng.permutation(truth.max() + 1)[truth]
    assert agreement(pred2, truth2) == pytest.approx(agreement(pred, truth), abs=1e-12)


def test_agreement_collects_every_score():
    pred, truth = _noisy_pair(14)
    scores = agreement(pred, truth)
    assert scores["ari"] == pytest.approx(adjusted_rand(pred, truth))
    assert scores["nmi"] == pytest.approx(nmi(pred, truth))
    assert scores["vi"] == pytest.approx(variation_of_information(pred, truth))
    assert scores["many_to_one"] == pytest.approx(many_to_one_accuracy(pred, truth))
    assert scores["miou"] == pytest.approx(mean_iou(pred, truth))
    assert scores["n_pred"] == 6 and scores["n_truth"] == 4


def test_contingency_counts_label_pairs():
    pred = np.array([0, 0, 1, 1, 1, 2])
    truth = np.array([1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(contingency(pred, truth), [[0, 2], [2, 1], [1, 0]])


def test_mismatched_sizes_raise():
    with pytest.raises(ValueError):
        adjusted_rand(np.zeros(5, int), np.zeros(6, int))
