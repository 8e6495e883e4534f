"""Post-processing mitigation: per-group logit offsets fitted on the validation split."""

import inspect
import json

import numpy as np
import pandas as pd
import pytest

from fairfer.rule_inputs import rule_script
from fairfer.schemas import predictions_schema, write_parquet
from fairfer.training import postprocessing
from fairfer.training.postprocessing import apply_offsets, fit_offsets, group_codes


def biased_classifier(n: int, seed: int):
    """Three classes, two groups; for group 1 the model under-scores class 0 (its recall of
    class 0 is far lower than group 0's), as a model trained mostly on group 0 would."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    groups = rng.integers(0, 2, n)
    logits = rng.normal(0, 1.0, (n, 3))
    logits[np.arange(n), labels] += 2.0
    logits[groups == 1, 0] -= 1.8
    log_posteriors = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return log_posteriors, labels, groups


def recall_gap(predicted, labels, groups) -> float:
    gaps = []
    for c in range(3):
        recalls = [(predicted[(groups == g) & (labels == c)] == c).mean() for g in (0, 1)]
        gaps.append(abs(recalls[0] - recalls[1]))
    return float(np.mean(gaps))


def worst_group_accuracy(predicted, labels, groups) -> float:
    return min((predicted[groups == g] == labels[groups == g]).mean() for g in (0, 1))


@pytest.mark.parametrize("objective", ["recall_parity", "worst_group"])
def test_offsets_fitted_on_valid_narrow_the_targeted_gap_on_test(objective):
    valid = biased_classifier(3000, seed=0)
    test = biased_classifier(3000, seed=1)
    fit = fit_offsets(*valid, group_names=["a", "b"], objective=objective, accuracy_budget=0.02)
    before = test[0].argmax(1)
    after = apply_offsets(test[0], test[2], fit.offsets).argmax(1)
    if objective == "recall_parity":
        assert recall_gap(after, test[1], test[2]) < 0.5 * recall_gap(before, test[1], test[2])
    else:
        assert (
            worst_group_accuracy(after, test[1], test[2])
            > worst_group_accuracy(before, test[1], test[2]) + 0.02
        )
    # Within the budget on valid, and about the same on test.
    assert fit.after["accuracy"] >= fit.before["accuracy"] - 0.02 - 1e-9
    assert (after == test[1]).mean() >= (before == test[1]).mean() - 0.04
    # The disadvantaged group's class 0 is the one raised.
    assert fit.offsets[1, 0] > fit.offsets[0, 0]


def test_fitting_never_sees_the_test_split():
    parameters = inspect.signature(fit_offsets).parameters
    assert list(parameters)[:3] == ["log_posteriors", "labels", "groups"]
    valid = biased_classifier(1000, seed=0)
    first = fit_offsets(
        *valid, group_names=["a", "b"], objective="worst_group", accuracy_budget=0.01
    )
    again = fit_offsets(
        *valid, group_names=["a", "b"], objective="worst_group", accuracy_budget=0.01
    )
    np.testing.assert_array_equal(first.offsets, again.offsets)


def test_unknown_groups_keep_their_predictions():
    log_posteriors, labels, groups = biased_classifier(500, seed=2)
    offsets = np.array([[0.0, 0.0, 0.0], [5.0, -5.0, 0.0]])
    unknown = np.full(len(groups), -1)
    np.testing.assert_array_equal(
        apply_offsets(log_posteriors, unknown, offsets).argmax(1), log_posteriors.argmax(1)
    )
    assert group_codes(["b", None, "z", "a"], ["a", "b"]).tolist() == [1, -1, -1, 0]
    with pytest.raises(ValueError, match="objective"):
        fit_offsets(log_posteriors, labels, groups, group_names=["a", "b"], objective="x",
                    accuracy_budget=0.0)  # fmt: skip


def _predictions(log_posteriors, labels, groups, classes, strategy="baseline"):
    probabilities = np.exp(log_posteriors)
    frame = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(len(labels))],
            "strategy": strategy,
            "model": "m",
            "seed": 0,
            "y_true": np.asarray(classes)[labels],
            "y_pred": np.asarray(classes)[probabilities.argmax(1)],
            "probabilities": list(probabilities.astype(np.float32)),
            "race": np.where(groups == 0, "White", "Black"),
            "race_source": "inferred",
            "race_confidence": 0.9,
        }
    )
    for attribute in ("gender", "age"):
        frame[attribute] = None
        frame[f"{attribute}_source"] = "inferred"
        frame[f"{attribute}_confidence"] = np.nan
    return frame


def test_rule_script_adjusts_test_with_offsets_from_valid(tmp_path):
    classes = ["neutral", "happiness", "sadness"]
    schema = predictions_schema(classes)
    valid_path = write_parquet(
        _predictions(*biased_classifier(2000, 0), classes), tmp_path / "v.parquet", schema
    )
    test = _predictions(*biased_classifier(2000, 1), classes)
    test_path = write_parquet(test, tmp_path / "t.parquet", schema)
    params = {
        "groups": ["race"], "objective": "recall_parity", "base": "baseline",
        "accuracy_budget": 0.02, "offset_range": 2.0, "steps": 17, "passes": 3,
    }  # fmt: skip
    script = rule_script("postprocess_predictions")
    out = script.run(valid_path, test_path, tmp_path / "o.parquet", tmp_path / "r.json",
                     strategy="postprocess_recall", params=params)  # fmt: skip
    assert (out["strategy"] == "postprocess_recall").all()
    assert out["image_id"].tolist() == test["image_id"].tolist()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["group_labels"] == ["inferred"]
    assert report["valid_after"]["recall_gap"] < report["valid_before"]["recall_gap"]
    assert set(report["offsets"]) == {"Black", "White"}
    notes = rule_script("compare_strategies").strategy_notes(out, {"postprocess_recall": params})
    assert "inferred" in notes["postprocess_recall"]


def test_post_processing_strategies_are_known_to_the_config_checks():
    from fairfer.config_checks import POSTPROCESS_STRATEGIES

    assert postprocessing.POSTPROCESS_STRATEGIES == POSTPROCESS_STRATEGIES
