"""Bootstrap and multiple-imputation intervals of the fairness summary."""

import numpy as np
import pandas as pd

from fairfer.uncertainty import intervals, sample_labels, summary_draws

CLASSES = ["neutral", "happiness"]


def predictions(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    race = rng.choice(["A", "B"], n)
    y_true = rng.choice(CLASSES, n)
    # Group B is predicted worse, so the accuracy gap is real.
    correct = rng.random(n) < np.where(race == "A", 0.9, 0.6)
    y_pred = np.where(correct, y_true, np.where(y_true == "neutral", "happiness", "neutral"))
    return pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "strategy": "baseline",
            "y_true": y_true,
            "y_pred": y_pred,
            "race": race,
            "race_source": "inferred",
        }
    )


def test_sampled_labels_follow_the_posterior():
    rng = np.random.default_rng(0)
    probabilities = np.tile([0.2, 0.8], (20000, 1))
    probabilities[0] = np.nan
    labels = sample_labels(probabilities, ["A", "B"], rng)
    assert labels[0] is None
    assert abs((labels[1:] == "B").mean() - 0.8) < 0.01


def test_imputation_widens_intervals_when_labels_are_uncertain():
    frame = predictions()
    uncertain = np.full((len(frame), 2), 0.5)
    common = dict(attributes=["race"], classes=CLASSES, draws=40, seed=1)
    bootstrap = summary_draws(frame, {}, impute=False, **common)
    imputed = summary_draws(frame, {"race": (uncertain, ("A", "B"))}, impute=True, **common)
    point = bootstrap[bootstrap["draw"] == 0].drop(columns="draw")
    table = intervals(point, {"bootstrap": bootstrap, "multiple_imputation": imputed})
    gap = table[table["metric"] == "accuracy_gap"].iloc[0]
    assert gap["bootstrap_low"] <= gap["bootstrap_high"]
    # With coin-flip group labels the measured gap collapses towards zero.
    assert gap["multiple_imputation_low"] < gap["bootstrap_low"]
    overall = table[table["metric"] == "overall_accuracy"].iloc[0]
    assert overall["width_ratio"] == 1.0  # group labels do not move overall accuracy


def test_draws_are_reproducible():
    frame = predictions()
    first = summary_draws(
        frame, {}, attributes=["race"], classes=CLASSES, draws=3, impute=False, seed=5
    )
    second = summary_draws(
        frame, {}, attributes=["race"], classes=CLASSES, draws=3, impute=False, seed=5
    )
    pd.testing.assert_frame_equal(first, second)
