"""Bootstrap and multiple-imputation intervals, and the paired comparison of strategies."""

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score

from fairfer.fairness.metrics import confusion_counts, figures
from fairfer.fairness.tables import aggregate_over_seeds, compare_runs, fairness_tables, prepare
from fairfer.fairness.uncertainty import percentile_interval, resampled_rows, sample_labels

CLASSES = ["neutral", "happiness"]


def predictions(n: int = 400, seed: int = 0, strategy: str = "baseline") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    race = np.random.default_rng(99).choice(["A", "B"], n)
    y_true = np.random.default_rng(98).choice(CLASSES, n)
    # Group B is predicted worse, so the accuracy gap is real.
    correct = rng.random(n) < np.where(race == "A", 0.9, 0.6)
    y_pred = np.where(correct, y_true, np.where(y_true == "neutral", "happiness", "neutral"))
    return pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "strategy": strategy,
            "y_true": y_true,
            "y_pred": y_pred,
            "race": race,
            "race_source": "inferred",
        }
    )


def summary_row(tables: dict[str, pd.DataFrame], **where: str) -> pd.Series:
    summary = tables["summary"]
    mask = np.logical_and.reduce([summary[k] == v for k, v in where.items()])
    return summary[mask].iloc[0]


def test_sampled_labels_follow_the_posterior():
    probabilities = np.tile([0.2, 0.5, 0.3], (20000, 1))
    probabilities[0] = np.nan
    uniform = np.random.default_rng(0).random((2, len(probabilities)))
    labels = sample_labels(probabilities, uniform)
    assert labels.shape == (2, 20000)
    assert (labels[:, 0] == -1).all()
    shares = np.bincount(labels[:, 1:].ravel(), minlength=3) / labels[:, 1:].size
    np.testing.assert_allclose(shares, [0.2, 0.5, 0.3], atol=0.01)


@pytest.mark.filterwarnings("ignore:All-NaN slice encountered")
def test_percentile_interval_equals_numpy_nanquantile():
    values = np.random.default_rng(0).normal(size=(3, 101, 4))
    values[0, :50, 0] = np.nan
    values[1, :, 1] = np.nan
    low, high = percentile_interval(values, 0.9)
    expected = np.nanquantile(values, [0.05, 0.95], axis=1)
    np.testing.assert_allclose(low, expected[0])
    np.testing.assert_allclose(high, expected[1])


def test_bootstrap_interval_equals_fairlearn_n_boot_on_the_same_draws():
    frame = predictions(n=300)
    n_boot, random_state = 40, 7
    reference = MetricFrame(
        metrics=accuracy_score,
        y_true=frame["y_true"],
        y_pred=frame["y_pred"],
        sensitive_features=frame["race"],
        n_boot=n_boot,
        ci_quantiles=[0.025, 0.975],
        random_state=random_state,
    )
    # Fairlearn's draws: one seed per replicate, then DataFrame.sample(frac=1, replace=True).
    seeds = np.random.default_rng(random_state).integers(
        0, np.iinfo(np.uint32).max, n_boot, dtype=np.uint32
    )
    rows = np.stack([np.random.RandomState(s).randint(0, len(frame), len(frame)) for s in seeds])
    runs, (race,) = prepare(frame, attributes=["race"], classes=CLASSES)
    confusion = confusion_counts(
        race.codes[rows][None],
        runs.y_true[rows][None],
        runs.y_pred[:, rows],
        n_groups=race.n_buckets,
        n_classes=len(CLASSES),
    )
    low, high = percentile_interval(figures(confusion)["group"]["accuracy"], 0.95)
    expected_low, expected_high = reference.by_group_ci
    np.testing.assert_allclose(low[0, :2], expected_low[list(race.names)])
    np.testing.assert_allclose(high[0, :2], expected_high[list(race.names)])
    overall_low, _ = percentile_interval(figures(confusion)["summary"]["overall_accuracy"], 0.95)
    assert overall_low[0] == pytest.approx(reference.overall_ci[0])


def test_imputation_widens_intervals_when_labels_are_uncertain():
    frame = predictions()
    coin_flips = pd.DataFrame(0.5, index=frame["image_id"], columns=["A", "B"])
    tables = fairness_tables(
        frame,
        attributes=["race"],
        classes=CLASSES,
        draws=200,
        seed=1,
        posteriors={"race": coin_flips},
    )
    row = summary_row(tables, attribute="race")
    assert row["accuracy_gap_ci_low"] <= row["accuracy_gap"] <= row["accuracy_gap_ci_high"]
    # With coin-flip group labels the measured gap collapses towards zero.
    assert row["accuracy_gap_mi_low"] < row["accuracy_gap_ci_low"]
    # Group labels do not move overall accuracy, and both methods resample the same images.
    assert row["overall_accuracy_mi_low"] == row["overall_accuracy_ci_low"]
    assert row["overall_accuracy_mi_high"] == row["overall_accuracy_ci_high"]


def test_ground_truth_attributes_get_no_imputation_interval():
    frame = predictions().assign(race_source="ground_truth")
    tables = fairness_tables(
        frame,
        attributes=["race"],
        classes=CLASSES,
        draws=20,
        posteriors={"age": pd.DataFrame({"x": [1.0]}, index=["i0"])},
    )
    row = summary_row(tables, attribute="race")
    assert np.isnan(row["accuracy_gap_mi_low"]) and not np.isnan(row["accuracy_gap_ci_low"])


def test_draws_do_not_depend_on_chunking_or_the_runs_compared():
    np.testing.assert_array_equal(
        resampled_rows(50, range(2, 5), seed=1), resampled_rows(50, range(5), seed=1)[2:]
    )
    one = fairness_tables(predictions(), attributes=["race"], classes=CLASSES, draws=30, seed=5)
    both = fairness_tables(
        pd.concat([predictions(), predictions(seed=1, strategy="other")]),
        attributes=["race"],
        classes=CLASSES,
        draws=30,
        seed=5,
    )
    pd.testing.assert_frame_equal(
        one["summary"], both["summary"][both["summary"]["strategy"] == "baseline"]
    )


def test_paired_difference_of_identical_models_is_exactly_zero():
    frame = pd.concat([predictions(), predictions().assign(strategy="copy")])
    result = compare_runs(frame, attributes=["race"], classes=CLASSES, draws=50)["over_seeds"]
    copy = result[result["strategy"] == "copy"]
    assert (copy["delta"] == 0).all()
    assert (copy["delta_ci_low"] == 0).all() and (copy["delta_ci_high"] == 0).all()
    assert set(copy["verdict"]) == {"no clear change"}
    assert set(result["label_source"]) == {"inferred"}
    assert set(result["label_note"]) == {"race: inferred"}
    assert set(result.loc[result["strategy"] == "baseline", "verdict"]) == {"baseline"}


def test_paired_interval_is_narrower_than_the_unpaired_one():
    better = predictions(seed=0, strategy="baseline")
    # The same model except that it gets 30 more group-B images right.
    improved = better.copy().assign(strategy="fixed")
    wrong_b = improved.index[(improved["race"] == "B") & (improved["y_pred"] != improved["y_true"])]
    improved.loc[wrong_b[:30], "y_pred"] = improved.loc[wrong_b[:30], "y_true"]
    frame = pd.concat([better, improved])
    result = compare_runs(frame, attributes=["race"], classes=CLASSES, draws=400, seed=2)
    table = result["over_seeds"].set_index(["strategy", "metric"])
    gap = table.loc[("fixed", "accuracy_gap")]
    assert gap["delta"] < 0
    assert gap["verdict"] == "better"  # the gap narrowed beyond sampling noise
    assert table.loc[("fixed", "worst_group_accuracy"), "verdict"] == "better"
    unpaired_width = sum(
        table.loc[(s, "accuracy_gap"), "estimate_ci_high"]
        - table.loc[(s, "accuracy_gap"), "estimate_ci_low"]
        for s in ("baseline", "fixed")
    )
    assert gap["delta_ci_high"] - gap["delta_ci_low"] < unpaired_width / 2
    assert table.loc[("fixed", "accuracy_gap"), "better_when"] == "lower"


def test_comparison_aggregates_over_seeds():
    runs = []
    for seed in (0, 1, 2):
        for strategy, quality in (("baseline", seed), ("fixed", 10 + seed)):
            runs.append(predictions(seed=quality, strategy=strategy).assign(seed=seed))
    frame = pd.concat(runs)
    result = compare_runs(frame, attributes=["race"], classes=CLASSES, draws=40)
    by_seed, over_seeds = result["by_seed"], result["over_seeds"]
    assert "seed" not in over_seeds.columns
    assert set(over_seeds["n_seeds"]) == {3}
    accuracy = by_seed[(by_seed["metric"] == "overall_accuracy") & (by_seed["strategy"] == "fixed")]
    assert len(accuracy) == 3
    mean = over_seeds[
        (over_seeds["metric"] == "overall_accuracy") & (over_seeds["strategy"] == "fixed")
    ].iloc[0]
    assert mean["delta"] == pytest.approx(accuracy["delta"].mean())
    assert mean["delta_sd"] == pytest.approx(accuracy["delta"].std(ddof=1))
    assert mean["estimate_sd"] == pytest.approx(accuracy["estimate"].std(ddof=1))
    assert mean["delta_ci_low"] <= mean["delta"] <= mean["delta_ci_high"]


def test_comparison_needs_a_baseline_per_seed():
    frame = pd.concat([predictions().assign(seed=0), predictions(strategy="fixed").assign(seed=1)])
    with pytest.raises(ValueError, match="no 'baseline' run with the same"):
        compare_runs(frame, attributes=["race"], classes=CLASSES, draws=5)


def test_group_figures_aggregate_over_seeds():
    frame = pd.concat([predictions(seed=s).assign(seed=s) for s in (0, 1, 2)], ignore_index=True)
    groups = fairness_tables(frame, attributes=["race"], classes=CLASSES, draws=0)["group_metrics"]
    aggregated = aggregate_over_seeds(groups, figures=["accuracy"]).set_index("group")
    per_seed = groups[groups["group"] == "B"]["accuracy"]
    assert aggregated.loc["B", "n_seeds"] == 3
    assert aggregated.loc["B", "accuracy_mean"] == pytest.approx(per_seed.mean())
    assert aggregated.loc["B", "accuracy_sd"] == pytest.approx(per_seed.std(ddof=1))
    assert aggregated.loc["B", "accuracy_max"] == per_seed.max()
    with pytest.raises(ValueError, match="no seed column"):
        aggregate_over_seeds(groups.drop(columns="seed"), figures=["accuracy"])
