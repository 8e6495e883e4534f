"""Matrix-method correction of confusion counts for misclassified group labels."""

from __future__ import annotations

import time

import numpy as np
import pytest

from fairfer.group_labels.correction import (
    CORRECTION_ASSUMPTION,
    Correction,
    correct_counts,
    corrected_composition,
    misclassification_matrix,
    resample_confusion,
)


def mix(true_counts: np.ndarray, misclassification: np.ndarray) -> np.ndarray:
    """Expected counts per predicted group: sum_i P(pred=j | true=i) * true[i]."""
    return np.einsum("...ij,...iab->...jab", misclassification, true_counts)


def accuracy(counts: np.ndarray) -> np.ndarray:
    """Accuracy per group of (k, C, C) counts."""
    return np.trace(counts, axis1=-2, axis2=-1) / counts.sum(axis=(-2, -1))


def test_misclassification_matrix_rows_sum_to_one_and_empty_row_is_nan():
    confusion = np.array([[8, 2, 0], [0, 0, 0], [1, 1, 2]])
    m = misclassification_matrix(confusion)
    np.testing.assert_allclose(m[[0, 2]].sum(axis=1), 1.0)
    np.testing.assert_allclose(m[0], [0.8, 0.2, 0.0])
    assert np.isnan(m[1]).all()
    stacked = misclassification_matrix(np.stack([confusion, confusion + 1]))
    assert stacked.shape == (2, 3, 3)
    np.testing.assert_allclose(stacked[1].sum(axis=1), 1.0)


def test_exact_correction_recovers_hand_made_truth():
    true_counts = np.array(
        [
            [[50, 10], [5, 35]],
            [[20, 20], [10, 50]],
            [[5, 1], [2, 12]],
        ],
        dtype=float,
    )
    m = np.array([[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.05, 0.25, 0.7]])
    result = correct_counts(mix(true_counts, m), m)
    assert isinstance(result, Correction)
    np.testing.assert_allclose(result.counts, true_counts, atol=1e-9)
    assert result.counts.dtype == np.float64
    assert result.condition.shape == ()
    assert result.clipped_share.shape == ()
    assert result.clipped_share == pytest.approx(0.0, abs=1e-12)
    assert not result.ill_conditioned
    assert result.condition == pytest.approx(np.linalg.cond(m.T))


def test_identity_is_a_no_op():
    observed = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2)
    result = correct_counts(observed, np.eye(3))
    np.testing.assert_allclose(result.counts, observed)
    assert result.clipped_share.shape == (2,)
    assert not result.ill_conditioned.any()


def _simulate(rng, sizes, group_accuracy, m, n_classes):
    """True group, true emotion, predicted emotion, predicted group per simulated image."""
    group = np.repeat(np.arange(len(sizes)), sizes)
    n = len(group)
    emotion = rng.integers(0, n_classes, n)
    correct = rng.random(n) < np.asarray(group_accuracy)[group]
    wrong = (emotion + rng.integers(1, n_classes, n)) % n_classes
    prediction = np.where(correct, emotion, wrong)
    cdf = np.cumsum(m, axis=1)[group]
    predicted_group = (rng.random(n)[:, None] > cdf).sum(axis=1)
    return group, emotion, prediction, np.minimum(predicted_group, len(sizes) - 1)


def test_simulation_recovers_true_accuracies():
    rng = np.random.default_rng(2024)
    k, n_classes = 4, 3
    group_accuracy = np.array([0.9, 0.75, 0.6, 0.8])
    # Diagonal 0.75-0.8: misclassification mixes groups enough to pull the observed
    # accuracies together, and the validation estimate of it is precise enough for the
    # corrected accuracies to land within 0.02 (largest error 0.018 over 150 seeds).
    m = np.array(
        [
            [0.80, 0.08, 0.07, 0.05],
            [0.10, 0.75, 0.08, 0.07],
            [0.06, 0.10, 0.76, 0.08],
            [0.05, 0.07, 0.10, 0.78],
        ]
    )
    sizes = [24_000, 16_000, 12_000, 8_000]
    group, emotion, prediction, predicted_group = _simulate(
        rng, sizes, group_accuracy, m, n_classes
    )
    true_counts = np.zeros((k, n_classes, n_classes))
    np.add.at(true_counts, (group, emotion, prediction), 1)
    observed = np.zeros((k, n_classes, n_classes))
    np.add.at(observed, (predicted_group, emotion, prediction), 1)

    # Separate labelled validation set for the group classifier.
    val_group = rng.integers(0, k, 20_000)
    val_pred = (rng.random(len(val_group))[:, None] > np.cumsum(m, axis=1)[val_group]).sum(1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (val_group, np.minimum(val_pred, k - 1)), 1)

    result = correct_counts(observed, misclassification_matrix(confusion))
    truth = accuracy(true_counts)
    corrected = accuracy(result.counts)
    naive = accuracy(observed)
    np.testing.assert_allclose(corrected, truth, atol=0.02)
    assert np.abs(result.counts.sum(axis=(-2, -1)) - sizes).max() < 0.05 * min(sizes)
    # Misclassification pulls the observed groups together: the naive gap is visibly smaller.
    assert (truth.max() - truth.min()) - (naive.max() - naive.min()) > 0.05
    assert np.abs(naive - truth).max() > 0.05
    assert not result.ill_conditioned


def test_resample_confusion_streams_and_totals():
    confusion = np.array([[40, 5, 5], [3, 30, 7], [2, 8, 50]])
    a = resample_confusion(confusion, range(5), seed=11)
    b = resample_confusion(confusion, range(5), seed=11)
    tail = resample_confusion(confusion, range(3, 5), seed=11)
    assert a.shape == (5, 3, 3)
    assert a.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[3:], tail)
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a, resample_confusion(confusion, range(5), seed=12))
    np.testing.assert_array_equal(a.sum(axis=(1, 2)), confusion.sum())
    many = resample_confusion(confusion, range(2000), seed=3)
    np.testing.assert_allclose(many.mean(axis=0), confusion, atol=1.0)
    assert resample_confusion(np.zeros((2, 2), int), range(3), seed=0).sum() == 0
    with pytest.raises(ValueError):
        resample_confusion(np.array([[1.5, 0], [0, 1]]), range(2), seed=0)


def test_near_singular_matrix_is_flagged_without_raising():
    observed = np.array([[[10, 2], [1, 7]], [[8, 3], [2, 9]], [[5, 1], [1, 4]]], dtype=float)
    singular = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.1, 0.9]])
    result = correct_counts(observed, singular)
    assert result.ill_conditioned
    assert np.isnan(result.counts).all()
    assert not np.isfinite(result.condition) or result.condition > 1e12

    nearly = np.array([[0.5, 0.5, 0.0], [0.49, 0.51, 0.0], [0.0, 0.1, 0.9]])
    result = correct_counts(observed, nearly)
    assert result.ill_conditioned
    assert np.isfinite(result.counts).all()
    assert (result.counts >= 0).all()
    assert result.condition > 50

    nan = np.full((3, 3), np.nan)
    result = correct_counts(observed, nan)
    assert result.ill_conditioned
    assert np.isnan(result.counts).all()
    assert np.isnan(result.condition)


def test_singular_draw_does_not_spoil_other_draws():
    rng = np.random.default_rng(0)
    k, n_classes = 3, 2
    true_counts = rng.integers(5, 50, (4, k, n_classes, n_classes)).astype(float)
    m = np.stack([np.eye(k) * 0.7 + 0.1] * 4)
    m[2] = np.nan
    m[3] = [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]
    observed = mix(true_counts[:2], m[:2])
    observed = np.concatenate([observed, true_counts[2:]])
    result = correct_counts(observed, m)
    np.testing.assert_allclose(result.counts[:2], true_counts[:2], atol=1e-9)
    assert np.isnan(result.counts[2:]).all()
    np.testing.assert_array_equal(result.ill_conditioned, [False, False, True, True])


def test_clipping_is_recorded_and_flagged():
    m = np.array([[0.9, 0.1], [0.1, 0.9]])
    # Group 1 observed far less than misclassification of group 0 alone would produce.
    observed = np.array([[[100.0, 0.0], [0.0, 100.0]], [[1.0, 0.0], [0.0, 1.0]]])
    result = correct_counts(observed, m)
    assert (result.counts >= 0).all()
    raw = np.linalg.solve(m.T, observed.reshape(2, -1))
    negative = -raw[raw < 0].sum()
    assert result.clipped_share == pytest.approx(negative / np.abs(raw).sum())
    assert result.ill_conditioned
    assert not correct_counts(observed, m, max_clipped_share=0.5).ill_conditioned


def test_broadcasting_matches_loop():
    rng = np.random.default_rng(5)
    runs, draws, k, n_classes = 2, 5, 3, 2
    observed = rng.integers(0, 40, (runs, draws, k, n_classes, n_classes)).astype(float)
    confusion = rng.integers(1, 10, (draws, k, k)) + np.eye(k, dtype=int) * 30
    m = misclassification_matrix(confusion)
    result = correct_counts(observed, m)
    assert result.counts.shape == observed.shape
    assert result.condition.shape == (draws,)
    assert result.clipped_share.shape == (runs, draws)
    assert result.ill_conditioned.shape == (runs, draws)
    for r in range(runs):
        for d in range(draws):
            single = correct_counts(observed[r, d], m[d])
            np.testing.assert_allclose(result.counts[r, d], single.counts, atol=1e-9)
            assert result.clipped_share[r, d] == pytest.approx(single.clipped_share)
            assert result.ill_conditioned[r, d] == single.ill_conditioned
            assert result.condition[d] == pytest.approx(single.condition)

    one = correct_counts(observed[:, 0], m[0])
    assert one.counts.shape == (runs, k, n_classes, n_classes)
    np.testing.assert_allclose(one.counts, result.counts[:, 0], atol=1e-9)


def test_large_batch_is_fast():
    rng = np.random.default_rng(1)
    runs, draws, k, n_classes = 20, 1000, 9, 8
    observed = rng.integers(0, 30, (runs, draws, k, n_classes, n_classes)).astype(float)
    confusion = rng.integers(0, 5, (draws, k, k)) + np.eye(k, dtype=int) * 60
    m = misclassification_matrix(confusion)
    start = time.perf_counter()
    result = correct_counts(observed, m)
    elapsed = time.perf_counter() - start
    assert result.counts.shape == observed.shape
    assert elapsed < 3.0


def test_corrected_composition_recovers_known_composition():
    composition = np.array([500.0, 300.0, 200.0])
    m = np.array([[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.05, 0.25, 0.7]])
    observed = composition @ m
    estimate, ill = corrected_composition(observed, m)
    np.testing.assert_allclose(estimate, composition, atol=1e-9)
    assert ill is False
    stacked, ill = corrected_composition(np.stack([observed, observed]), np.stack([m, m]))
    np.testing.assert_allclose(stacked, [composition, composition], atol=1e-9)
    assert not ill
    _, ill = corrected_composition(observed, np.full((3, 3), np.nan))
    assert ill is True


def test_assumption_is_one_sentence():
    assert CORRECTION_ASSUMPTION.endswith(".")
    assert CORRECTION_ASSUMPTION.count(". ") == 0
    assert "independent" in CORRECTION_ASSUMPTION
