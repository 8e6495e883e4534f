"""Group-wise performance and fairness metrics of emotion predictions, per training strategy.

Inputs are the prediction tables written by the training rule: one row per test image with
``strategy``, ``y_true`` and ``y_pred`` (emotion names) and the demographic columns ``race``,
``gender``, ``age`` (null when unknown), their ``*_source`` ("ground_truth" / "inferred") and
``*_confidence``.

A *sensitive attribute* is either one column name (``"race"``) or a list of them
(``["race", "gender"]``), meaning their intersection; its label is ``"race x gender"`` and a
group label is e.g. ``"White x Female"``.

Rows whose attribute value is null (for an intersection: null in any of its columns) are not a
demographic group. :func:`group_metrics` reports them as one extra row, group ``"<unknown>"``
with ``known=False``, so their number and metrics stay visible; every disparity
(:func:`one_vs_rest_disparities`, :func:`fairness_summary`) ignores them.

Fairness metrics are computed one-vs-rest per emotion class on binarised labels
(``y_true == c`` vs ``y_pred == c``). Fairlearn's own functions are binary only and fail
silently on multiclass input: ``demographic_parity_difference`` counts the selection rate of the
label ``1`` (so string labels always score 0 and integer-coded labels score class 1 only), and
``equalized_odds_difference`` raises.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, count
from sklearn.metrics import accuracy_score

logger = logging.getLogger(__name__)

#: Group label of the rows whose sensitive attribute is null.
UNKNOWN_GROUP = "<unknown>"
#: Joins attribute names and group values of an intersection ("race x gender").
INTERSECTION_SEPARATOR = " x "
#: Summary metrics that :func:`compare_strategies` reports as deltas against the baseline.
DELTA_METRICS: tuple[str, ...] = (
    "overall_accuracy",
    "worst_group_accuracy",
    "accuracy_gap",
    "accuracy_ratio",
    "dp_difference_mean",
    "dp_difference_max",
    "eo_difference_mean",
    "eo_difference_max",
)

Sensitive = str | Sequence[str]
# Rows of the array returned by _class_rates.
_SELECTION_RATE, _TPR, _FPR = range(3)


def attribute_label(sensitive: Sensitive) -> str:
    """Readable name of a sensitive attribute or intersection of attributes.

    Parameters
    ----------
    sensitive : str or sequence of str
        One column name, or several meaning their intersection.

    Returns
    -------
    str
        ``"race"`` for ``"race"``, ``"race x gender"`` for ``["race", "gender"]``.
    """
    return INTERSECTION_SEPARATOR.join(_as_columns(sensitive))


def group_metrics(
    predictions: pd.DataFrame, *, sensitive: Sensitive, classes: Sequence[str]
) -> pd.DataFrame:
    """Accuracy and per-class recall of every demographic group, per strategy.

    Parameters
    ----------
    predictions : pandas.DataFrame
        Prediction table with ``strategy``, ``y_true``, ``y_pred`` and the sensitive columns.
    sensitive : str or sequence of str
        Attribute column, or several columns whose intersection defines the groups.
    classes : sequence of str
        Every emotion class, in training order; one ``recall_<class>`` column each.

    Returns
    -------
    pandas.DataFrame
        One row per (strategy, group) with columns ``strategy``, ``attribute``, ``group``, one
        column per attribute holding that group's value, ``known``, ``count``, ``accuracy`` and
        ``recall_<class>`` for each class. Groups are sorted by label within a strategy; empty
        intersections are omitted. Rows with a null attribute form one last row per strategy
        with group ``"<unknown>"``, ``known=False`` and null attribute values. A recall is NaN
        when the group has no image of that class.

    Raises
    ------
    ValueError
        If a column is missing, a label is not in ``classes`` or a real group is named
        ``"<unknown>"``.
    """
    columns = _as_columns(sensitive)
    _validate(predictions, columns=columns, classes=classes)
    metrics = {
        "count": count,
        "accuracy": accuracy_score,
        "rates": functools.partial(_class_rates, n_classes=len(classes)),
    }
    recalls = [f"recall_{c}" for c in classes]
    tables = []
    for strategy, frame in _by_strategy(predictions):
        features, known = _group_features(frame, columns)
        if not known.all():
            logger.info(
                "strategy %r: %d of %d rows have unknown %s; reported as group %r",
                strategy,
                int((~known).sum()),
                len(frame),
                attribute_label(columns),
                UNKNOWN_GROUP,
            )
        y_true, y_pred = _encode(frame, classes)
        frame_metrics = MetricFrame(
            metrics=metrics, y_true=y_true, y_pred=y_pred, sensitive_features=features
        )
        # MetricFrame lists every combination of an intersection's values; absent ones are NaN.
        table = frame_metrics.by_group.dropna(subset=["count"]).reset_index()
        table["count"] = table["count"].astype(int)
        table[recalls] = np.stack(table.pop("rates").to_list())[:, _TPR, :]
        # _group_features marks every column of an unknown row, so the first one suffices.
        table["known"] = table[columns[0]] != UNKNOWN_GROUP
        table["group"] = _group_labels(table[columns])
        table.loc[~table["known"], "group"] = UNKNOWN_GROUP
        table[columns] = table[columns].astype(object)
        table.loc[~table["known"], columns] = None
        table = pd.concat([table[table["known"]], table[~table["known"]]])
        tables.append(table.assign(strategy=strategy, attribute=attribute_label(columns)))
    ordered = ["strategy", "attribute", "group", *columns, "known", "count", "accuracy"]
    return pd.concat(tables, ignore_index=True)[ordered + recalls]


def one_vs_rest_disparities(
    predictions: pd.DataFrame, *, sensitive: Sensitive, classes: Sequence[str]
) -> pd.DataFrame:
    """Demographic parity and equalized odds differences per class, one-vs-rest, per strategy.

    For class ``c`` the labels are binarised to ``y_true == c`` and ``y_pred == c``. The
    demographic parity difference is max - min over groups of the selection rate
    P(pred = c | group); the equalized odds difference is the larger of the max - min
    differences of the true positive rate P(pred = c | true = c, group) and the false positive
    rate P(pred = c | true != c, group). These are the definitions of fairlearn's binary
    ``demographic_parity_difference`` and ``equalized_odds_difference`` (default
    ``method="between_groups"``, ``agg="worst_case"``) on the binarised labels; all classes are
    computed in one ``MetricFrame`` per strategy because calling those functions once per class
    was several times slower. Rows with a null attribute are ignored.

    Equalized odds needs every group to contain both images of class ``c`` (for the true
    positive rate) and images of other classes (for the false positive rate). Fairlearn would
    silently score an undefined rate as 0 and so report a spurious disparity; here the
    difference is NaN instead and ``eo_undefined_reason`` names the groups lacking them.

    Parameters
    ----------
    predictions : pandas.DataFrame
        Prediction table with ``strategy``, ``y_true``, ``y_pred`` and the sensitive columns.
    sensitive : str or sequence of str
        Attribute column, or several columns whose intersection defines the groups.
    classes : sequence of str
        Every emotion class; one row each.

    Returns
    -------
    pandas.DataFrame
        One row per (strategy, class) with columns ``strategy``, ``attribute``, ``class``,
        ``n`` (rows with a known attribute), ``n_groups``, ``n_positive`` (images of the class),
        ``demographic_parity_difference``, ``equalized_odds_difference`` and
        ``eo_undefined_reason`` (null when equalized odds is defined).

    Raises
    ------
    ValueError
        If a column is missing, a label is not in ``classes``, or a strategy has no row with a
        known attribute.
    """
    columns = _as_columns(sensitive)
    _validate(predictions, columns=columns, classes=classes)
    rows = []
    for strategy, frame in _by_strategy(predictions):
        features, known = _group_features(frame, columns)
        if not known.any():
            raise ValueError(
                f"strategy {strategy!r} has no row with a known {attribute_label(columns)!r}: "
                "every value is null; check the demographic labelling step or leave this "
                "attribute out"
            )
        groups = pd.Series(_group_labels(features[known]).to_numpy(), name="group")
        y_true, y_pred = (codes[known] for codes in _encode(frame, classes))
        by_group = MetricFrame(
            metrics={"rates": functools.partial(_class_rates, n_classes=len(classes))},
            y_true=y_true,
            y_pred=y_pred,
            sensitive_features=groups,
        ).by_group["rates"]
        # (group, rate, class); NaN marks a rate undefined in that group.
        rates = np.stack(by_group.to_list())
        spread = rates.max(axis=0) - rates.min(axis=0)
        for i, label in enumerate(classes):
            reason = _eo_undefined_reason(
                by_group.index, rates[:, _TPR, i], rates[:, _FPR, i], label=label
            )
            eo = max(spread[_TPR, i], spread[_FPR, i])
            rows.append(
                {
                    "strategy": strategy,
                    "attribute": attribute_label(columns),
                    "class": label,
                    "n": len(groups),
                    "n_groups": groups.nunique(),
                    "n_positive": int((y_true == i).sum()),
                    "demographic_parity_difference": float(spread[_SELECTION_RATE, i]),
                    "equalized_odds_difference": np.nan if reason else float(eo),
                    "eo_undefined_reason": reason,
                }
            )
    return pd.DataFrame(rows)


def fairness_summary(
    predictions: pd.DataFrame,
    *,
    attributes: Sequence[Sensitive],
    classes: Sequence[str],
) -> pd.DataFrame:
    """Headline accuracy and fairness figures per (strategy, attribute).

    Parameters
    ----------
    predictions : pandas.DataFrame
        Prediction table with ``strategy``, ``y_true``, ``y_pred``, the attribute columns and
        their ``<attribute>_source`` columns.
    attributes : sequence of (str or sequence of str)
        Attributes to summarise; a list entry is an intersection, e.g.
        ``["race", "gender", ["race", "gender"]]``.
    classes : sequence of str
        Every emotion class.

    Returns
    -------
    pandas.DataFrame
        One row per (strategy, attribute), strategies in order of appearance, with columns:

        - ``n``, ``overall_accuracy``: all the strategy's rows, unknown attribute included;
        - ``n_unknown``: rows with a null attribute, left out of everything below;
        - ``n_groups``, ``worst_group``, ``worst_group_accuracy``, ``best_group``,
          ``best_group_accuracy``, ``accuracy_gap`` (best - worst), ``accuracy_ratio``
          (worst / best, NaN if best is 0);
        - ``dp_difference_mean``, ``dp_difference_max``, ``eo_difference_mean``,
          ``eo_difference_max``: mean and max over classes of the one-vs-rest differences of
          :func:`one_vs_rest_disparities`, over the classes where they are defined;
        - ``n_classes_eo_undefined``: classes whose equalized odds difference is NaN;
        - ``label_source``: ``"ground_truth"``, ``"inferred"`` or ``"mixed"``, from the
          ``*_source`` values of the rows with a known attribute.

    Raises
    ------
    ValueError
        If a column is missing or a label is not in ``classes`` (see :func:`group_metrics`).
    """
    if not attributes:
        raise ValueError("attributes is empty: pass e.g. ['race', 'gender', ['race', 'gender']]")
    for sensitive in attributes:
        _validate(
            predictions,
            columns=[c for a in _as_columns(sensitive) for c in (a, f"{a}_source")],
            classes=classes,
        )
    parts = []
    for sensitive in attributes:
        groups = group_metrics(predictions, sensitive=sensitive, classes=classes)
        disparities = one_vs_rest_disparities(predictions, sensitive=sensitive, classes=classes)
        for strategy, frame in _by_strategy(predictions):
            parts.append(
                _summary_row(
                    frame,
                    columns=_as_columns(sensitive),
                    groups=groups[groups["strategy"] == strategy],
                    disparities=disparities[disparities["strategy"] == strategy],
                )
                | {"strategy": strategy}
            )
    summary = pd.DataFrame(parts)
    order = {s: i for i, s in enumerate(pd.unique(predictions["strategy"]))}
    summary = summary.sort_values("strategy", key=lambda s: s.map(order), kind="stable")
    first = ["strategy", "attribute"]
    return summary[first + [c for c in summary.columns if c not in first]].reset_index(drop=True)


def compare_strategies(summary: pd.DataFrame, *, baseline: str = "baseline") -> pd.DataFrame:
    """Put all strategies side by side with their change against the baseline strategy.

    Parameters
    ----------
    summary : pandas.DataFrame
        Output of :func:`fairness_summary`.
    baseline : str, default "baseline"
        Strategy the others are compared with.

    Returns
    -------
    pandas.DataFrame
        ``summary`` ordered by attribute (first-appearance order), baseline first then the
        other strategies, with a ``<metric>_delta`` column (strategy minus baseline, same
        attribute) for every metric in :data:`DELTA_METRICS`; the baseline's deltas are 0. A
        delta is NaN where the baseline lacks that attribute. For ``accuracy_gap`` and the
        DP/EO differences a negative delta is an improvement; for accuracies and
        ``accuracy_ratio`` a positive one is.

    Raises
    ------
    ValueError
        If columns are missing, ``baseline`` is not a strategy of ``summary``, or a
        (strategy, attribute) pair occurs twice.
    """
    missing = [c for c in ("strategy", "attribute", *DELTA_METRICS) if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks columns {missing}; pass the output of fairness_summary()")
    strategies = list(pd.unique(summary["strategy"]))
    if baseline not in strategies:
        raise ValueError(
            f"baseline strategy {baseline!r} is not in the summary (strategies: {strategies}); "
            "pass baseline= one of them"
        )
    duplicated = summary.duplicated(["strategy", "attribute"])
    if duplicated.any():
        pairs = summary.loc[duplicated, ["strategy", "attribute"]].to_records(index=False)
        raise ValueError(
            f"summary has several rows for (strategy, attribute) {list(map(tuple, pairs))}; "
            "each pair must occur once"
        )
    reference = summary[summary["strategy"] == baseline].set_index("attribute")
    compared = summary.copy()
    for metric in DELTA_METRICS:
        compared[f"{metric}_delta"] = compared[metric] - compared["attribute"].map(
            reference[metric]
        )
    strategy_rank = {s: i for i, s in enumerate([baseline, *strategies])}
    attribute_rank = {a: i for i, a in enumerate(pd.unique(summary["attribute"]))}
    compared = compared.sort_values(
        ["attribute", "strategy"],
        key=lambda s: s.map(attribute_rank if s.name == "attribute" else strategy_rank),
        kind="stable",
    )
    return compared.reset_index(drop=True)


def write_table(df: pd.DataFrame, stem: Path) -> list[Path]:
    """Write a table as ``<stem>.parquet``, ``<stem>.csv`` and ``<stem>.md``.

    Parquet and CSV keep full precision; the Markdown copy, meant for reading, shows floats
    with 4 decimals. Each file is written to a temporary sibling and renamed, so an
    interrupted job leaves no truncated file behind.

    Parameters
    ----------
    df : pandas.DataFrame
        Table to write; its index is not written.
    stem : pathlib.Path
        Output path without extension; parent directories are created.

    Returns
    -------
    list of pathlib.Path
        The Parquet, CSV and Markdown paths, in that order.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[Path], object]] = {
        "parquet": lambda path: df.to_parquet(path, index=False),
        "csv": lambda path: df.to_csv(path, index=False),
        "md": lambda path: path.write_text(
            df.to_markdown(index=False, floatfmt=".4f") + "\n", encoding="utf-8"
        ),
    }
    paths = []
    for extension, write in writers.items():
        path = stem.parent / f"{stem.name}.{extension}"
        partial = path.with_name(f".{path.name}.partial")
        write(partial)
        os.replace(partial, path)
        paths.append(path)
    return paths


def _as_columns(sensitive: Sensitive) -> list[str]:
    columns = [sensitive] if isinstance(sensitive, str) else list(sensitive)
    if not columns or len(set(columns)) != len(columns):
        raise ValueError(
            f"sensitive attribute {sensitive!r} must be a column name or a non-empty list of "
            "distinct column names, e.g. 'race' or ['race', 'gender']"
        )
    return columns


def _validate(predictions: pd.DataFrame, *, columns: Sequence[str], classes: Sequence[str]) -> None:
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes {list(classes)!r} must be a non-empty list of distinct names")
    required = ["strategy", "y_true", "y_pred", *columns]
    missing = [c for c in required if c not in predictions.columns]
    if missing:
        raise ValueError(
            f"predictions lack columns {missing} (present: {list(predictions.columns)}); "
            "pass the prediction table written by the training rule"
        )
    if predictions.empty:
        raise ValueError("predictions is empty: there is nothing to measure")
    for column in ("strategy", "y_true", "y_pred"):
        if predictions[column].isna().any():
            raise ValueError(f"predictions column {column!r} has null values; it must not")
    unknown = set(predictions["y_true"]).union(predictions["y_pred"]).difference(classes)
    if unknown:
        raise ValueError(
            f"labels {sorted(unknown)} in y_true/y_pred are not in classes {list(classes)}; "
            "pass the class list the model was trained with"
        )


def _by_strategy(predictions: pd.DataFrame) -> Iterator[tuple[str, pd.DataFrame]]:
    for strategy in pd.unique(predictions["strategy"]):
        yield strategy, predictions[predictions["strategy"] == strategy]


def _group_features(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Attribute values as strings, ``UNKNOWN_GROUP`` in every column of a row with a null."""
    # A positional index: concatenated prediction tables often repeat index labels.
    values = frame[list(columns)].astype(object).reset_index(drop=True)
    known = values.notna().all(axis=1)
    if values[known].isin([UNKNOWN_GROUP]).any().any():
        raise ValueError(
            f"a value of {list(columns)} is literally {UNKNOWN_GROUP!r}, which is reserved for "
            "null values; store unknown values as null instead"
        )
    # Fairlearn rejects null sensitive features, so unknown rows get a group of their own.
    values.loc[~known] = UNKNOWN_GROUP
    return values.astype(str), known.to_numpy()


def _encode(frame: pd.DataFrame, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Labels as class indices, which MetricFrame copies per group faster than strings."""
    index = pd.Index(classes)
    return index.get_indexer(frame["y_true"]), index.get_indexer(frame["y_pred"])


def _group_labels(values: pd.DataFrame) -> pd.Series:
    """Labels such as "White x Female" from an intersection's string columns.

    Vectorised: a row-wise ``agg`` took seconds on a test set.
    """
    return functools.reduce(
        lambda left, right: left + INTERSECTION_SEPARATOR + right,
        (values[column] for column in values.columns),
    )


def _class_rates(y_true: np.ndarray, y_pred: np.ndarray, *, n_classes: int) -> np.ndarray:
    """One-vs-rest selection, true positive and false positive rate of every class.

    One array-valued metric instead of one metric per rate and class: MetricFrame re-copies
    the labels for every metric it evaluates, which made 24 scalar metrics ~10x slower. A rate
    without a denominator is NaN, not the 0 that sklearn's confusion matrix gives.
    """
    n_true = np.bincount(y_true, minlength=n_classes)
    n_pred = np.bincount(y_pred, minlength=n_classes)
    hits = np.bincount(y_true[y_true == y_pred], minlength=n_classes)
    with np.errstate(invalid="ignore"):
        return np.stack(
            [n_pred / len(y_true), hits / n_true, (n_pred - hits) / (len(y_true) - n_true)]
        )


def _eo_undefined_reason(
    groups: pd.Index, tpr: np.ndarray, fpr: np.ndarray, *, label: str
) -> str | None:
    no_positives = groups[np.isnan(tpr)].tolist()
    no_negatives = groups[np.isnan(fpr)].tolist()
    reasons = []
    if no_positives:
        reasons.append(f"no {label!r} images in group(s) {no_positives}")
    if no_negatives:
        reasons.append(f"only {label!r} images in group(s) {no_negatives}")
    return "; ".join(reasons) or None


def _summary_row(
    frame: pd.DataFrame,
    *,
    columns: Sequence[str],
    groups: pd.DataFrame,
    disparities: pd.DataFrame,
) -> dict[str, object]:
    known = groups[groups["known"]]
    worst = known.loc[known["accuracy"].idxmin()]
    best = known.loc[known["accuracy"].idxmax()]
    known_rows = frame[list(columns)].notna().all(axis=1).to_numpy()
    sources = set(pd.unique(frame[[f"{c}_source" for c in columns]].to_numpy()[known_rows].ravel()))
    dp = disparities["demographic_parity_difference"]
    eo = disparities["equalized_odds_difference"]
    return {
        "attribute": attribute_label(columns),
        "n": len(frame),
        "n_unknown": int((~known_rows).sum()),
        "overall_accuracy": float(accuracy_score(frame["y_true"], frame["y_pred"])),
        "n_groups": len(known),
        "worst_group": worst["group"],
        "worst_group_accuracy": float(worst["accuracy"]),
        "best_group": best["group"],
        "best_group_accuracy": float(best["accuracy"]),
        "accuracy_gap": float(best["accuracy"] - worst["accuracy"]),
        "accuracy_ratio": float(worst["accuracy"] / best["accuracy"])
        if best["accuracy"] > 0
        else np.nan,
        "dp_difference_mean": float(dp.mean()),
        "dp_difference_max": float(dp.max()),
        "eo_difference_mean": float(eo.mean()),
        "eo_difference_max": float(eo.max()),
        "n_classes_eo_undefined": int(eo.isna().sum()),
        "label_source": sources.pop() if len(sources) == 1 else "mixed",
    }
