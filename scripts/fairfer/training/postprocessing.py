"""Mitigation without retraining: group-aware additive offsets on a trained model's logits.

For an auditor who cannot retrain a model, the decision can still depend on the group: each
group ``g`` gets an offset ``b[g, c]`` added to the log-posterior of every class ``c`` before the
arg-max. The offsets are fitted on the **validation** split only, by coordinate search over a
grid, for one of two objectives, under an accuracy budget (valid accuracy may fall by at most
``accuracy_budget`` from the unadjusted model's):

- ``recall_parity``: the mean over classes of the largest minus the smallest per-group recall
  (the multiclass true-positive-rate gap of equalized odds);
- ``worst_group``: the accuracy of the worst group, maximised.

Groups are the labels the predictions carry: ground truth where the dataset has it, else the
inferred labels (so the adjustment uses the same noisy groups an auditor would; the tables'
label-noise intervals then measure its effect). Rows of unknown group keep offset 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fairfer.config_checks import POSTPROCESS_STRATEGIES

OBJECTIVES: tuple[str, ...] = ("recall_parity", "worst_group")
__all__ = ["POSTPROCESS_STRATEGIES", "apply_offsets", "fit_offsets", "group_codes"]


@dataclass(frozen=True)
class Fit:
    """Fitted offsets (groups x classes) and the valid figures before and after."""

    offsets: np.ndarray
    groups: tuple[str, ...]
    before: dict[str, float]
    after: dict[str, float]


def _scores(
    predicted: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_groups: int, n_classes: int
) -> dict[str, float]:
    correct = predicted == labels
    known = groups >= 0
    accuracy_by_group, recall_gaps = [], []
    for g in range(n_groups):
        rows = known & (groups == g)
        if rows.any():
            accuracy_by_group.append(correct[rows].mean())
    for c in range(n_classes):
        recalls = []
        for g in range(n_groups):
            rows = known & (groups == g) & (labels == c)
            if rows.any():
                recalls.append(correct[rows].mean())
        if len(recalls) >= 2:
            recall_gaps.append(max(recalls) - min(recalls))
    return {
        "accuracy": float(correct.mean()),
        "worst_group_accuracy": float(min(accuracy_by_group)) if accuracy_by_group else np.nan,
        "recall_gap": float(np.mean(recall_gaps)) if recall_gaps else 0.0,
    }


def _loss(scores: dict[str, float], objective: str) -> float:
    """Smaller is better."""
    if objective == "recall_parity":
        return scores["recall_gap"]
    return -scores["worst_group_accuracy"]


def fit_offsets(
    log_posteriors: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    *,
    group_names: Sequence[str],
    objective: str,
    accuracy_budget: float,
    offset_range: float = 2.0,
    steps: int = 17,
    passes: int = 3,
) -> Fit:
    """Offsets minimising ``objective`` on these (validation) rows within the accuracy budget.

    Parameters
    ----------
    log_posteriors
        (rows, classes) log-probabilities of the model on the validation split.
    labels
        True class codes.
    groups
        Group code of every row (index into ``group_names``), -1 where unknown.
    objective
        ``recall_parity`` or ``worst_group``.
    accuracy_budget
        Largest drop of accuracy allowed against the unadjusted model.
    offset_range, steps, passes
        Each offset is searched on ``steps`` values in [-offset_range, offset_range], one
        (group, class) at a time, ``passes`` times over all of them.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r} is not one of {OBJECTIVES}")
    n_groups, n_classes = len(group_names), log_posteriors.shape[1]
    offsets = np.zeros((n_groups, n_classes))
    grid = np.linspace(-offset_range, offset_range, steps)

    def predict(current: np.ndarray) -> np.ndarray:
        return _shifted(log_posteriors, groups, current).argmax(axis=1)

    before = _scores(predict(offsets), labels, groups, n_groups, n_classes)
    floor = before["accuracy"] - accuracy_budget
    best = (_loss(before, objective), -before["accuracy"])
    for _ in range(passes):
        improved = False
        for g in range(n_groups):
            for c in range(n_classes):
                keep = offsets[g, c]
                for value in grid:
                    offsets[g, c] = value
                    scores = _scores(predict(offsets), labels, groups, n_groups, n_classes)
                    candidate = (_loss(scores, objective), -scores["accuracy"])
                    if scores["accuracy"] >= floor - 1e-12 and candidate < best:
                        best, keep, improved = candidate, value, True
                offsets[g, c] = keep
        if not improved:
            break
    # Only differences between classes matter: centre each group's offsets.
    offsets -= offsets.mean(axis=1, keepdims=True)
    after = _scores(predict(offsets), labels, groups, n_groups, n_classes)
    return Fit(offsets, tuple(group_names), before, after)


def _shifted(log_posteriors: np.ndarray, groups: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Log-posteriors plus each row's group offsets (none for an unknown group, code -1)."""
    return log_posteriors + np.where(groups[:, None] >= 0, offsets[np.maximum(groups, 0)], 0.0)


def apply_offsets(
    log_posteriors: np.ndarray, groups: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """Adjusted posteriors (softmax of the shifted log-posteriors); unknown groups unshifted."""
    shifted = _shifted(log_posteriors, groups, offsets)
    shifted -= shifted.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def group_codes(values: Sequence[object], names: Sequence[str]) -> np.ndarray:
    """Code of every row's group in ``names`` (-1 for null or unseen values)."""
    index = {name: i for i, name in enumerate(names)}
    return np.array([index.get(v, -1) if isinstance(v, str) else -1 for v in values])
