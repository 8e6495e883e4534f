"""Strategy comparisons over seeds: paired deltas per seed, then mean and spread."""

import pandas as pd
import pytest

from fairfer.fairness import DELTA_METRICS
from fairfer.replicates import aggregate_seeds, compare_per_seed


def summary_row(model, strategy, seed, accuracy):
    row = {m: 0.1 for m in DELTA_METRICS}
    row |= {
        "model": model,
        "strategy": strategy,
        "seed": seed,
        "attribute": "race",
        "overall_accuracy": accuracy,
        "label_source": "inferred",
    }
    return row


def test_deltas_are_paired_by_seed_and_summarised_over_seeds():
    summary = pd.DataFrame(
        [
            summary_row("cnn", "baseline", 0, 0.80),
            summary_row("cnn", "group_dro", 0, 0.78),
            summary_row("cnn", "baseline", 1, 0.70),
            summary_row("cnn", "group_dro", 1, 0.69),
            summary_row("mlp", "baseline", 0, 0.50),
            summary_row("mlp", "group_dro", 0, 0.55),
        ]
    )
    by_seed = compare_per_seed(summary)
    assert list(by_seed.columns[:4]) == ["model", "seed", "strategy", "attribute"]
    dro = by_seed[(by_seed["model"] == "cnn") & (by_seed["strategy"] == "group_dro")]
    assert dro["overall_accuracy_delta"].tolist() == pytest.approx([-0.02, -0.01])

    aggregated = aggregate_seeds(by_seed).set_index(["model", "strategy"])
    cnn_dro = aggregated.loc[("cnn", "group_dro")]
    assert cnn_dro["n_seeds"] == 2 and cnn_dro["label_source"] == "inferred"
    assert cnn_dro["overall_accuracy_mean"] == pytest.approx(0.735)
    assert cnn_dro["overall_accuracy_delta_mean"] == pytest.approx(-0.015)
    assert cnn_dro["overall_accuracy_delta_std"] == pytest.approx(0.00707107, rel=1e-4)
    assert aggregated.loc[("cnn", "baseline"), "overall_accuracy_delta_max"] == 0
    mlp_dro = aggregated.loc[("mlp", "group_dro")]
    assert mlp_dro["n_seeds"] == 1 and pd.isna(mlp_dro["overall_accuracy_std"])


def test_a_missing_run_column_is_named():
    with pytest.raises(ValueError, match="seed"):
        compare_per_seed(
            pd.DataFrame([summary_row("cnn", "baseline", 0, 0.8)]).drop(columns="seed")
        )
