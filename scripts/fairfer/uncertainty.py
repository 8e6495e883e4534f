"""Confidence intervals for fairness summaries, with inferred group labels treated as noisy.

Two intervals are reported for every summary figure:

- ``bootstrap``: test images are resampled with replacement; group labels are held at the
  classifier's most likely label. This is the usual sampling uncertainty.
- ``multiple_imputation``: each draw also samples every inferred group label from its
  calibrated posterior (ground-truth labels stay fixed), so the interval widens by the label
  noise the race/gender/age classifiers carry. Attributes are sampled independently for
  intersections.

Percentile intervals are taken over the draws, which combines both sources of variance
without distributional assumptions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fairfer.fairness import fairness_summary

logger = logging.getLogger(__name__)

#: Summary figures given an interval.
INTERVAL_METRICS: tuple[str, ...] = (
    "overall_accuracy",
    "worst_group_accuracy",
    "accuracy_gap",
    "accuracy_ratio",
    "dp_difference_max",
    "eo_difference_max",
)


def sample_labels(
    probabilities: np.ndarray, classes: Sequence[str], rng: np.random.Generator
) -> np.ndarray:
    """One label per row drawn from that row's posterior (rows with NaN stay missing)."""
    valid = ~np.isnan(probabilities).any(axis=1)
    cumulative = np.cumsum(np.where(valid[:, None], probabilities, 0.0), axis=1)
    draws = rng.random(len(probabilities)) * cumulative[:, -1]
    index = np.minimum((cumulative < draws[:, None]).sum(axis=1), len(classes) - 1)
    labels = np.asarray(classes, dtype=object)[index]
    labels[~valid] = None
    return labels


def summary_draws(
    predictions: pd.DataFrame,
    posteriors: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    *,
    attributes: Sequence[str | Sequence[str]],
    classes: Sequence[str],
    draws: int,
    impute: bool,
    seed: int,
) -> pd.DataFrame:
    """Summary figures of ``draws`` bootstrap (and, with ``impute``, imputation) replicates.

    ``posteriors`` maps each inferred attribute to its (n_rows, n_classes) posterior aligned
    with ``predictions`` and the class names; attributes absent from it are never resampled.
    """
    # Separate streams: both methods resample the same images, so their intervals differ only
    # by the label noise.
    row_rng = np.random.default_rng([seed, 0])
    label_rng = np.random.default_rng([seed, 1])
    replicates = []
    for draw in range(draws):
        rows = row_rng.integers(0, len(predictions), len(predictions))
        replicate = predictions.iloc[rows].reset_index(drop=True)
        if impute:
            for attribute, (probabilities, names) in posteriors.items():
                replicate[attribute] = sample_labels(probabilities[rows], names, label_rng)
        summary = fairness_summary(replicate, attributes=attributes, classes=classes)
        replicates.append(summary.assign(draw=draw))
    return pd.concat(replicates, ignore_index=True)


def intervals(
    point: pd.DataFrame,
    replicates: Mapping[str, pd.DataFrame],
    *,
    level: float = 0.95,
) -> pd.DataFrame:
    """Point estimates with one percentile interval per method, in long form.

    Returns one row per (strategy, attribute, metric) with ``estimate`` and, for each method,
    ``<method>_low`` and ``<method>_high``; ``width_ratio`` compares the imputation interval
    with the bootstrap one when both are present.
    """
    keys = ["strategy", "attribute"]
    tail = (1 - level) / 2
    table = point.melt(
        id_vars=keys, value_vars=list(INTERVAL_METRICS), var_name="metric", value_name="estimate"
    )
    for method, draws in replicates.items():
        long = draws.melt(
            id_vars=[*keys, "draw"], value_vars=list(INTERVAL_METRICS), var_name="metric"
        )
        bounds = long.groupby([*keys, "metric"])["value"].quantile([tail, 1 - tail]).unstack()
        bounds.columns = [f"{method}_low", f"{method}_high"]
        table = table.merge(bounds.reset_index(), on=[*keys, "metric"], how="left")
    if {"bootstrap_low", "multiple_imputation_low"} <= set(table.columns):
        table["width_ratio"] = (
            table["multiple_imputation_high"] - table["multiple_imputation_low"]
        ) / (table["bootstrap_high"] - table["bootstrap_low"])
    return table
