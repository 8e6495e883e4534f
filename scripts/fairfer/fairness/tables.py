"""Fairness tables with intervals, paired strategy comparisons and their readable form.

:func:`fairness_tables` gives, per run and sensitive attribute, four tables whose every
figure carries a bootstrap interval (``<figure>_ci_low`` / ``_ci_high``) and, where the
attribute's labels were inferred, a multiple-imputation interval (``_mi_low`` / ``_mi_high``;
:mod:`fairfer.fairness.uncertainty`). :func:`compare_runs` compares every strategy with the
baseline of
the same model and seed on the same resampled test images (a paired bootstrap of the
difference) and aggregates over seeds. :func:`with_interval_text` folds the interval columns
into ``"0.793 [0.780, 0.807]"`` cells for Markdown and HTML.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from fairfer.fairness.metrics import (
    CLASS_METRICS,
    GROUP_CLASS_METRICS,
    GROUP_METRICS,
    HIGHER_IS_BETTER,
    RUN_KEYS,
    SUMMARY_METRICS,
    UNKNOWN_GROUP,
    Groups,
    Runs,
    Sensitive,
    align_runs,
    as_columns,
    confusion_counts,
    figures,
    group_coding,
    label_note,
    label_sources,
)
from fairfer.fairness.uncertainty import (
    CORRECTED_METRICS,
    applicable_corrections,
    corrected_figures,
    correction_status,
    percentile_interval,
    point_confusion,
    replicate_figures,
)
from fairfer.group_labels.correction import LabelErrors

#: Summary figures shown in the headline comparison (the report, metrics.json), in this order.
HEADLINE_METRICS: tuple[str, ...] = (
    "overall_accuracy",
    "worst_group_accuracy",
    "accuracy_gap",
    "accuracy_ratio",
    "dp_difference_max",
    "eo_difference_max",
)

#: Interval column suffixes of each replicate method.
INTERVAL_SUFFIXES: dict[str, str] = {"bootstrap": "ci", "multiple_imputation": "mi"}
#: Verdict of a paired difference whose interval contains 0 (or of the baseline itself).
NO_CLEAR_CHANGE = "no clear change"


def prepare(
    predictions: pd.DataFrame,
    *,
    attributes: Sequence[Sensitive],
    classes: Sequence[str],
    posteriors: Mapping[str, pd.DataFrame] | None = None,
) -> tuple[Runs, list[Groups]]:
    """Align the runs and code the groups of every attribute (shared by the table builders)."""
    if not attributes:
        raise ValueError("attributes is empty: pass e.g. ['race', 'gender', ['race', 'gender']]")
    columns = [
        c for a in attributes for column in as_columns(a) for c in (column, f"{column}_source")
    ]
    runs = align_runs(predictions, classes=classes, columns=list(dict.fromkeys(columns)))
    extra = {column: list(table.columns) for column, table in (posteriors or {}).items()}
    return runs, [group_coding(runs.images, a, extra_values=extra) for a in attributes]


def fairness_tables(
    predictions: pd.DataFrame,
    *,
    attributes: Sequence[Sensitive],
    classes: Sequence[str],
    draws: int,
    level: float = 0.95,
    seed: int = 0,
    posteriors: Mapping[str, pd.DataFrame] | None = None,
    label_accuracy: Mapping[str, float] | None = None,
    min_group_size: int = 30,
    corrections: Mapping[str, LabelErrors] | None = None,
) -> dict[str, pd.DataFrame]:
    """Per-group, per-class and summary fairness tables of every run, with intervals.

    Parameters
    ----------
    predictions : pandas.DataFrame
        Prediction table(s) of one or more runs on the same test images.
    attributes : sequence of (str or sequence of str)
        Attributes to measure; a list entry is an intersection, e.g.
        ``["race", "gender", ["race", "gender"]]``.
    classes : sequence of str
        Every emotion class, in training order.
    draws : int
        Bootstrap replicates; 0 leaves every interval NaN.
    level : float, default 0.95
        Coverage of the percentile intervals.
    seed : int, default 0
        Seed of the resampling.
    posteriors : mapping of str to pandas.DataFrame, optional
        Per inferred attribute column, the calibrated posteriors of the images whose label was
        inferred (index ``image_id``, one column per class); adds the multiple-imputation
        intervals.
    label_accuracy : mapping of str to float, optional
        Measured accuracy of each inferred attribute's labels (FairFace validation).
    min_group_size : int, default 30
        Groups with fewer test images are flagged ``small_group`` (never dropped).
    corrections : mapping of str to LabelErrors, optional
        Per attribute column, the in-domain confusion matrix of its inferred labels
        (:func:`fairfer.group_labels.correction.label_errors`). Each inferred single attribute then
        also gets its figures corrected for group misclassification (matrix method,
        :mod:`fairfer.group_labels.correction`): ``count_corrected`` and ``accuracy_corrected`` per
        group, ``tpr_corrected`` per group and class, and the corrected worst and best group
        accuracy and gap in the summary, each with a ``_ci`` interval that resamples the test
        images and the validation images behind the confusion matrix; ``correction`` says
        whether (and why not) an attribute was corrected.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``group_metrics`` (one row per run, attribute and group, the ``<unknown>`` rows
        last), ``group_class_metrics`` (per known group and class), ``class_disparities``
        (per class) and ``summary`` (per run and attribute). Each starts with the run keys
        and ``attribute``, carries ``label_source`` and ``label_note``, and gives each figure
        of :data:`~fairfer.fairness.metrics.GROUP_METRICS`,
        :data:`~fairfer.fairness.metrics.GROUP_CLASS_METRICS`,
        :data:`~fairfer.fairness.metrics.CLASS_METRICS` or
        :data:`~fairfer.fairness.metrics.SUMMARY_METRICS`
        followed by its four interval columns.
    """
    runs, codings = prepare(
        predictions, attributes=attributes, classes=classes, posteriors=posteriors
    )
    applicable = applicable_corrections(codings, corrections, runs)
    replicates = (
        replicate_figures(
            runs,
            codings,
            draws=draws,
            seed=seed,
            posteriors=posteriors,
            corrections=applicable,
            min_group_size=min_group_size,
        )
        if draws
        else {}
    )
    imputed = set(posteriors or {})
    tables: dict[str, list[pd.DataFrame]] = {
        name: []
        for name in ("group_metrics", "group_class_metrics", "class_disparities", "summary")
    }
    for position, groups in enumerate(codings):
        confusion = point_confusion(runs, groups)
        point = figures(confusion)
        by_method = {
            method: by_attribute[groups.attribute]
            for method, by_attribute in replicates.items()
            if method in INTERVAL_SUFFIXES
            and (method == "bootstrap" or imputed.intersection(groups.columns))
        }
        corrected = _corrected(confusion, groups, applicable, replicates, min_group_size)
        context = _Context(runs, groups, point, by_method, level, min_group_size, corrected)
        status = correction_status(groups, corrections, runs)
        if corrected is not None and corrected[0]["diagnostics"]["ill_conditioned"].all():
            status = _ill_conditioned_status(applicable[groups.attribute])
        labels = {
            "label_source": label_sources(runs.images, groups.columns),
            "label_note": label_note(runs.images, groups.columns, label_accuracy or {}),
        }
        for name, build in (
            ("group_metrics", context.group_table),
            ("group_class_metrics", context.group_class_table),
            ("class_disparities", context.class_table),
            ("summary", context.summary_table),
        ):
            table = build().assign(**labels, _attribute=position)
            if name == "summary":
                table["correction"] = status
                accuracy = (label_accuracy or {}).get(groups.columns[0])
                inferred = len(groups.columns) == 1 and labels["label_source"] == "inferred"
                table["inferred_label_accuracy"] = accuracy if inferred and accuracy else np.nan
            tables[name].append(table)
    return {name: _ordered(parts, runs) for name, parts in tables.items()}


def compare_runs(
    predictions: pd.DataFrame,
    *,
    attributes: Sequence[Sensitive],
    classes: Sequence[str],
    draws: int,
    level: float = 0.95,
    seed: int = 0,
    posteriors: Mapping[str, pd.DataFrame] | None = None,
    baseline: str = "baseline",
    metrics: Sequence[str] = SUMMARY_METRICS,
    label_accuracy: Mapping[str, float] | None = None,
    corrections: Mapping[str, LabelErrors] | None = None,
    min_group_size: int = 30,
) -> dict[str, pd.DataFrame]:
    """Every strategy against the baseline on the same test images: paired bootstrap.

    Each draw resamples the test images once for every run (and, with ``posteriors``, the
    inferred group labels once), so a strategy and the baseline of the same model and seed
    are measured on the same replicate and their difference's interval reflects only the
    models' disagreement, not the test set's luck.

    Parameters
    ----------
    predictions : pandas.DataFrame
        Prediction tables of every run (run keys ``strategy`` and optionally ``model`` and
        ``seed``), on the same test images.
    attributes, classes, draws, level, seed, posteriors
        As for :func:`fairness_tables`; ``draws`` must be at least 1.
    baseline : str, default "baseline"
        Strategy every other one is compared with, within the same model and seed.
    metrics : sequence of str
        Summary figures to compare.
    label_accuracy : mapping of str to float, optional
        Measured accuracy of each inferred attribute's labels, for ``label_note``.
    corrections : mapping of str to LabelErrors, optional
        As for :func:`fairness_tables`: inferred single attributes also get the corrected
        summary figures (metrics ``<figure>_corrected``) with paired intervals that resample
        the confusion matrix in the same draws for every run.
    min_group_size : int, default 30
        Groups estimated smaller are left out of the corrected worst and best group.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``by_seed``: one row per run, attribute and metric with ``estimate``, its interval,
        ``baseline`` (the baseline's value), ``delta`` (estimate - baseline) with its paired
        intervals ``delta_ci_*`` and ``delta_mi_*``, ``better_when`` ("higher"/"lower") and
        ``verdict`` / ``verdict_mi`` ("better", "worse" or "no clear change": whether the
        interval excludes 0, read in the metric's direction; "baseline" on the baseline's
        rows). ``over_seeds``: the same per model, strategy, attribute and metric with the
        mean over seeds (``estimate``, ``baseline``, ``delta``), their standard deviations
        over seeds (``estimate_sd``, ``delta_sd``), ``n_seeds``, and intervals from the
        paired bootstrap of the seed-mean difference. With one seed the two agree. Both
        carry ``label_source`` and ``label_note`` per attribute.

    Raises
    ------
    ValueError
        If a run has no baseline run of the same model and seed.
    """
    runs, codings = prepare(
        predictions, attributes=attributes, classes=classes, posteriors=posteriors
    )
    keys = runs.keys
    partner_keys = [k for k in keys.columns if k != "strategy"]
    setups = [tuple(keys.loc[run, partner_keys]) for run in range(len(keys))]
    baseline_of = {
        setup: run
        for run, (setup, strategy) in enumerate(zip(setups, keys["strategy"], strict=True))
        if strategy == baseline
    }
    missing = [keys.iloc[r].to_dict() for r, s in enumerate(setups) if s not in baseline_of]
    if missing:
        raise ValueError(
            f"runs {missing} have no {baseline!r} run with the same {partner_keys or 'set-up'} "
            f"(strategies: {list(pd.unique(keys['strategy']))}); train it or pass baseline="
        )
    partner = np.array([baseline_of[setup] for setup in setups])
    applicable = applicable_corrections(codings, corrections, runs)
    replicates = replicate_figures(
        runs,
        codings,
        draws=draws,
        seed=seed,
        posteriors=posteriors,
        corrections=applicable,
        min_group_size=min_group_size,
    )
    imputed = set(posteriors or {})
    seedless = [k for k in keys.columns if k != "seed"]
    cohorts = keys.groupby(seedless, sort=False).indices
    by_seed, over_seeds = [], []
    for groups in codings:
        confusion = point_confusion(runs, groups)
        point = figures(confusion)["summary"]
        draws_by_method = {
            method: figures_[groups.attribute]["summary"]
            for method, figures_ in replicates.items()
            if method in INTERVAL_SUFFIXES
            and (method == "bootstrap" or imputed.intersection(groups.columns))
        }
        candidates = [(metric, point[metric], draws_by_method, metric) for metric in metrics]
        corrected = _corrected(confusion, groups, applicable, replicates, min_group_size)
        if corrected is not None:
            corrected_point, corrected_draws = corrected
            candidates += [
                (
                    metric,
                    corrected_point["summary"][metric],
                    {"bootstrap": corrected_draws["summary"]} if corrected_draws else {},
                    f"{metric}_corrected",
                )
                for metric in CORRECTED_METRICS["summary"]
                if metric in metrics
            ]
        for source, estimate, by_method_values, metric in candidates:
            reps = {method: values[source] for method, values in by_method_values.items()}
            common = {
                "attribute": groups.attribute,
                "metric": metric,
                "label_source": label_sources(runs.images, groups.columns),
                "label_note": label_note(runs.images, groups.columns, label_accuracy or {}),
            }
            by_seed.append(
                _comparison_rows(
                    keys, [[r] for r in range(len(keys))], estimate, reps, partner, level
                ).assign(**common)
            )
            cohort_rows = _comparison_rows(
                keys.drop(columns="seed", errors="ignore"),
                list(cohorts.values()),
                estimate,
                reps,
                partner,
                level,
            )
            over_seeds.append(cohort_rows.assign(**common))
    result = {}
    for name, parts in (("over_seeds", over_seeds), ("by_seed", by_seed)):
        table = pd.concat(parts, ignore_index=True)
        higher = table["metric"].str.removesuffix("_corrected").isin(HIGHER_IS_BETTER)
        table["better_when"] = np.where(higher, "higher", "lower")
        is_baseline = table["strategy"] == baseline
        for suffix, column in (("ci", "verdict"), ("mi", "verdict_mi")):
            table[column] = _verdicts(table, suffix)
            table.loc[is_baseline, column] = "baseline"
        first = [k for k in keys.columns if k in table.columns] + ["attribute", "metric"]
        rest = [c for c in table.columns if c not in first]
        result[name] = table[first + rest]
    return result


def aggregate_over_seeds(table: pd.DataFrame, *, figures: Sequence[str]) -> pd.DataFrame:
    """Mean and spread over seeds of per-run figures (e.g. a ``group_metrics`` table).

    Parameters
    ----------
    table : pandas.DataFrame
        Table of :func:`fairness_tables` over runs with a ``seed`` key.
    figures : sequence of str
        Figure columns to aggregate, e.g. ``["accuracy", "macro_f1"]``.

    Returns
    -------
    pandas.DataFrame
        One row per model, strategy, attribute (and group and class where the table has
        them) with ``n_seeds`` and, per figure, ``<figure>_mean``, ``<figure>_sd`` (sample
        standard deviation; NaN with one seed), ``<figure>_min`` and ``<figure>_max``.
    """
    if "seed" not in table.columns:
        raise ValueError("table has no seed column: there is nothing to aggregate over")
    keys = [c for c in (*RUN_KEYS, "attribute", "group", "class") if c in table and c != "seed"]
    grouped = table.groupby(keys, sort=False, dropna=False)
    result = grouped["seed"].nunique().rename("n_seeds").to_frame()
    for figure in figures:
        stats = grouped[figure].agg(["mean", "std", "min", "max"])
        stats.columns = [f"{figure}_{s}" for s in ("mean", "sd", "min", "max")]
        result = result.join(stats)
    return result.reset_index()


def confusion_by_group(
    predictions: pd.DataFrame, *, sensitive: Sensitive, classes: Sequence[str]
) -> pd.DataFrame:
    """Confusion counts of every run and known group, as a long table.

    Returns
    -------
    pandas.DataFrame
        Run keys, ``attribute``, ``group``, ``true``, ``predicted``, ``count``: one row per
        cell, zeros included.
    """
    runs, (groups,) = prepare(predictions, attributes=[sensitive], classes=classes)
    counts = confusion_counts(
        groups.codes[None],
        runs.y_true[None],
        runs.y_pred,
        n_groups=groups.n_buckets,
        n_classes=len(classes),
    )[:, : groups.n_known]
    index = pd.MultiIndex.from_product(
        [range(len(runs.keys)), groups.names, classes, classes],
        names=["_run", "group", "true", "predicted"],
    ).to_frame(index=False)
    table = runs.keys.iloc[index["_run"]].reset_index(drop=True)
    table["attribute"] = groups.attribute
    table[["group", "true", "predicted"]] = index[["group", "true", "predicted"]]
    table["count"] = counts.reshape(-1)
    return table


def with_interval_text(table: pd.DataFrame, *, digits: int = 3) -> pd.DataFrame:
    """Fold ``X``, ``X_ci_low``, ``X_ci_high`` into one text column ``"X [low, high]"``.

    The multiple-imputation interval ``X_mi_*`` becomes a column ``X (with label noise)``
    where any row has one. Other floats are rounded to ``digits``.
    """
    readable = table.copy()
    number = f"{{:.{digits}f}}"
    for column in [c for c in table.columns if f"{c}_ci_low" in table.columns]:
        values = table[column].map(lambda v: "" if pd.isna(v) else number.format(v))
        low, high = table[f"{column}_ci_low"], table[f"{column}_ci_high"]
        interval = [
            "" if pd.isna(lo) else f" [{number.format(lo)}, {number.format(hi)}]"
            for lo, hi in zip(low, high, strict=True)
        ]
        readable[column] = values + interval
        dropped = [f"{column}_ci_low", f"{column}_ci_high"]
        mi_low, mi_high = table.get(f"{column}_mi_low"), table.get(f"{column}_mi_high")
        if mi_low is not None:
            dropped += [f"{column}_mi_low", f"{column}_mi_high"]
            if mi_low.notna().any():
                position = readable.columns.get_loc(column) + 1
                readable.insert(
                    position,
                    f"{column} (with label noise)",
                    [
                        "" if pd.isna(lo) else f"[{number.format(lo)}, {number.format(hi)}]"
                        for lo, hi in zip(mi_low, mi_high, strict=True)
                    ],
                )
        readable = readable.drop(columns=dropped)
    floats = readable.select_dtypes("float").columns
    readable[floats] = readable[floats].round(digits)
    return readable


class _Context:
    """Figures of one attribute for all runs, and the tables built from them."""

    def __init__(
        self,
        runs: Runs,
        groups: Groups,
        point: dict[str, dict[str, np.ndarray]],
        replicates: Mapping[str, dict[str, dict[str, np.ndarray]]],
        level: float,
        min_group_size: int,
        corrected: tuple[dict, dict | None] | None = None,
    ) -> None:
        self.runs, self.groups, self.point = runs, groups, point
        self.replicates, self.level, self.min_group_size = replicates, level, min_group_size
        self.corrected = corrected

    def group_table(self) -> pd.DataFrame:
        groups = self.groups
        names = [*groups.names, UNKNOWN_GROUP]
        table = self._grid([("group", names)])
        values = pd.concat(
            [groups.values, pd.DataFrame({c: [None] for c in groups.columns})], ignore_index=True
        )
        for column in groups.columns:
            table.insert(
                table.columns.get_loc("group") + 1 + groups.columns.index(column),
                column,
                np.tile(values[column].to_numpy(dtype=object), len(self.runs.keys)),
            )
        counts = self.point["group"]["count"]
        table["known"] = table["group"] != UNKNOWN_GROUP
        table["count"] = counts.reshape(-1).astype(np.int64)
        table["share"] = (counts / counts.sum(axis=-1, keepdims=True)).reshape(-1)
        table["small_group"] = table["known"] & (table["count"] < self.min_group_size)
        table = self._with_metrics(table, "group", GROUP_METRICS)
        table = self._with_label_error_figures(table, "group")
        return table[table["known"] | (table["count"] > 0)]

    def group_class_table(self) -> pd.DataFrame:
        table = self._grid([("group", self.groups.names), ("class", self.runs.classes)])
        counts = self.point["group"]["count"][..., :-1]
        table["small_group"] = np.repeat(counts < self.min_group_size, len(self.runs.classes))
        table["n_true"] = self.point["group_class"]["n_true"].reshape(-1).astype(np.int64)
        table = self._with_metrics(table, "group_class", GROUP_CLASS_METRICS)
        return self._with_label_error_figures(table, "group_class")

    def class_table(self) -> pd.DataFrame:
        table = self._grid([("class", self.runs.classes)])
        n_true = self.point["group_class"]["n_true"]
        counts = self.point["group"]["count"][..., :-1]
        n_runs, n_classes = len(self.runs.keys), len(self.runs.classes)
        table["n_groups"] = np.repeat((counts > 0).sum(axis=-1), n_classes)
        table["n_positive"] = n_true.sum(axis=-2).reshape(-1).astype(np.int64)
        table["min_group_positives"] = n_true.min(axis=-2).reshape(-1).astype(np.int64)
        table = self._with_metrics(table, "class", CLASS_METRICS)
        bootstrap = self.replicates.get("bootstrap")
        table["eo_defined_share"] = (
            (~np.isnan(bootstrap["class"]["eo_difference"])).mean(axis=1).reshape(-1)
            if bootstrap
            else np.nan
        )
        reasons = []
        for run in range(n_runs):
            for c, label in enumerate(self.runs.classes):
                reasons.append(self._eo_undefined_reason(n_true[run, :, c], counts[run], label))
        table["eo_undefined_reason"] = reasons
        return table

    def summary_table(self) -> pd.DataFrame:
        table = self._grid([])
        counts = self.point["group"]["count"]
        known = counts[..., :-1]
        accuracy = self.point["group"]["accuracy"][..., :-1]
        names = np.asarray(self.groups.names, dtype=object)
        worst = np.nanargmin(accuracy, axis=-1)
        best = np.nanargmax(accuracy, axis=-1)
        rows = np.arange(len(table))
        table["n"] = self.point["group"]["count"].sum(axis=-1).astype(np.int64)
        table["n_unknown"] = counts[..., -1].astype(np.int64)
        table["n_groups"] = (known > 0).sum(axis=-1)
        table["n_small_groups"] = ((known > 0) & (known < self.min_group_size)).sum(axis=-1)
        table["worst_group"] = names[worst]
        table["worst_group_count"] = known[rows, worst].astype(np.int64)
        table["best_group"] = names[best]
        table["best_group_count"] = known[rows, best].astype(np.int64)
        table = self._with_metrics(table, "summary", SUMMARY_METRICS)
        eo = self.point["class"]["eo_difference"]
        table["n_classes_eo_undefined"] = np.isnan(eo).sum(axis=-1)
        defined = np.where(np.isnan(eo), -np.inf, eo)
        table["eo_worst_class"] = np.where(
            np.isnan(eo).all(axis=-1), None, np.asarray(self.runs.classes)[defined.argmax(axis=-1)]
        )
        table = self._with_label_error_figures(table, "summary")
        if self.corrected is None:
            table["worst_group_corrected"] = None
            table["correction_clipped_share"] = np.nan
        else:
            point = self.corrected[0]
            classes = np.asarray(point["classes"], dtype=object)
            worst = point["summary"]["worst_group_index"].reshape(-1)
            table["worst_group_corrected"] = [classes[i] if i >= 0 else None for i in worst]
            table["correction_clipped_share"] = point["diagnostics"]["clipped_share"].reshape(-1)
        return table

    def _with_label_error_figures(self, table: pd.DataFrame, level: str) -> pd.DataFrame:
        """Corrected and imputed figures of ``level`` (NaN where the attribute has none)."""
        columns = {}
        for metric in CORRECTED_METRICS[level]:
            name = f"{metric}_corrected"
            estimate = low = high = np.full(len(table), np.nan)
            if self.corrected is not None:
                point, draws = self.corrected
                estimate = point[level][metric].reshape(-1)
                if draws is not None and metric != "count":
                    low, high = percentile_interval(draws[level][metric], self.level)
                    low = np.where(np.isnan(estimate), np.nan, low.reshape(-1))
                    high = np.where(np.isnan(estimate), np.nan, high.reshape(-1))
            columns[name] = estimate
            if metric != "count":
                columns[f"{name}_ci_low"], columns[f"{name}_ci_high"] = low, high
        # The imputed estimate: the figure averaged over the multiple-imputation draws (labels
        # sampled from their calibrated posteriors), beside the observed and corrected ones.
        imputed = self.replicates.get("multiple_imputation")
        for metric in CORRECTED_METRICS[level]:
            values = np.full(len(table), np.nan)
            if imputed is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # never-drawn groups: NaN
                    values = np.nanmean(imputed[level][metric], axis=1).reshape(-1)
            columns[f"{metric}_imputed"] = values
        return pd.concat([table, pd.DataFrame(columns, index=table.index)], axis=1)

    def _grid(self, axes: Sequence[tuple[str, Sequence[str]]]) -> pd.DataFrame:
        """Rows in the C order of arrays shaped (n_runs, *axes), run keys first."""
        keys = self.runs.keys
        index = pd.MultiIndex.from_product(
            [range(len(keys)), *[labels for _, labels in axes]],
            names=["_run", *[name for name, _ in axes]],
        ).to_frame(index=False)
        table = keys.iloc[index["_run"]].reset_index(drop=True)
        table["attribute"] = self.groups.attribute
        table["_run"] = index["_run"]
        for name, _ in axes:
            table[name] = index[name]
        return table

    def _with_metrics(
        self, table: pd.DataFrame, level: str, metrics: Sequence[str]
    ) -> pd.DataFrame:
        columns = {}
        for metric in metrics:
            estimate = self.point[level][metric].reshape(-1)
            columns[metric] = estimate
            for method, suffix in INTERVAL_SUFFIXES.items():
                low = high = np.full(len(table), np.nan)
                if method in self.replicates:
                    low, high = percentile_interval(
                        self.replicates[method][level][metric], self.level
                    )
                    # An undefined figure (NaN) gets no interval, even where draws define it.
                    low = np.where(np.isnan(estimate), np.nan, low.reshape(-1))
                    high = np.where(np.isnan(estimate), np.nan, high.reshape(-1))
                columns[f"{metric}_{suffix}_low"] = low
                columns[f"{metric}_{suffix}_high"] = high
        return pd.concat([table, pd.DataFrame(columns, index=table.index)], axis=1)

    def _eo_undefined_reason(
        self, n_true: np.ndarray, counts: np.ndarray, label: str
    ) -> str | None:
        names = np.asarray(self.groups.names, dtype=object)
        present = counts > 0
        no_positives = names[present & (n_true == 0)].tolist()
        no_negatives = names[present & (n_true == counts)].tolist()
        reasons = []
        if no_positives:
            reasons.append(f"no {label!r} images in group(s) {no_positives}")
        if no_negatives:
            reasons.append(f"only {label!r} images in group(s) {no_negatives}")
        return "; ".join(reasons) or None


def _ill_conditioned_status(errors: LabelErrors) -> str:
    """Why a correction that was attempted gave no figures."""
    sizes = errors.confusion.sum(axis=1)
    empty = [name for name, size in zip(errors.classes, sizes, strict=True) if size == 0]
    if empty:
        return f"not corrected: the in-domain validation set has no image of true group(s) {empty}"
    condition = np.linalg.cond(errors.misclassification().T)
    return (
        f"not corrected: ill-conditioned (condition number {condition:.3g}, at most "
        f"{errors.max_condition:g} allowed, or over {errors.max_clipped_share:.0%} of the "
        "corrected counts negative)"
    )


def _corrected(
    confusion: np.ndarray,
    groups: Groups,
    applicable: Mapping[str, LabelErrors],
    replicates: Mapping[str, Mapping[str, dict]],
    min_group_size: int,
) -> tuple[dict, dict | None] | None:
    """Point and replicate corrected figures of one attribute, or None if not corrected;
    ``confusion`` is the attribute's observed counts (:func:`point_confusion`)."""
    errors = applicable.get(groups.attribute)
    if errors is None:
        return None
    point = corrected_figures(
        confusion,
        groups,
        errors,
        errors.misclassification(),
        min_group_size=min_group_size,
    )
    point["classes"] = list(errors.classes)
    return point, replicates.get("corrected", {}).get(groups.attribute)


def _comparison_rows(
    keys: pd.DataFrame,
    cohorts: Sequence[Sequence[int]],
    estimate: np.ndarray,
    replicates: Mapping[str, np.ndarray],
    partner: np.ndarray,
    level: float,
) -> pd.DataFrame:
    """One row per cohort of runs (one run, or the seeds of a model and strategy)."""
    rows = []
    for members in cohorts:
        members = np.asarray(members)
        partners = partner[members]
        deltas = estimate[members] - estimate[partners]
        row = keys.iloc[members[0]].to_dict() | {
            "n_seeds": len(members),
            "estimate": float(np.mean(estimate[members])),
            "estimate_sd": _sd(estimate[members]),
            "baseline": float(np.mean(estimate[partners])),
            "delta": float(np.mean(deltas)),
            "delta_sd": _sd(deltas),
        }
        for method, suffix in INTERVAL_SUFFIXES.items():
            values = replicates.get(method)
            if values is None:
                low = high = delta_low = delta_high = np.nan
            else:
                mean = values[members].mean(axis=0, keepdims=True)
                delta = (values[members] - values[partners]).mean(axis=0, keepdims=True)
                (low,), (high,) = percentile_interval(mean, level)
                (delta_low,), (delta_high,) = percentile_interval(delta, level)
                if np.isnan(row["estimate"]) or np.isnan(row["delta"]):
                    # An undefined figure gets no interval, even where draws define it.
                    low = high = delta_low = delta_high = np.nan
            row[f"estimate_{suffix}_low"], row[f"estimate_{suffix}_high"] = low, high
            row[f"delta_{suffix}_low"], row[f"delta_{suffix}_high"] = delta_low, delta_high
        rows.append(row)
    return pd.DataFrame(rows)


def _verdicts(table: pd.DataFrame, suffix: str) -> np.ndarray:
    low, high = table[f"delta_{suffix}_low"], table[f"delta_{suffix}_high"]
    higher = table["better_when"] == "higher"
    up, down = low > 0, high < 0
    verdict = np.where(up | down, np.where(up == higher, "better", "worse"), NO_CLEAR_CHANGE)
    return np.where(low.isna(), None, verdict)


def _sd(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else np.nan


def _ordered(parts: Sequence[pd.DataFrame], runs: Runs) -> pd.DataFrame:
    """Runs in order of appearance, then attributes as configured; rows otherwise as built."""
    table = pd.concat(parts, ignore_index=True)
    table = table.sort_values(["_run", "_attribute"], kind="stable").drop(
        columns=["_run", "_attribute"]
    )
    # Attribute value columns (race, gender, ...) right after the group they describe.
    first = [*runs.keys.columns, "attribute"]
    if "group" in table.columns:
        values = [c for c in runs.images.columns if c in table.columns]
        first += ["group", *values]
    return table[first + [c for c in table.columns if c not in first]].reset_index(drop=True)
