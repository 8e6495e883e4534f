"""Infer FairFace-style race, gender and age for emotion-dataset faces from their embeddings.

A multinomial logistic regression per attribute is selected by stratified cross-validation on
FairFace train only, calibrated by temperature scaling on its out-of-fold scores, and evaluated
once on FairFace validation. Its calibrated posteriors label the target images; predictions
under a confidence threshold are flagged as abstained rather than dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)


@dataclass
class AttributeClassifier:
    """A fitted, calibrated classifier for one attribute."""

    attribute: str
    classes: tuple[str, ...]
    model: Pipeline
    temperature: float
    regularization: float
    cv_accuracy: float

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Calibrated class posteriors, columns in ``classes`` order."""
        return softmax(class_scores(self.model, embeddings) / self.temperature, axis=1)


def class_scores(model: Pipeline, embeddings: np.ndarray) -> np.ndarray:
    """Logits of shape (n, n_classes), also for binary models (whose sklearn score is 1-d)."""
    scores = model.decision_function(embeddings)
    if scores.ndim == 1:
        # softmax([-d/2, d/2]) equals the binary model's sigmoid(d).
        return np.stack([-scores / 2, scores / 2], axis=1)
    return scores


def _make_model(regularization: float, seed: int) -> Pipeline:
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=regularization, max_iter=2000, random_state=seed),
    )


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood of ``labels`` under ``logits / T``."""

    def negative_log_likelihood(log_temperature: float) -> float:
        scaled = log_softmax(logits / np.exp(log_temperature), axis=1)
        return float(-scaled[np.arange(len(labels)), labels].mean())

    result = minimize_scalar(negative_log_likelihood, bounds=(-3.0, 3.0), method="bounded")
    return float(np.exp(result.x))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15
) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017)."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)


def fit_attribute_classifier(
    embeddings: np.ndarray,
    labels: Sequence[str],
    *,
    attribute: str,
    classes: Sequence[str],
    regularization_grid: Sequence[float],
    cv_folds: int,
    calibration: str,
    seed: int,
    groups: Sequence[object] | None = None,
) -> AttributeClassifier:
    """Select C by stratified CV on the reference training set, calibrate, refit on all of it.

    ``groups`` keeps the rows of one group in one fold (``StratifiedGroupKFold``): the clean
    and the rendered copy of a FairFace image must not sit on both sides of a split, or the
    cross-validated accuracy and the temperature fitted on out-of-fold scores would be
    optimistic.
    """
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise ValueError(f"{attribute} labels {unknown} are not among the classes {list(classes)}")
    y = np.array([index[name] for name in labels])
    if groups is None:
        splits = list(
            StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed).split(embeddings, y)
        )
    else:
        folds = StratifiedGroupKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
        splits = list(folds.split(embeddings, y, groups=np.asarray(groups)))
    best: tuple[float, float, np.ndarray] | None = None
    for regularization in regularization_grid:
        out_of_fold = np.zeros((len(y), len(classes)))
        for train_index, held_out in splits:
            model = _make_model(regularization, seed).fit(embeddings[train_index], y[train_index])
            scores = class_scores(model, embeddings[held_out])
            out_of_fold[held_out] = np.full((len(held_out), len(classes)), -1e9)
            out_of_fold[np.ix_(held_out, model.classes_)] = scores
        accuracy = float((out_of_fold.argmax(axis=1) == y).mean())
        logger.info("%s: C=%g cross-validated accuracy %.4f", attribute, regularization, accuracy)
        if best is None or accuracy > best[1]:
            best = (regularization, accuracy, out_of_fold)
    assert best is not None
    regularization, cv_accuracy, out_of_fold = best
    temperature = fit_temperature(out_of_fold, y) if calibration == "temperature" else 1.0
    model = _make_model(regularization, seed).fit(embeddings, y)
    if len(model.classes_) != len(classes):
        raise ValueError(
            f"{attribute}: the training set lacks classes "
            f"{[classes[i] for i in set(range(len(classes))) - set(model.classes_)]}"
        )
    logger.info("%s: chose C=%g, temperature %.3f", attribute, regularization, temperature)
    return AttributeClassifier(
        attribute, tuple(classes), model, temperature, regularization, cv_accuracy
    )


def evaluate(
    classifier: AttributeClassifier, embeddings: np.ndarray, labels: Sequence[str]
) -> tuple[dict, pd.DataFrame]:
    """Overall accuracy, ECE and confusion matrix, and per-class accuracy on a held-out set."""
    index = {name: i for i, name in enumerate(classifier.classes)}
    y = np.array([index[name] for name in labels])
    probabilities = classifier.predict_proba(embeddings)
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y, predicted, labels=range(len(classifier.classes)))
    per_class = pd.DataFrame(
        {
            "attribute": classifier.attribute,
            "class": classifier.classes,
            "count": matrix.sum(axis=1),
            "accuracy": np.divide(
                np.diag(matrix),
                matrix.sum(axis=1),
                out=np.full(len(matrix), np.nan),
                where=matrix.sum(axis=1) > 0,
            ),
        }
    )
    summary = {
        "classes": list(classifier.classes),
        "n_evaluated": len(y),
        "accuracy": float((predicted == y).mean()),
        "balanced_accuracy": float(per_class["accuracy"].mean()),
        "expected_calibration_error": expected_calibration_error(probabilities, y),
        "uncalibrated_expected_calibration_error": expected_calibration_error(
            softmax(class_scores(classifier.model, embeddings), axis=1), y
        ),
        "cv_accuracy": classifier.cv_accuracy,
        "regularization": classifier.regularization,
        "temperature": classifier.temperature,
        "confusion_matrix": matrix.tolist(),
    }
    return summary, per_class


def pool_by_subject(
    probabilities: np.ndarray, subjects: Sequence[object] | pd.Series
) -> tuple[np.ndarray, dict]:
    """One posterior per person: the normalised product of the posteriors of their images.

    Images of the same subject share their true race, gender and (within a dataset's time
    span) age, so the evidence of every image is combined: the sum of log-posteriors, i.e. the
    product of independent likelihoods under a flat prior. Images without a subject id keep
    their own posterior.

    Parameters
    ----------
    probabilities : numpy.ndarray
        Per-image posteriors (n_images, n_classes).
    subjects : sequence
        Subject id of each image; null where unknown.

    Returns
    -------
    pooled : numpy.ndarray
        Posteriors (n_images, n_classes), the subject's pooled posterior on each of its images.
    stats : dict
        ``n_subjects`` with an id, ``n_multi_image_subjects`` (two or more images),
        ``subjects_with_disagreement`` and its share among multi-image subjects (per-image most
        likely labels not all equal), and ``images_changed_share`` (images whose label the
        pooling changed).
    """
    subjects = pd.Series(subjects, dtype=object).reset_index(drop=True)
    known = subjects.notna().to_numpy()
    pooled = probabilities.astype(np.float64, copy=True)
    stats = {
        "n_subjects": 0,
        "n_multi_image_subjects": 0,
        "subjects_with_disagreement": 0,
        "disagreement_share": None,
        "images_changed_share": 0.0,
    }
    if not known.any():
        return pooled, stats
    codes, names = pd.factorize(subjects[known])
    log_posterior = np.log(np.clip(probabilities[known], 1e-12, None))
    summed = np.zeros((len(names), probabilities.shape[1]))
    np.add.at(summed, codes, log_posterior)
    pooled[known] = softmax(summed, axis=1)[codes]
    per_image = probabilities[known].argmax(axis=1)
    images = np.bincount(codes, minlength=len(names))
    distinct = (
        pd.DataFrame({"subject": codes, "label": per_image}).groupby("subject")["label"].nunique()
    )
    multi = images >= 2
    disagreeing = int(((distinct.to_numpy() > 1) & multi).sum())
    stats.update(
        n_subjects=len(names),
        n_multi_image_subjects=int(multi.sum()),
        subjects_with_disagreement=disagreeing,
        disagreement_share=float(disagreeing / multi.sum()) if multi.any() else None,
        images_changed_share=float((pooled[known].argmax(axis=1) != per_image).mean()),
    )
    return pooled, stats


def label_targets(
    classifier: AttributeClassifier,
    embeddings: np.ndarray,
    *,
    abstain_below: float,
    subjects: Sequence[object] | pd.Series | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Predicted label, confidence, full posterior and abstain flag for each target image.

    With ``subjects``, images of one person get one label (:func:`pool_by_subject`); the
    returned dict holds the pooling statistics (empty counts without subject ids).
    """
    probabilities = classifier.predict_proba(embeddings)
    stats: dict = {"n_subjects": 0}
    if subjects is not None:
        probabilities, stats = pool_by_subject(probabilities, subjects)
        if stats["n_subjects"]:
            logger.info(
                "%s: pooled over %d subjects; per-image labels disagreed within %s of the %d "
                "subjects with several images",
                classifier.attribute,
                stats["n_subjects"],
                stats["disagreement_share"],
                stats["n_multi_image_subjects"],
            )
    confidence = probabilities.max(axis=1)
    name = classifier.attribute
    frame = pd.DataFrame(
        {
            name: np.asarray(classifier.classes)[probabilities.argmax(axis=1)],
            f"{name}_source": "inferred",
            f"{name}_confidence": confidence.astype(np.float32),
            f"{name}_probabilities": list(probabilities.astype(np.float32)),
            f"{name}_abstained": confidence < abstain_below,
        }
    )
    return frame, stats


def composition(labels: pd.DataFrame, attributes: Sequence[str]) -> pd.DataFrame:
    """Share of each inferred group per split, with the abstention share inside each group."""
    rows = []
    for attribute in attributes:
        grouped = labels.groupby(["split", attribute])
        table = grouped.agg(
            count=(attribute, "size"), abstained=(f"{attribute}_abstained", "sum")
        ).reset_index()
        table["share"] = table["count"] / table.groupby("split")["count"].transform("sum")
        table["abstained_share"] = table["abstained"] / table["count"]
        rows.append(table.rename(columns={attribute: "group"}).assign(attribute=attribute))
    columns = ["attribute", "split", "group", "count", "share", "abstained", "abstained_share"]
    return pd.concat(rows, ignore_index=True)[columns]


def prefer_ground_truth(
    group_labels: pd.DataFrame, manifest: pd.DataFrame, attributes: Sequence[str]
) -> tuple[pd.DataFrame, list[str]]:
    """Use the emotion dataset's own demographic labels wherever it has them.

    An attribute the dataset annotates (any non-null value in ``manifest``) is taken from the
    annotation for every image, in the dataset's own vocabulary, with source ``ground_truth``;
    images the annotators left unlabelled stay unknown rather than falling back to inference,
    so one table never mixes the two. The inferred posterior is kept for reference.
    """
    labels = group_labels.set_index("image_id")
    truth = manifest.set_index("image_id")
    used = []
    for attribute in attributes:
        if truth[attribute].isna().all():
            continue
        used.append(attribute)
        labels[attribute] = truth[attribute].reindex(labels.index)
        labels[f"{attribute}_source"] = "ground_truth"
        labels[f"{attribute}_confidence"] = np.nan
        labels[f"{attribute}_abstained"] = False
    return labels.reset_index(), used
