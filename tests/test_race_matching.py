"""Calibrated attribute classifiers on synthetic embeddings with known structure."""

import numpy as np
import pandas as pd
import pytest

from fairfer.group_labels.classifiers import (
    class_scores,
    composition,
    evaluate,
    expected_calibration_error,
    fit_attribute_classifier,
    fit_temperature,
    label_targets,
)


def blobs(n_per_class: int, classes: list[str], spread: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(classes), 16)) * 2
    x = np.concatenate([c + rng.normal(scale=spread, size=(n_per_class, 16)) for c in centres])
    y = [name for name in classes for _ in range(n_per_class)]
    return x, y


@pytest.mark.parametrize("classes", [["a", "b", "c"], ["Male", "Female"]])
def test_classifier_is_accurate_and_calibrated_on_separable_groups(classes):
    x, y = blobs(150, classes, spread=2.0, seed=0)
    classifier = fit_attribute_classifier(
        x,
        y,
        attribute="race",
        classes=classes,
        regularization_grid=[0.1, 1.0],
        cv_folds=3,
        calibration="temperature",
        seed=0,
    )
    x_val, y_val = blobs(100, classes, spread=2.0, seed=0)
    summary, per_class = evaluate(classifier, x_val, y_val)
    assert summary["accuracy"] > 0.8
    assert summary["expected_calibration_error"] < 0.1
    assert per_class["count"].tolist() == [100] * len(classes)
    assert np.asarray(summary["confusion_matrix"]).sum() == 100 * len(classes)
    probabilities = classifier.predict_proba(x_val)
    assert probabilities.shape == (len(y_val), len(classes))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_unknown_training_label_is_an_error():
    x, y = blobs(10, ["a", "b"], spread=1.0, seed=0)
    with pytest.raises(ValueError, match="'z'"):
        fit_attribute_classifier(
            x,
            [*y[:-1], "z"],
            attribute="race",
            classes=["a", "b"],
            regularization_grid=[1.0],
            cv_folds=2,
            calibration="none",
            seed=0,
        )


def test_temperature_recovers_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 4))
    labels = np.array([rng.choice(4, p=np.exp(row) / np.exp(row).sum()) for row in true_logits])
    assert fit_temperature(true_logits * 3.0, labels) == pytest.approx(3.0, rel=0.15)


def test_ece_is_zero_for_perfectly_calibrated_certain_predictions():
    probabilities = np.eye(3)[[0, 1, 2, 1]]
    assert expected_calibration_error(probabilities, np.array([0, 1, 2, 1])) == 0.0
    assert expected_calibration_error(probabilities, np.array([1, 2, 0, 0])) == 1.0


def test_binary_scores_match_sklearn_probabilities():
    x, y = blobs(50, ["Male", "Female"], spread=1.5, seed=1)
    classifier = fit_attribute_classifier(
        x,
        y,
        attribute="gender",
        classes=["Male", "Female"],
        regularization_grid=[1.0],
        cv_folds=2,
        calibration="none",
        seed=0,
    )
    from scipy.special import softmax

    np.testing.assert_allclose(
        softmax(class_scores(classifier.model, x), axis=1),
        classifier.model.predict_proba(x),
        rtol=1e-6,
    )


def test_labels_abstain_below_threshold_and_composition_counts_them():
    x, y = blobs(60, ["a", "b", "c"], spread=3.0, seed=2)
    classifier = fit_attribute_classifier(
        x,
        y,
        attribute="race",
        classes=["a", "b", "c"],
        regularization_grid=[1.0],
        cv_folds=2,
        calibration="temperature",
        seed=0,
    )
    labels, _ = label_targets(classifier, x, abstain_below=0.9)
    assert set(labels["race_source"]) == {"inferred"}
    assert (labels["race_abstained"] == (labels["race_confidence"] < 0.9)).all()
    labels["split"] = "train"
    table = composition(labels, ["race"])
    assert table["count"].sum() == len(x)
    assert table["share"].sum() == pytest.approx(1.0)
    assert table["abstained"].sum() == labels["race_abstained"].sum()
    assert isinstance(table, pd.DataFrame)


def test_ground_truth_replaces_inference_only_for_annotated_attributes():
    from fairfer.group_labels.classifiers import prefer_ground_truth

    inferred = pd.DataFrame(
        {
            "image_id": ["a", "b"],
            "race": ["White", "Black"],
            "race_source": "inferred",
            "race_confidence": [0.9, 0.8],
            "race_abstained": [False, True],
            "gender": ["Male", "Female"],
            "gender_source": "inferred",
            "gender_confidence": [0.7, 0.6],
            "gender_abstained": [False, False],
        }
    )
    manifest = pd.DataFrame(
        {"image_id": ["b", "a"], "race": ["Asian", None], "gender": [None, None]}
    )
    labels, used = prefer_ground_truth(inferred, manifest, ["race", "gender"])
    assert used == ["race"]
    labels = labels.set_index("image_id")
    assert labels.loc["b", "race"] == "Asian"
    assert pd.isna(labels.loc["a", "race"])  # unannotated stays unknown, not inferred
    assert set(labels["race_source"]) == {"ground_truth"}
    assert not labels["race_abstained"].any()
    assert labels.loc["a", "gender"] == "Male"
    assert set(labels["gender_source"]) == {"inferred"}


def test_pooling_gives_each_subject_one_label_and_counts_disagreement():
    from fairfer.group_labels.classifiers import pool_by_subject

    probabilities = np.array(
        [
            [0.6, 0.4],  # subject a: two images for class 0, one against
            [0.7, 0.3],
            [0.45, 0.55],
            [0.2, 0.8],  # subject b: one image
            [0.5, 0.5],  # no subject: unchanged
        ]
    )
    pooled, stats = pool_by_subject(probabilities, ["a", "a", "a", "b", None])
    expected = np.array([0.6 * 0.7 * 0.45, 0.4 * 0.3 * 0.55])
    assert pooled[0] == pytest.approx(expected / expected.sum())
    assert (pooled[0] == pooled[1]).all() and (pooled[1] == pooled[2]).all()
    assert pooled[3] == pytest.approx(probabilities[3]) and (pooled[4] == probabilities[4]).all()
    assert stats["n_subjects"] == 2 and stats["n_multi_image_subjects"] == 1
    assert stats["subjects_with_disagreement"] == 1 and stats["disagreement_share"] == 1.0
    assert stats["images_changed_share"] == pytest.approx(1 / 4)


def test_pooling_without_subjects_changes_nothing():
    from fairfer.group_labels.classifiers import pool_by_subject

    probabilities = np.array([[0.6, 0.4], [0.1, 0.9]])
    pooled, stats = pool_by_subject(probabilities, [None, None])
    assert (pooled == probabilities).all() and stats["n_subjects"] == 0


def test_grouped_cross_validation_keeps_copies_of_an_image_in_one_fold(monkeypatch):
    """A clean image and its rendered copy (same group) never straddle a CV split."""
    from sklearn.model_selection import StratifiedGroupKFold

    seen = []
    original = StratifiedGroupKFold.split

    def record(self, x, y, groups=None):
        for train, held_out in original(self, x, y, groups):
            seen.append((set(groups[train]), set(groups[held_out])))
            yield train, held_out

    monkeypatch.setattr(StratifiedGroupKFold, "split", record)
    x, y = blobs(40, ["a", "b"], spread=3.0, seed=4)
    x = np.concatenate([x, x + 0.1])  # every image twice
    groups = np.tile(np.arange(len(y)), 2)
    fit_attribute_classifier(
        x,
        list(y) * 2,
        attribute="race",
        classes=["a", "b"],
        regularization_grid=[1.0],
        cv_folds=3,
        calibration="temperature",
        seed=0,
        groups=groups,
    )
    assert len(seen) == 3
    assert all(not (train & held_out) for train, held_out in seen)
