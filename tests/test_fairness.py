"""Tests of fairfer.fairness on synthetic predictions whose metrics are worked out by hand.

Fixture (per strategy; 10 images per race group, classes happiness / neutral only):

- race A: 5 happiness all correct; 5 neutral, 3 correct and 2 predicted happiness -> acc 0.8.
  Happiness images are gender "f", neutral ones "m".
- race B, "baseline": 5 happiness, 2 correct and 3 predicted surprise; 5 neutral all correct
  -> acc 0.7. In "balanced" only 1 happiness goes to surprise -> acc 0.9.
  Happiness images are gender "m", neutral ones "f".
- 3 images of unknown race: neutral predicted fear (all wrong), so any leak of them into a
  disparity would show up as a fear disparity.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from fairfer.fairness import (
    DELTA_METRICS,
    UNKNOWN_GROUP,
    attribute_label,
    compare_strategies,
    fairness_summary,
    group_metrics,
    one_vs_rest_disparities,
    write_table,
)

CLASSES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


def _rows(strategy: str, race: str | None, gender: str | None, y_true: str, y_pred: str, n: int):
    return [
        {"strategy": strategy, "race": race, "gender": gender, "y_true": y_true, "y_pred": y_pred}
    ] * n


def _predictions() -> pd.DataFrame:
    rows = []
    for strategy, b_happy_correct in (("baseline", 2), ("balanced", 4)):
        rows += _rows(strategy, "A", "f", "happiness", "happiness", 5)
        rows += _rows(strategy, "A", "m", "neutral", "neutral", 3)
        rows += _rows(strategy, "A", "m", "neutral", "happiness", 2)
        rows += _rows(strategy, "B", "m", "happiness", "happiness", b_happy_correct)
        rows += _rows(strategy, "B", "m", "happiness", "surprise", 5 - b_happy_correct)
        rows += _rows(strategy, "B", "f", "neutral", "neutral", 5)
        rows += _rows(strategy, None, "f", "neutral", "fear", 3)
    frame = pd.DataFrame(rows)
    frame.insert(0, "image_id", [f"img{i:03d}" for i in range(len(frame))])
    frame["race_source"] = "inferred"
    frame["race_confidence"] = np.where(frame["race"].isna(), np.nan, 0.9)
    frame["gender_source"] = "ground_truth"
    frame["gender_confidence"] = np.nan
    # Shuffled index: the functions must not rely on a default RangeIndex.
    return frame.set_index(pd.Index(np.arange(len(frame))[::-1] * 7))


def _row(table: pd.DataFrame, **where: object) -> pd.Series:
    mask = np.logical_and.reduce([table[k] == v for k, v in where.items()])
    assert mask.sum() == 1, f"expected one row where {where}, got {int(mask.sum())}"
    return table[mask].iloc[0]


def test_group_metrics_match_hand_computed_values() -> None:
    table = group_metrics(_predictions(), sensitive="race", classes=CLASSES)

    assert list(table.columns[:7]) == [
        "strategy",
        "attribute",
        "group",
        "race",
        "known",
        "count",
        "accuracy",
    ]
    assert [f"recall_{c}" for c in CLASSES] == list(table.columns[7:])
    assert list(table["group"]) == ["A", "B", UNKNOWN_GROUP] * 2

    a = _row(table, strategy="baseline", group="A")
    assert (a["attribute"], a["count"], a["known"]) == ("race", 10, True)
    assert a["accuracy"] == pytest.approx(0.8)
    assert a["recall_happiness"] == pytest.approx(1.0)
    assert a["recall_neutral"] == pytest.approx(0.6)
    b = _row(table, strategy="baseline", group="B")
    assert b["accuracy"] == pytest.approx(0.7)
    assert b["recall_happiness"] == pytest.approx(0.4)
    assert b["recall_neutral"] == pytest.approx(1.0)
    assert _row(table, strategy="balanced", group="B")["accuracy"] == pytest.approx(0.9)
    # No image of these classes in the group: recall is undefined, not 0.
    assert np.isnan(a["recall_surprise"]) and np.isnan(a["recall_contempt"])


def test_null_attribute_rows_form_a_separate_unknown_row() -> None:
    table = group_metrics(_predictions(), sensitive="race", classes=CLASSES)

    unknown = _row(table, strategy="baseline", group=UNKNOWN_GROUP)
    assert unknown["count"] == 3
    assert not unknown["known"]
    assert unknown["race"] is None
    assert unknown["accuracy"] == 0.0
    assert unknown["recall_neutral"] == 0.0
    # Known groups still hold exactly their own rows.
    assert table.loc[table["known"] & (table["strategy"] == "baseline"), "count"].sum() == 20


def test_intersectional_groups_and_partially_null_rows() -> None:
    predictions = _predictions()
    # A known race with a null gender is unknown for the intersection only.
    first_a_f = predictions.index[(predictions["race"] == "A") & (predictions["gender"] == "f")][0]
    predictions.loc[first_a_f, "gender"] = None

    table = group_metrics(predictions, sensitive=["race", "gender"], classes=CLASSES)
    baseline = table[table["strategy"] == "baseline"]

    assert set(baseline["attribute"]) == {"race x gender"}
    assert list(baseline["group"]) == ["A x f", "A x m", "B x f", "B x m", UNKNOWN_GROUP]
    expected = {"A x f": (4, 1.0), "A x m": (5, 0.6), "B x f": (5, 1.0), "B x m": (5, 0.4)}
    for group, (n, accuracy) in expected.items():
        row = _row(baseline, group=group)
        assert row["count"] == n
        assert row["accuracy"] == pytest.approx(accuracy)
        assert (row["race"], row["gender"]) == tuple(group.split(" x "))
    assert _row(baseline, group=UNKNOWN_GROUP)["count"] == 3 + 1
    assert attribute_label(["race", "gender"]) == "race x gender"


def test_one_vs_rest_disparities_match_hand_computed_values() -> None:
    table = one_vs_rest_disparities(_predictions(), sensitive="race", classes=CLASSES)
    baseline = table[table["strategy"] == "baseline"]

    assert list(baseline["class"]) == CLASSES
    happiness = _row(baseline, **{"class": "happiness"})
    # Selection rate A 7/10, B 2/10; TPR A 1.0, B 0.4; FPR A 2/5, B 0/5.
    assert happiness["demographic_parity_difference"] == pytest.approx(0.5)
    assert happiness["equalized_odds_difference"] == pytest.approx(0.6)
    assert (happiness["n"], happiness["n_groups"], happiness["n_positive"]) == (20, 2, 10)
    neutral = _row(baseline, **{"class": "neutral"})
    assert neutral["demographic_parity_difference"] == pytest.approx(0.2)
    assert neutral["equalized_odds_difference"] == pytest.approx(0.4)
    assert _row(baseline, **{"class": "surprise"})[
        "demographic_parity_difference"
    ] == pytest.approx(0.3)
    # The unknown-race rows, all predicted fear, are not a group.
    assert _row(baseline, **{"class": "fear"})["demographic_parity_difference"] == 0.0


def test_one_vs_rest_avoids_fairlearn_multiclass_pitfall() -> None:
    known = _predictions().dropna(subset=["race"])
    known = known[known["strategy"] == "baseline"]
    table = one_vs_rest_disparities(known, sensitive="race", classes=CLASSES)
    ours = table.set_index("class")["demographic_parity_difference"]

    code = {c: i for i, c in enumerate(CLASSES)}
    y_true_codes, y_pred_codes = known["y_true"].map(code), known["y_pred"].map(code)
    default_codes = demographic_parity_difference(
        y_true_codes, y_pred_codes, sensitive_features=known["race"]
    )
    default_strings = demographic_parity_difference(
        known["y_true"], known["y_pred"], sensitive_features=known["race"]
    )
    # Fairlearn's default silently scores the label 1 only: class 1 (happiness) for integer
    # codes, nothing at all for string labels; neutral's true disparity is 0.2.
    assert ours["neutral"] == pytest.approx(0.2)
    assert default_codes == pytest.approx(ours["happiness"])
    assert default_codes != pytest.approx(ours["neutral"])
    assert default_strings == 0.0
    with pytest.raises(ValueError):
        equalized_odds_difference(y_true_codes, y_pred_codes, sensitive_features=known["race"])


def test_one_vs_rest_equals_fairlearn_binary_metrics_on_binarised_labels() -> None:
    rng = np.random.default_rng(0)
    n = 600
    y_true = rng.choice(CLASSES[:4], n)
    predictions = pd.DataFrame(
        {
            "strategy": "baseline",
            "race": rng.choice(["A", "B", "C"], n),
            "gender": rng.choice(["f", "m"], n),
            "y_true": y_true,
            "y_pred": np.where(rng.random(n) < 0.6, y_true, rng.choice(CLASSES[:5], n)),
        }
    )
    for sensitive in ("race", ["race", "gender"]):
        table = one_vs_rest_disparities(predictions, sensitive=sensitive, classes=CLASSES)
        features = predictions[sensitive]
        for label in CLASSES[:4]:
            is_true = (predictions["y_true"] == label).astype(int)
            is_pred = (predictions["y_pred"] == label).astype(int)
            row = _row(table, **{"class": label})
            assert row["eo_undefined_reason"] is None
            assert row["demographic_parity_difference"] == pytest.approx(
                demographic_parity_difference(is_true, is_pred, sensitive_features=features)
            )
            assert row["equalized_odds_difference"] == pytest.approx(
                equalized_odds_difference(is_true, is_pred, sensitive_features=features)
            )


def test_repeated_index_labels_give_the_same_results() -> None:
    predictions = _predictions()
    # What pd.concat of per-strategy tables without ignore_index produces.
    repeated = pd.concat(
        [part.reset_index(drop=True) for _, part in predictions.groupby("strategy", sort=False)]
    )
    assert not repeated.index.is_unique
    attributes = ["race", ["race", "gender"]]
    pd.testing.assert_frame_equal(
        fairness_summary(repeated, attributes=attributes, classes=CLASSES),
        fairness_summary(predictions, attributes=attributes, classes=CLASSES),
    )


def test_equalized_odds_undefined_when_a_group_lacks_the_class() -> None:
    predictions = pd.DataFrame(
        {
            "strategy": "baseline",
            "race": ["A", "A", "B", "B"],
            "y_true": ["contempt", "neutral", "neutral", "neutral"],
            "y_pred": ["contempt", "neutral", "neutral", "neutral"],
        }
    )
    table = one_vs_rest_disparities(predictions, sensitive="race", classes=CLASSES)
    contempt = _row(table, **{"class": "contempt"})

    # Fairlearn scores B's undefined true positive rate as 0 and reports a disparity of 1.
    spurious = equalized_odds_difference(
        (predictions["y_true"] == "contempt").astype(int),
        (predictions["y_pred"] == "contempt").astype(int),
        sensitive_features=predictions["race"],
    )
    assert spurious == 1.0
    assert np.isnan(contempt["equalized_odds_difference"])
    assert "no 'contempt' images in group(s) ['B']" in contempt["eo_undefined_reason"]
    assert contempt["demographic_parity_difference"] == pytest.approx(0.5)
    neutral = _row(table, **{"class": "neutral"})
    assert "only 'neutral' images in group(s) ['B']" in neutral["eo_undefined_reason"]
    assert _row(table, **{"class": "fear"})["eo_undefined_reason"].startswith("no 'fear'")


def test_fairness_summary_values() -> None:
    summary = fairness_summary(
        _predictions(), attributes=["race", ["race", "gender"]], classes=CLASSES
    )

    assert list(zip(summary["strategy"], summary["attribute"], strict=True)) == [
        ("baseline", "race"),
        ("baseline", "race x gender"),
        ("balanced", "race"),
        ("balanced", "race x gender"),
    ]
    race = _row(summary, strategy="baseline", attribute="race")
    assert (race["n"], race["n_unknown"], race["n_groups"]) == (23, 3, 2)
    assert race["overall_accuracy"] == pytest.approx(15 / 23)
    assert (race["worst_group"], race["best_group"]) == ("B", "A")
    assert race["worst_group_accuracy"] == pytest.approx(0.7)
    assert race["best_group_accuracy"] == pytest.approx(0.8)
    assert race["accuracy_gap"] == pytest.approx(0.1)
    assert race["accuracy_ratio"] == pytest.approx(0.7 / 0.8)
    # DP over the 8 classes: neutral 0.2, happiness 0.5, surprise 0.3, others 0.
    assert race["dp_difference_mean"] == pytest.approx(1.0 / 8)
    assert race["dp_difference_max"] == pytest.approx(0.5)
    # EO is defined for neutral (0.4) and happiness (0.6) only.
    assert race["eo_difference_mean"] == pytest.approx(0.5)
    assert race["eo_difference_max"] == pytest.approx(0.6)
    assert race["n_classes_eo_undefined"] == 6
    assert race["label_source"] == "inferred"

    both = _row(summary, strategy="baseline", attribute="race x gender")
    assert both["n_groups"] == 4
    assert (both["worst_group"], both["worst_group_accuracy"]) == ("B x m", pytest.approx(0.4))
    # Race is inferred and gender ground truth.
    assert both["label_source"] == "mixed"


def test_compare_strategies_deltas_against_baseline() -> None:
    summary = fairness_summary(
        _predictions(), attributes=["race", ["race", "gender"]], classes=CLASSES
    )
    compared = compare_strategies(summary, baseline="baseline")

    assert list(zip(compared["attribute"], compared["strategy"], strict=True)) == [
        ("race", "baseline"),
        ("race", "balanced"),
        ("race x gender", "baseline"),
        ("race x gender", "balanced"),
    ]
    baseline_deltas = compared.loc[
        compared["strategy"] == "baseline", [f"{m}_delta" for m in DELTA_METRICS]
    ]
    assert (baseline_deltas.fillna(0.0) == 0.0).all().all()

    race = _row(compared, strategy="balanced", attribute="race")
    # Balanced: A 0.8, B 0.9; happiness DP 0.3 / EO 0.4, neutral DP 0.2 / EO 0.4, surprise DP 0.1.
    assert race["overall_accuracy_delta"] == pytest.approx(2 / 23)
    assert race["worst_group_accuracy_delta"] == pytest.approx(0.1)
    assert race["accuracy_gap_delta"] == pytest.approx(0.0)
    assert race["accuracy_ratio_delta"] == pytest.approx(0.8 / 0.9 - 0.7 / 0.8)
    assert race["dp_difference_mean_delta"] == pytest.approx(0.6 / 8 - 1.0 / 8)
    assert race["dp_difference_max_delta"] == pytest.approx(0.3 - 0.5)
    assert race["eo_difference_mean_delta"] == pytest.approx(0.4 - 0.5)
    assert race["eo_difference_max_delta"] == pytest.approx(0.4 - 0.6)


def test_compare_strategies_rejects_missing_baseline() -> None:
    summary = fairness_summary(_predictions(), attributes=["race"], classes=CLASSES)
    with pytest.raises(ValueError, match=r"baseline strategy 'erm' is not in the summary"):
        compare_strategies(summary, baseline="erm")
    with pytest.raises(ValueError, match=r"several rows for \(strategy, attribute\)"):
        compare_strategies(pd.concat([summary, summary]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_pred": "joy"}, r"labels \['joy'\] in y_true/y_pred are not in classes"),
        ({"race": UNKNOWN_GROUP}, "reserved for null values"),
    ],
)
def test_bad_predictions_fail_clearly(change: dict[str, str], message: str) -> None:
    predictions = _predictions()
    for column, value in change.items():
        predictions.loc[predictions.index[0], column] = value
    with pytest.raises(ValueError, match=message):
        group_metrics(predictions, sensitive="race", classes=CLASSES)


def test_missing_columns_fail_clearly() -> None:
    with pytest.raises(ValueError, match=r"predictions lack columns \['age'\]"):
        group_metrics(_predictions(), sensitive="age", classes=CLASSES)
    with pytest.raises(ValueError, match=r"lack columns \['age_source'\]"):
        fairness_summary(
            _predictions().assign(age="20-29"), attributes=["race", "age"], classes=CLASSES
        )
    all_null = _predictions().assign(race=None)
    with pytest.raises(ValueError, match="has no row with a known 'race'"):
        one_vs_rest_disparities(all_null, sensitive="race", classes=CLASSES)


def test_write_table_round_trip(tmp_path) -> None:
    summary = fairness_summary(_predictions(), attributes=["race"], classes=CLASSES)
    paths = write_table(summary, tmp_path / "tables" / "summary.v1")

    assert [p.name for p in paths] == ["summary.v1.parquet", "summary.v1.csv", "summary.v1.md"]
    assert all(p.is_file() for p in paths)
    assert not list((tmp_path / "tables").glob(".*partial"))
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), summary)
    from_csv = pd.read_csv(paths[1])
    assert list(from_csv.columns) == list(summary.columns)
    assert from_csv["overall_accuracy"].tolist() == summary["overall_accuracy"].tolist()
    markdown = paths[2].read_text()
    assert markdown.splitlines()[0].startswith("| strategy")
    assert len(markdown.splitlines()) == 2 + len(summary)
    # Rounded in Markdown only: 15/23 = 0.65217...
    assert "0.6522" in markdown and "0.65217" not in markdown
    assert math.isclose(pd.read_parquet(paths[0])["overall_accuracy"][0], 15 / 23)
