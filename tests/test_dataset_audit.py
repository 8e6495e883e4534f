"""Dataset audit: representational and stereotypical bias, with inferred-label uncertainty."""

import numpy as np
import pandas as pd
import pytest

from fairfer.fairness.dataset_audit import audit_dataset


def _rows(pairs):
    return pd.DataFrame(pairs, columns=["group", "emotion"])


def test_balanced_and_independent_dataset_has_no_bias():
    rows = _rows([(g, e) for g in "AB" for e in ("happiness", "sadness") for _ in range(10)])
    metrics, npmi = audit_dataset(rows, attributes=["group"], sources={"group": "ground_truth"})
    row = metrics.iloc[0]
    assert row["richness"] == 2 and row["effective_groups"] == pytest.approx(2)
    assert row["evenness"] == pytest.approx(1) and row["imbalance_ratio"] == 1
    assert row["cramers_v"] == pytest.approx(0) and row["nmi"] == pytest.approx(0, abs=1e-12)
    assert np.allclose(npmi["npmi"], 0) and set(npmi["count"]) == {10}


def test_a_group_that_only_shows_one_emotion_is_a_stereotype():
    rows = _rows([("A", "happiness")] * 30 + [("B", "sadness")] * 10 + [("B", "happiness")] * 2)
    metrics, npmi = audit_dataset(rows, attributes=["group"], sources={"group": "ground_truth"})
    row = metrics.iloc[0]
    assert row["imbalance_ratio"] == pytest.approx(30 / 12)
    assert row["cramers_v"] > 0.7 and row["nmi"] > 0.4
    cells = npmi.set_index(["group", "emotion"])["npmi"]
    assert cells[("A", "sadness")] == -1  # never together
    assert cells[("B", "sadness")] > 0.5 > cells[("B", "happiness")]


def test_inferred_labels_get_imputed_figures_from_their_posteriors():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400)
    emotion = np.where(truth == 1, "happiness", "sadness")
    # Confident, correct posteriors: the imputed figures agree with the assigned labels'.
    posteriors = np.where(truth[:, None] == np.arange(2), 0.95, 0.05)
    rows = pd.DataFrame({"race": np.array(["A", "B"])[truth], "emotion": emotion})
    metrics, npmi = audit_dataset(
        rows,
        attributes=["race"],
        sources={"race": "inferred"},
        posteriors={"race": (posteriors, ["A", "B"])},
        draws=50,
    )
    row = metrics.iloc[0]
    assert row["cramers_v"] > 0.99
    # Label noise (5%) blurs the association the assigned labels show.
    assert row["cramers_v_mi_low"] <= row["cramers_v_imputed"] <= row["cramers_v_mi_high"] < 0.95
    assert {"npmi_imputed", "npmi_mi_low", "npmi_mi_high"} <= set(npmi.columns)


def test_unknown_labels_are_counted_and_left_out():
    rows = _rows([("A", "happiness"), (None, "sadness"), ("B", "sadness")])
    metrics, _ = audit_dataset(rows, attributes=["group"], sources={})
    assert metrics.loc[0, ["n", "n_unknown"]].tolist() == [2, 1]
