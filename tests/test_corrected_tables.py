"""Tables corrected for misclassified group labels recover the truth on simulated data."""

import numpy as np
import pandas as pd
import pytest

from fairfer.fairness.tables import compare_runs, fairness_tables
from fairfer.group_labels.correction import LabelErrors, label_errors

CLASSES = ["neutral", "happiness", "surprise"]
RACES = ("White", "Black", "Indian")
TRUE_ACCURACY = {"White": 0.9, "Black": 0.7, "Indian": 0.5}
#: P(inferred | true): rows true race, columns inferred race.
MISCLASSIFICATION = np.array([[0.8, 0.1, 0.1], [0.15, 0.7, 0.15], [0.1, 0.2, 0.7]])


def _infer(rng, true_race):
    codes = np.array([RACES.index(r) for r in true_race])
    cumulative = MISCLASSIFICATION[codes].cumsum(axis=1)
    inferred = (rng.random(len(codes))[:, None] > cumulative).sum(axis=1)
    return np.asarray(RACES)[inferred]


def _simulation(n=24000, seed=0, strategies=("baseline",)):
    rng = np.random.default_rng(seed)
    race = rng.choice(RACES, n, p=[0.5, 0.3, 0.2])
    y_true = rng.choice(CLASSES, n)
    frames = []
    for offset, strategy in enumerate(strategies):
        accuracy = np.array([TRUE_ACCURACY[r] for r in race])
        correct = np.random.default_rng(seed + 10 + offset).random(n) < accuracy
        shifted = np.array([CLASSES[(CLASSES.index(c) + 1) % 3] for c in y_true])
        frames.append(
            pd.DataFrame(
                {
                    "image_id": [f"i{i}" for i in range(n)],
                    "strategy": strategy,
                    "y_true": y_true,
                    "y_pred": np.where(correct, y_true, shifted),
                    "race": None,
                    "race_source": "inferred",
                }
            )
        )
    inferred = _infer(rng, race)
    for frame in frames:
        frame["race"] = inferred
    # The classifier's validation set: labelled images, inferred the same way.
    valid_true = rng.choice(RACES, 8000)
    valid_inferred = _infer(rng, valid_true)
    confusion = pd.crosstab(
        pd.Categorical(valid_true, RACES), pd.Categorical(valid_inferred, RACES), dropna=False
    ).to_numpy()
    return pd.concat(frames, ignore_index=True), confusion


def test_corrected_group_accuracy_recovers_the_true_groups():
    # Over 30 simulation seeds the corrected accuracies are unbiased (mean error under 0.004)
    # and the 95% intervals missed the truth 3 times in 90; this seed is a typical one.
    predictions, confusion = _simulation(seed=2)
    errors = {"race": LabelErrors("race", RACES, confusion, None)}
    tables = fairness_tables(
        predictions,
        attributes=["race"],
        classes=CLASSES,
        draws=200,
        corrections=errors,
    )
    groups = tables["group_metrics"].set_index("group")
    for race, truth in TRUE_ACCURACY.items():
        assert groups.loc[race, "accuracy_corrected"] == pytest.approx(truth, abs=0.03)
        assert groups.loc[race, "accuracy_corrected_ci_low"] <= truth + 0.01
        assert groups.loc[race, "accuracy_corrected_ci_high"] >= truth - 0.01
    # Observed per-inferred-group accuracy is pulled towards the mean: the gap shrinks.
    summary = tables["summary"].iloc[0]
    true_gap = max(TRUE_ACCURACY.values()) - min(TRUE_ACCURACY.values())
    assert summary["accuracy_gap"] < true_gap - 0.1
    assert summary["accuracy_gap_corrected"] == pytest.approx(true_gap, abs=0.05)
    assert summary["accuracy_gap_corrected_ci_low"] < summary["accuracy_gap_corrected"]
    assert summary["worst_group_corrected"] == "Indian"
    assert summary["correction"] == "corrected"
    recall = tables["group_class_metrics"].set_index(["group", "class"])
    assert recall.loc[("White", "neutral"), "tpr_corrected"] == pytest.approx(0.9, abs=0.04)
    # Corrected sizes: about the true composition.
    assert groups.loc["Black", "count_corrected"] == pytest.approx(0.3 * 24000, rel=0.06)


def test_comparison_carries_corrected_metrics_with_paired_intervals():
    predictions, confusion = _simulation(n=6000, strategies=("baseline", "other"))
    errors = {"race": LabelErrors("race", RACES, confusion, None)}
    result = compare_runs(
        predictions,
        attributes=["race"],
        classes=CLASSES,
        draws=100,
        corrections=errors,
    )["by_seed"]
    gap = result[(result["metric"] == "accuracy_gap_corrected") & (result["strategy"] == "other")]
    assert len(gap) == 1
    row = gap.iloc[0]
    assert row["delta_ci_low"] <= row["delta"] <= row["delta_ci_high"]
    assert row["better_when"] == "lower"
    worst = result[result["metric"] == "worst_group_accuracy_corrected"]
    assert set(worst["better_when"]) == {"higher"}


def test_ill_conditioned_correction_is_flagged_not_printed():
    predictions, _ = _simulation(n=3000)
    confusion = np.array([[500, 400, 100], [480, 420, 100], [100, 100, 800]])
    errors = {"race": LabelErrors("race", RACES, confusion, None, max_condition=5)}
    tables = fairness_tables(
        predictions, attributes=["race"], classes=CLASSES, draws=20, corrections=errors
    )
    summary = tables["summary"].iloc[0]
    assert summary["correction"].startswith("not corrected: ill-conditioned")
    assert np.isnan(summary["accuracy_gap_corrected"])
    assert tables["group_metrics"]["accuracy_corrected"].isna().all()


@pytest.mark.parametrize("draws", [0, 20])
def test_ground_truth_and_intersections_are_not_corrected(draws):
    predictions, confusion = _simulation(n=2000, strategies=("baseline", "other"))
    predictions["gender"] = np.where(np.arange(len(predictions)) % 2, "Male", "Female")
    predictions["gender_source"] = "ground_truth"
    errors = {"race": LabelErrors("race", RACES, confusion, None)}
    options = {
        "attributes": ["race", "gender", ["race", "gender"]],
        "classes": CLASSES,
        "corrections": errors,
    }
    tables = fairness_tables(predictions, draws=draws, **options)
    status = tables["summary"].drop_duplicates("attribute").set_index("attribute")["correction"]
    assert status["race"] == "corrected"
    assert status["gender"] == "not needed: ground-truth labels"
    assert status["race x gender"] == "not corrected: intersection"
    if draws:
        comparison = compare_runs(predictions, draws=draws, **options)["by_seed"]
        corrected = comparison[comparison["metric"].str.endswith("_corrected")]
        assert set(corrected["attribute"]) == {"race"}


def test_label_errors_read_the_in_domain_matrix_and_say_why_not():
    report = {
        "attributes": {
            "race": {
                "classes": list(RACES),
                "in_domain": {"confusion_matrix": [[5, 1, 0], [1, 5, 0], [0, 0, 6]]},
                "clean": {"confusion_matrix": [[6, 0, 0], [0, 6, 0], [0, 0, 6]]},
            },
            "gender": {
                "classes": ["Male", "Female"],
                "clean": {"confusion_matrix": [[1, 0], [0, 1]]},
            },
            "age": {"classes": ["0-2", "3-9"], "in_domain": {"confusion_matrix": [[1, 0], [0, 1]]}},
        },
        "subject_pooling": {"age": {"n_subjects": 4}},
    }
    errors = label_errors(report, max_condition=20, max_clipped_share=0.1)
    assert errors["race"].reason is None and errors["race"].confusion[0, 1] == 1
    assert errors["race"].max_condition == 20
    assert errors["gender"].reason == "no in-domain evaluation of the classifier"
    assert errors["age"].reason == "labels pooled over each subject's images"


def test_corrected_composition_recovers_the_true_shares_with_an_interval():
    from fairfer.group_labels.correction import corrected_composition_table
    from fairfer.report.plots import plot_composition

    rng = np.random.default_rng(5)
    true_race = rng.choice(RACES, 20000, p=[0.6, 0.3, 0.1])
    inferred = _infer(rng, true_race)
    valid_true = rng.choice(RACES, 6000)
    confusion = pd.crosstab(
        pd.Categorical(valid_true, RACES),
        pd.Categorical(_infer(rng, valid_true), RACES),
        dropna=False,
    ).to_numpy()
    counts = pd.Series(inferred).value_counts()
    table = pd.DataFrame(
        {
            "attribute": "race",
            "split": "train",
            "group": counts.index,
            "count": counts.to_numpy(),
            "share": counts.to_numpy() / counts.sum(),
            "abstained": 0,
            "abstained_share": 0.0,
        }
    )
    gender = table.iloc[:1].assign(attribute="gender", group="Male")
    result = corrected_composition_table(
        pd.concat([table, gender], ignore_index=True),
        {"race": LabelErrors("race", RACES, confusion, None)},
        {"race": 0.73},
        draws=300,
        level=0.95,
        seed=0,
    )
    race = result[result["attribute"] == "race"].set_index("group")
    for group, truth in zip(RACES, [0.6, 0.3, 0.1], strict=True):
        assert race.loc[group, "share_corrected"] == pytest.approx(truth, abs=0.02)
        assert race.loc[group, "share_corrected_ci_low"] <= truth + 0.005
        assert race.loc[group, "share_corrected_ci_high"] >= truth - 0.005
    # Observed shares are pulled towards uniform; the correction undoes it.
    assert race.loc["Indian", "share"] > 0.15
    assert set(race["correction"]) == {"corrected"} and (race["label_accuracy"] == 0.73).all()
    assert result.loc[result["attribute"] == "gender", "correction"].str.startswith("not").all()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as directory:
        assert plot_composition(result, Path(directory) / "c.png", title="t").stat().st_size
