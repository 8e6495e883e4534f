"""Strategy comparisons over training seeds: paired deltas per seed, then mean and spread.

Each summary row belongs to one training run (model, strategy, seed). A strategy is compared
with the baseline of the same model and the same seed (so the seed's share of the variation
cancels in the delta), and the per-seed comparisons are then summarised over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from fairfer.fairness import DELTA_METRICS, compare_strategies

RUN_KEYS: tuple[str, ...] = ("model", "strategy", "seed")


def compare_per_seed(summary: pd.DataFrame, *, baseline: str = "baseline") -> pd.DataFrame:
    """:func:`~fairfer.fairness.compare_strategies` within every (model, seed).

    Parameters
    ----------
    summary : pandas.DataFrame
        Fairness summaries of several runs, with ``model`` and ``seed`` columns.
    baseline : str, default "baseline"
        Strategy every other one is compared with.

    Returns
    -------
    pandas.DataFrame
        The comparison rows of every (model, seed), with ``model`` and ``seed`` first.
    """
    missing = [c for c in RUN_KEYS if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks the run columns {missing}")
    parts = []
    for (model, seed), runs in summary.groupby(["model", "seed"], sort=False):
        compared = compare_strategies(runs.drop(columns=["model", "seed"]), baseline=baseline)
        parts.append(compared.assign(model=model, seed=seed))
    by_seed = pd.concat(parts, ignore_index=True)
    first = ["model", "seed", "strategy", "attribute"]
    return by_seed[first + [c for c in by_seed.columns if c not in first]]


def aggregate_seeds(
    by_seed: pd.DataFrame, *, metrics: Sequence[str] = DELTA_METRICS
) -> pd.DataFrame:
    """Mean and spread over seeds of every metric and its delta, per (model, strategy, attribute).

    Returns
    -------
    pandas.DataFrame
        One row per (model, strategy, attribute) in first-appearance order with ``n_seeds``,
        the columns whose value is the same for every seed (``label_source``, ``n``,
        ``n_groups``, ...) and, for each metric and its ``_delta``, ``<name>_mean``,
        ``<name>_std`` (sample standard deviation; NaN for one seed), ``<name>_min`` and
        ``<name>_max``.
    """
    keys = ["model", "strategy", "attribute"]
    values = [c for m in metrics for c in (m, f"{m}_delta") if c in by_seed.columns]
    grouped = by_seed.groupby(keys, sort=False)
    table = grouped[values].agg(["mean", "std", "min", "max"])
    table.columns = [f"{name}_{statistic}" for name, statistic in table.columns]
    # Columns that do not vary with the seed (test-set sizes, label source and accuracy).
    others = [c for c in by_seed.columns if c not in {*keys, *values, "seed"}]
    constant = [c for c in others if (grouped[c].nunique(dropna=False) <= 1).all()]
    table = pd.concat([grouped[constant].first(), table], axis=1)
    table.insert(0, "n_seeds", grouped["seed"].nunique())
    return table.reset_index()
