"""Tests of the fairness figures on synthetic predictions whose metrics are worked out by hand,
and against scikit-learn's and fairlearn's own functions.

Fixture (per strategy, same 23 test images; 10 images per race group, classes happiness /
neutral only):

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
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
)
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from fairfer.fairness.metrics import (
    UNKNOWN_GROUP,
    align_runs,
    attribute_label,
    confusion_counts,
    group_coding,
    write_table,
)
from fairfer.fairness.tables import fairness_tables, with_interval_text

CLASSES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]


def _rows(strategy: str, race: str | None, gender: str | None, y_true: str, y_pred: str, n: int):
    return [
        {"strategy": strategy, "race": race, "gender": gender, "y_true": y_true, "y_pred": y_pred}
    ] * n


def _predictions() -> pd.DataFrame:
    parts = []
    for strategy, b_happy_correct in (("baseline", 2), ("balanced", 4)):
        rows = []
        rows += _rows(strategy, "A", "f", "happiness", "happiness", 5)
        rows += _rows(strategy, "A", "m", "neutral", "neutral", 3)
        rows += _rows(strategy, "A", "m", "neutral", "happiness", 2)
        rows += _rows(strategy, "B", "m", "happiness", "happiness", b_happy_correct)
        rows += _rows(strategy, "B", "m", "happiness", "surprise", 5 - b_happy_correct)
        rows += _rows(strategy, "B", "f", "neutral", "neutral", 5)
        rows += _rows(strategy, None, "f", "neutral", "fear", 3)
        frame = pd.DataFrame(rows)
        frame.insert(0, "image_id", [f"img{i:03d}" for i in range(len(frame))])
        parts.append(frame)
    frame = pd.concat(parts)
    frame["race_source"] = "inferred"
    frame["gender_source"] = "ground_truth"
    # Shuffled, repeated index: the functions must not rely on a default RangeIndex.
    return frame.set_index(pd.Index(np.arange(len(frame))[::-1] % 17))


def _tables(predictions: pd.DataFrame | None = None, **options) -> dict[str, pd.DataFrame]:
    options = {"attributes": ["race"], "classes": CLASSES, "draws": 0} | options
    return fairness_tables(_predictions() if predictions is None else predictions, **options)


def _row(table: pd.DataFrame, **where: object) -> pd.Series:
    mask = np.logical_and.reduce([table[k] == v for k, v in where.items()])
    assert mask.sum() == 1, f"expected one row where {where}, got {int(mask.sum())}"
    return table[mask].iloc[0]


def test_group_metrics_match_hand_computed_values() -> None:
    table = _tables()["group_metrics"]

    assert list(table.columns[:8]) == [
        "strategy",
        "attribute",
        "group",
        "race",
        "known",
        "count",
        "share",
        "small_group",
    ]
    assert list(table["group"]) == ["A", "B", UNKNOWN_GROUP] * 2
    a = _row(table, strategy="baseline", group="A")
    assert (a["attribute"], a["count"], a["known"], a["race"]) == ("race", 10, True, "A")
    assert a["accuracy"] == pytest.approx(0.8)
    # Recall happiness 1.0, neutral 0.6 -> balanced 0.8; F1 happiness 2*5/(5+7), neutral
    # 2*3/(5+3).
    assert a["balanced_accuracy"] == pytest.approx(0.8)
    assert a["macro_f1"] == pytest.approx((10 / 12 + 6 / 8) / 2)
    b = _row(table, strategy="baseline", group="B")
    assert b["accuracy"] == pytest.approx(0.7)
    # B's surprise predictions are a class predicted but never true: F1 0 counts in the mean.
    assert b["macro_f1"] == pytest.approx((4 / 7 + 1.0 + 0.0) / 3)
    assert _row(table, strategy="balanced", group="B")["accuracy"] == pytest.approx(0.9)
    assert a["small_group"] and a["label_source"] == "inferred"


def test_group_class_rates_are_one_vs_rest() -> None:
    table = _tables()["group_class_metrics"]
    happy_a = _row(table, strategy="baseline", group="A", **{"class": "happiness"})
    # A: 7 of 10 predicted happiness; 5 of 5 happiness found; 2 of 5 others wrongly.
    assert happy_a["selection_rate"] == pytest.approx(0.7)
    assert (happy_a["tpr"], happy_a["fnr"]) == (pytest.approx(1.0), pytest.approx(0.0))
    assert happy_a["fpr"] == pytest.approx(0.4)
    # Statistical parity difference of A against B: 0.7 - 0.2.
    assert happy_a["spd"] == pytest.approx(0.5)
    assert _row(table, strategy="baseline", group="B", **{"class": "happiness"})[
        "spd"
    ] == pytest.approx(-0.5)
    contempt = _row(table, strategy="baseline", group="A", **{"class": "contempt"})
    # No contempt image: the recall is undefined, not 0; the false positive rate is 0.
    assert contempt["n_true"] == 0 and np.isnan(contempt["tpr"]) and contempt["fpr"] == 0


def test_null_attribute_rows_form_a_separate_unknown_row() -> None:
    table = _tables()["group_metrics"]

    unknown = _row(table, strategy="baseline", group=UNKNOWN_GROUP)
    assert unknown["count"] == 3
    assert not unknown["known"]
    assert unknown["race"] is None
    assert unknown["accuracy"] == 0.0
    assert not unknown["small_group"]
    # Known groups still hold exactly their own rows.
    assert table.loc[table["known"] & (table["strategy"] == "baseline"), "count"].sum() == 20


def test_intersectional_groups_and_partially_null_rows() -> None:
    predictions = _predictions()
    # A known race with a null gender is unknown for the intersection only.
    first_a_f = (predictions["race"] == "A") & (predictions["gender"] == "f")
    first_a_f &= predictions["image_id"] == "img000"
    predictions.loc[first_a_f.to_numpy(), "gender"] = None

    table = _tables(predictions, attributes=[["race", "gender"]])["group_metrics"]
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
    assert set(baseline["label_source"]) == {"mixed"}
    assert set(baseline["label_note"]) == {"race: inferred; gender: ground truth"}


def test_groups_follow_the_attribute_order_not_the_alphabet() -> None:
    images = pd.DataFrame({"age": ["3-9", "20-29", "10-19", "more than 70", None]})
    groups = group_coding(images, "age")
    assert groups.names == ("3-9", "10-19", "20-29", "more than 70")
    assert list(groups.codes) == [0, 2, 1, 3, 4]


def test_class_disparities_match_hand_computed_values() -> None:
    table = _tables()["class_disparities"]
    baseline = table[table["strategy"] == "baseline"]

    assert list(baseline["class"]) == CLASSES
    happiness = _row(baseline, **{"class": "happiness"})
    # Selection rate A 7/10, B 2/10; TPR A 1.0, B 0.4; FPR A 2/5, B 0/5.
    assert happiness["dp_difference"] == pytest.approx(0.5)
    assert happiness["dp_ratio"] == pytest.approx(0.2 / 0.7)
    assert happiness["spd_max_abs"] == pytest.approx(0.5)
    assert happiness["eop_difference"] == pytest.approx(0.6)
    assert happiness["eo_difference"] == pytest.approx(0.6)
    assert (happiness["n_groups"], happiness["n_positive"]) == (2, 10)
    assert happiness["min_group_positives"] == 5
    neutral = _row(baseline, **{"class": "neutral"})
    assert neutral["dp_difference"] == pytest.approx(0.2)
    assert neutral["eo_difference"] == pytest.approx(0.4)
    assert neutral["eop_difference"] == pytest.approx(0.4)
    assert _row(baseline, **{"class": "surprise"})["dp_difference"] == pytest.approx(0.3)
    # The unknown-race rows, all predicted fear, are not a group.
    fear = _row(baseline, **{"class": "fear"})
    assert fear["dp_difference"] == 0.0
    assert np.isnan(fear["dp_ratio"])  # nobody predicted fear: the ratio is 0/0


def test_one_vs_rest_avoids_fairlearn_multiclass_pitfall() -> None:
    known = _predictions().dropna(subset=["race"])
    known = known[known["strategy"] == "baseline"]
    table = _tables(known)["class_disparities"]
    ours = table.set_index("class")["dp_difference"]

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


def _random_predictions(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y_true = rng.choice(CLASSES[:4], n)
    return pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "strategy": "baseline",
            "race": rng.choice(["A", "B", "C"], n),
            "race_source": "inferred",
            "gender": rng.choice(["f", "m"], n),
            "gender_source": "ground_truth",
            "y_true": y_true,
            "y_pred": np.where(rng.random(n) < 0.6, y_true, rng.choice(CLASSES[:5], n)),
        }
    )


def test_class_disparities_equal_fairlearn_binary_metrics_on_binarised_labels() -> None:
    predictions = _random_predictions()
    for sensitive in ("race", ["race", "gender"]):
        table = _tables(predictions, attributes=[sensitive])["class_disparities"]
        features = predictions[sensitive]
        for label in CLASSES[:4]:
            is_true = (predictions["y_true"] == label).astype(int)
            is_pred = (predictions["y_pred"] == label).astype(int)
            row = _row(table, **{"class": label})
            assert row["eo_undefined_reason"] is None
            for ours, theirs in (
                ("dp_difference", demographic_parity_difference),
                ("dp_ratio", demographic_parity_ratio),
                ("eo_difference", equalized_odds_difference),
                ("eop_difference", equal_opportunity_difference),
            ):
                assert row[ours] == pytest.approx(
                    theirs(is_true, is_pred, sensitive_features=features)
                ), (sensitive, label, ours)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_group_metrics_equal_scikit_learn_through_metric_frame() -> None:
    predictions = _random_predictions()
    table = _tables(predictions)["group_metrics"].set_index("group")
    reference = MetricFrame(
        metrics={
            "accuracy": accuracy_score,
            "balanced_accuracy": balanced_accuracy_score,
            "macro_f1": lambda t, p: f1_score(t, p, average="macro", zero_division=0),
        },
        y_true=predictions["y_true"],
        y_pred=predictions["y_pred"],
        sensitive_features=predictions["race"],
    ).by_group
    for metric in reference.columns:
        np.testing.assert_allclose(table.loc[reference.index, metric], reference[metric])


def test_confusion_counts_over_leading_axes() -> None:
    groups = np.array([0, 0, 1, 1])
    y_true = np.array([[0, 1, 1, 0], [1, 1, 1, 1]])
    y_pred = np.array([0, 1, 0, 0])
    counts = confusion_counts(groups, y_true, y_pred, n_groups=2, n_classes=2)
    assert counts.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(counts[0, 0], [[1, 0], [0, 1]])
    np.testing.assert_array_equal(counts[0, 1], [[1, 0], [1, 0]])
    np.testing.assert_array_equal(counts[1, 1], [[0, 0], [2, 0]])
    assert counts.sum() == 8


def test_equalized_odds_undefined_when_a_group_lacks_the_class() -> None:
    predictions = pd.DataFrame(
        {
            "image_id": list("abcd"),
            "strategy": "baseline",
            "race": ["A", "A", "B", "B"],
            "race_source": "ground_truth",
            "y_true": ["contempt", "neutral", "neutral", "neutral"],
            "y_pred": ["contempt", "neutral", "neutral", "neutral"],
        }
    )
    table = _tables(predictions)["class_disparities"]
    contempt = _row(table, **{"class": "contempt"})

    # Fairlearn scores B's undefined true positive rate as 0 and reports a disparity of 1.
    spurious = equalized_odds_difference(
        (predictions["y_true"] == "contempt").astype(int),
        (predictions["y_pred"] == "contempt").astype(int),
        sensitive_features=predictions["race"],
    )
    assert spurious == 1.0
    assert np.isnan(contempt["eo_difference"])
    assert np.isnan(contempt["eop_difference"])
    assert "no 'contempt' images in group(s) ['B']" in contempt["eo_undefined_reason"]
    assert contempt["dp_difference"] == pytest.approx(0.5)
    neutral = _row(table, **{"class": "neutral"})
    assert "only 'neutral' images in group(s) ['B']" in neutral["eo_undefined_reason"]
    assert _row(table, **{"class": "fear"})["eo_undefined_reason"].startswith("no 'fear'")


def test_summary_values() -> None:
    summary = _tables(attributes=["race", ["race", "gender"]], min_group_size=10)["summary"]

    assert list(zip(summary["strategy"], summary["attribute"], strict=True)) == [
        ("baseline", "race"),
        ("baseline", "race x gender"),
        ("balanced", "race"),
        ("balanced", "race x gender"),
    ]
    race = _row(summary, strategy="baseline", attribute="race")
    assert (race["n"], race["n_unknown"], race["n_groups"]) == (23, 3, 2)
    assert race["n_small_groups"] == 0
    assert race["overall_accuracy"] == pytest.approx(15 / 23)
    assert (race["worst_group"], race["best_group"]) == ("B", "A")
    assert race["worst_group_accuracy"] == pytest.approx(0.7)
    assert race["best_group_accuracy"] == pytest.approx(0.8)
    assert race["accuracy_gap"] == pytest.approx(0.1)
    assert race["accuracy_ratio"] == pytest.approx(0.7 / 0.8)
    # DP over the 8 classes: neutral 0.2, happiness 0.5, surprise 0.3, others 0.
    assert race["dp_difference_mean"] == pytest.approx(1.0 / 8)
    assert race["dp_difference_max"] == pytest.approx(0.5)
    # DP ratio, defined where some group is predicted the class: neutral 0.3 / 0.5,
    # happiness 0.2 / 0.7, surprise 0 / 0.3.
    assert race["dp_ratio_min"] == pytest.approx(0.0)
    assert race["dp_ratio_mean"] == pytest.approx((0.3 / 0.5 + 0.2 / 0.7 + 0.0) / 3)
    # EO is defined for neutral (0.4) and happiness (0.6) only.
    assert race["eo_difference_mean"] == pytest.approx(0.5)
    assert race["eo_difference_max"] == pytest.approx(0.6)
    assert race["eo_worst_class"] == "happiness"
    assert race["n_classes_eo_undefined"] == 6
    assert race["label_source"] == "inferred"

    both = _row(summary, strategy="baseline", attribute="race x gender")
    assert both["n_groups"] == 4
    assert both["n_small_groups"] == 4
    assert (both["worst_group"], both["worst_group_accuracy"]) == ("B x m", pytest.approx(0.4))
    # Race is inferred and gender ground truth.
    assert both["label_source"] == "mixed"


def test_label_accuracy_is_reported_for_inferred_attributes_only() -> None:
    summary = _tables(
        attributes=["race", "gender", ["race", "gender"]],
        label_accuracy={"race": 0.575, "gender": 0.83},
    )["summary"]
    baseline = summary[summary["strategy"] == "baseline"].set_index("attribute")
    assert baseline.loc["race", "inferred_label_accuracy"] == 0.575
    assert np.isnan(baseline.loc["gender", "inferred_label_accuracy"])  # ground truth
    assert baseline.loc["race", "label_note"] == "race: inferred (accuracy 0.575)"
    assert baseline.loc["race x gender", "label_note"] == (
        "race: inferred (accuracy 0.575); gender: ground truth"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"y_pred": "joy"}, r"labels \['joy'\] in y_true/y_pred are not in classes"),
        ({"race": UNKNOWN_GROUP}, "reserved for null values"),
    ],
)
def test_bad_predictions_fail_clearly(change: dict[str, str], message: str) -> None:
    predictions = _predictions()
    same_image = (predictions["image_id"] == "img000").to_numpy()
    for column, value in change.items():
        predictions.loc[same_image, column] = value
    with pytest.raises(ValueError, match=message):
        _tables(predictions)


def test_missing_columns_and_mismatched_runs_fail_clearly() -> None:
    with pytest.raises(ValueError, match=r"predictions lack columns \['age', 'age_source'\]"):
        _tables(attributes=["age"])
    with pytest.raises(ValueError, match="no row has a known 'race'"):
        _tables(_predictions().assign(race=None))
    predictions = _predictions()
    fewer = predictions[
        ~((predictions["strategy"] == "balanced") & (predictions["image_id"] == "img000"))
    ]
    with pytest.raises(ValueError, match="same test set"):
        align_runs(fewer, classes=CLASSES)
    relabelled = predictions.copy()
    relabelled.loc[
        ((relabelled["strategy"] == "balanced") & (relabelled["image_id"] == "img000")).to_numpy(),
        "race",
    ] = "B"
    with pytest.raises(ValueError, match="other 'race' values"):
        align_runs(relabelled, classes=CLASSES, columns=["race"])


def test_write_table_round_trip_with_a_readable_markdown_view(tmp_path) -> None:
    summary = _tables(draws=20)["summary"]
    paths = write_table(
        summary, tmp_path / "tables" / "summary.v1", markdown=with_interval_text(summary)
    )

    assert [p.name for p in paths] == ["summary.v1.parquet", "summary.v1.csv", "summary.v1.md"]
    assert not list((tmp_path / "tables").glob(".*partial"))
    pd.testing.assert_frame_equal(pd.read_parquet(paths[0]), summary)
    from_csv = pd.read_csv(paths[1])
    assert list(from_csv.columns) == list(summary.columns)
    assert from_csv["overall_accuracy"].tolist() == summary["overall_accuracy"].tolist()
    markdown = paths[2].read_text()
    assert markdown.splitlines()[0].startswith("| strategy")
    assert len(markdown.splitlines()) == 2 + len(summary)
    # Intervals folded into the figure's cell; rounded in Markdown only: 15/23 = 0.65217...
    assert "overall_accuracy_ci_low" not in markdown
    assert "0.652 [" in markdown and "0.65217" not in markdown
    assert "overall_accuracy (with label noise)" not in markdown  # no posteriors given
    assert math.isclose(pd.read_parquet(paths[0])["overall_accuracy"][0], 15 / 23)
