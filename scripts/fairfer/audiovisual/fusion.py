"""Late fusion: a weighted average of two modalities' posteriors, the weight chosen on the
validation split only.

With ``w`` the first component's weight, the fused posterior is ``w p_1 + (1 - w) p_2``; ``w``
runs over a grid and the most accurate on valid wins (ties: the weight closest to 1/2, the
plain average). The test split is predicted once with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def aligned_posteriors(first: pd.DataFrame, second: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Both prediction tables' posteriors in ``first``'s row order; they must predict the same
    images with the same labels."""
    if set(first["image_id"]) != set(second["image_id"]) or len(first) != len(second):
        only = sorted(set(first["image_id"]) ^ set(second["image_id"]))[:5]
        raise ValueError(
            f"late fusion needs both models to predict the same clips; they differ in {only} "
            f"({len(first)} vs {len(second)} rows)"
        )
    other = second.set_index("image_id").loc[first["image_id"]]
    if (other["y_true"].to_numpy() != first["y_true"].to_numpy()).any():
        raise ValueError("late fusion components disagree on the true labels")
    return np.stack(first["probabilities"].to_numpy()), np.stack(other["probabilities"].to_numpy())


def choose_weight(
    first: np.ndarray, second: np.ndarray, labels: np.ndarray, *, step: float
) -> tuple[float, pd.DataFrame]:
    """The first component's weight maximising accuracy on (``first``, ``second``, ``labels``)
    and the accuracy of every weight of the grid."""
    weights = np.round(np.arange(0.0, 1.0 + step / 2, step), 6)
    accuracy = np.array(
        [float(((w * first + (1 - w) * second).argmax(1) == labels).mean()) for w in weights]
    )
    best = np.flatnonzero(np.isclose(accuracy, accuracy.max()))
    chosen = float(weights[best[np.argmin(np.abs(weights[best] - 0.5))]])
    return chosen, pd.DataFrame({"weight": weights, "valid_accuracy": accuracy})


def fuse(
    valid: Sequence[pd.DataFrame],
    test: Sequence[pd.DataFrame],
    classes: Sequence[str],
    *,
    step: float,
) -> tuple[np.ndarray, np.ndarray, float, pd.DataFrame]:
    """Fused valid and test posteriors (in ``valid[0]``'s and ``test[0]``'s row order), the
    weight and the grid's valid accuracies. ``valid`` and ``test`` are the two components'
    prediction tables; the weight is chosen before ``test`` is looked at."""
    valid_first, valid_second = aligned_posteriors(*valid)
    labels = pd.Categorical(valid[0]["y_true"], categories=list(classes)).codes
    weight, grid = choose_weight(valid_first, valid_second, labels, step=step)
    test_first, test_second = aligned_posteriors(*test)
    fused_valid = weight * valid_first + (1 - weight) * valid_second
    return fused_valid, weight * test_first + (1 - weight) * test_second, weight, grid
