"""Group-wise performance and fairness metrics of emotion predictions, from confusion counts.

Inputs are the prediction tables written by the training rule: one row per test image with
``image_id``, ``strategy``, ``y_true`` and ``y_pred`` (emotion names), the demographic columns
``race``, ``gender``, ``age`` (null when unknown) and their ``*_source`` ("ground_truth" /
"inferred"). Tables of several training *runs* are identified by the run keys
:data:`RUN_KEYS` present (``strategy`` always; ``model`` and ``seed`` when the predictions
carry them); all runs must cover the same test images, which is what makes paired
comparisons between them possible.

A *sensitive attribute* is either one column name (``"race"``) or a list of them
(``["race", "gender"]``), meaning their intersection; its label is ``"race x gender"`` and a
group label is e.g. ``"White x Female"``.

Every figure is a function of the per-group confusion counts (true class x predicted class),
computed with one ``numpy.bincount`` (:func:`confusion_counts`) and turned into metrics by
:func:`figures`, which works on any leading axes. Point estimates and bootstrap replicates
therefore run through exactly the same code, and thousands of replicates cost seconds
(``benchmarks/bootstrap_cost.py``). ``tests/test_fairness.py`` checks the figures against
scikit-learn's and fairlearn's own functions.

Fairness metrics are one-vs-rest per emotion class on binarised labels (``y_true == c`` vs
``y_pred == c``). Fairlearn's own functions are binary only and fail silently on multiclass
input: ``demographic_parity_difference`` counts the selection rate of the label ``1`` (so
string labels always score 0 and integer-coded labels score class 1 only), and
``equalized_odds_difference`` raises.

Rows whose attribute value is null (for an intersection: null in any of its columns) are not
a demographic group: the group table reports them as one extra row, group ``"<unknown>"``
with ``known=False``, and every disparity ignores them.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fairfer.schemas import ATTRIBUTE_CLASSES

#: Columns that identify one training run in a prediction table, in this order.
RUN_KEYS: tuple[str, ...] = ("model", "strategy", "seed")
#: Group label of the rows whose sensitive attribute is null.
UNKNOWN_GROUP = "<unknown>"
#: Joins attribute names and group values of an intersection ("race x gender").
INTERSECTION_SEPARATOR = " x "

#: Per-group figures (one value per group).
GROUP_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1", "fpr", "fnr")
#: Per-group, per-class one-vs-rest figures.
GROUP_CLASS_METRICS: tuple[str, ...] = ("selection_rate", "tpr", "fpr", "fnr", "spd")
#: Per-class disparities across groups.
CLASS_METRICS: tuple[str, ...] = (
    "dp_difference",
    "dp_ratio",
    "spd_max_abs",
    "eo_difference",
    "eop_difference",
)
#: Headline figures of one run and attribute.
SUMMARY_METRICS: tuple[str, ...] = (
    "overall_accuracy",
    "worst_group_accuracy",
    "best_group_accuracy",
    "accuracy_gap",
    "accuracy_ratio",
    "dp_difference_max",
    "dp_difference_mean",
    "dp_ratio_min",
    "dp_ratio_mean",
    "spd_max",
    "spd_mean",
    "eo_difference_max",
    "eo_difference_mean",
    "eop_difference_max",
    "eop_difference_mean",
)
#: Summary figures where a larger value is better; for every other one smaller is better.
HIGHER_IS_BETTER: frozenset[str] = frozenset(
    {
        "overall_accuracy",
        "worst_group_accuracy",
        "best_group_accuracy",
        "accuracy_ratio",
        "dp_ratio_min",
        "dp_ratio_mean",
    }
)

Sensitive = str | Sequence[str]


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
    return INTERSECTION_SEPARATOR.join(as_columns(sensitive))


def as_columns(sensitive: Sensitive) -> list[str]:
    """The columns of a sensitive attribute: ``["race"]`` or ``["race", "gender"]``."""
    columns = [sensitive] if isinstance(sensitive, str) else list(sensitive)
    if not columns or len(set(columns)) != len(columns):
        raise ValueError(
            f"sensitive attribute {sensitive!r} must be a column name or a non-empty list of "
            "distinct column names, e.g. 'race' or ['race', 'gender']"
        )
    return columns


def row_groups(frame: pd.DataFrame, sensitive: Sensitive) -> pd.Series:
    """Each row's group of ``sensitive`` (``"White x Female"`` for an intersection), null where
    any of its attributes is unknown."""
    columns = as_columns(sensitive)
    known = frame[columns].notna().all(axis=1)
    names = frame[columns].astype(str).agg(INTERSECTION_SEPARATOR.join, axis=1)
    return names.where(known, None)


@dataclass(frozen=True)
class Runs:
    """Predictions of one or more training runs on the same test images, as class codes.

    Attributes
    ----------
    keys : pandas.DataFrame
        One row per run with its run key columns (:data:`RUN_KEYS` present), in order of
        first appearance.
    images : pandas.DataFrame
        The test images (``image_id``, attribute and ``*_source`` columns), one row each,
        positional index; the order of the code arrays.
    classes : tuple of str
        Emotion classes; codes index into it.
    y_true : numpy.ndarray
        True class codes, shape (n_images,).
    y_pred : numpy.ndarray
        Predicted class codes, shape (n_runs, n_images).
    """

    keys: pd.DataFrame
    images: pd.DataFrame
    classes: tuple[str, ...]
    y_true: np.ndarray
    y_pred: np.ndarray


def run_keys(predictions: pd.DataFrame) -> list[str]:
    """The run key columns present in a prediction table (``strategy`` at least)."""
    return [key for key in RUN_KEYS if key in predictions.columns]


def align_runs(
    predictions: pd.DataFrame, *, classes: Sequence[str], columns: Sequence[str] = ()
) -> Runs:
    """Encode every run's predictions on a common order of test images.

    Parameters
    ----------
    predictions : pandas.DataFrame
        Prediction table(s) of one or more runs: ``image_id``, ``strategy``, ``y_true``,
        ``y_pred`` and ``columns``.
    classes : sequence of str
        Every emotion class, in training order.
    columns : sequence of str
        Attribute (and source) columns to carry into :attr:`Runs.images`.

    Returns
    -------
    Runs

    Raises
    ------
    ValueError
        If a column is missing or null, a label is not in ``classes``, an image occurs twice
        in a run, or runs differ in their test images, true labels or attribute values.
    """
    _validate(predictions, columns=columns, classes=classes)
    keys = run_keys(predictions)
    frame = predictions.reset_index(drop=True)
    run_ids = frame.groupby(keys, sort=False).ngroup().to_numpy()
    key_table = frame.drop_duplicates(keys)[keys].reset_index(drop=True)
    first = frame[run_ids == 0]
    if first["image_id"].duplicated().any():
        raise ValueError("an image_id occurs twice in one run's predictions; each must be unique")
    images = first[["image_id", *dict.fromkeys(columns)]].reset_index(drop=True)
    position = pd.Series(np.arange(len(images)), index=images["image_id"])
    index = pd.Index(classes)
    y_true = index.get_indexer(first["y_true"])
    y_pred = np.empty((len(key_table), len(images)), dtype=np.int64)
    for run in range(len(key_table)):
        rows = frame[run_ids == run]
        label = key_table.iloc[run].to_dict()
        if len(rows) != len(images) or not rows["image_id"].isin(position.index).all():
            raise ValueError(
                f"run {label} has {len(rows)} predictions, not the same {len(images)} test "
                f"images as run {key_table.iloc[0].to_dict()}; every run must be evaluated on "
                "the same test set"
            )
        order = position[rows["image_id"]].to_numpy()
        if (index.get_indexer(rows["y_true"]) != y_true[order]).any():
            raise ValueError(f"run {label} has other true labels for the same images")
        for column in columns:
            if not _same_values(rows[column].to_numpy(), images[column].to_numpy()[order]):
                raise ValueError(f"run {label} has other {column!r} values for the same images")
        y_pred[run, order] = index.get_indexer(rows["y_pred"])
    return Runs(key_table, images, tuple(classes), y_true.astype(np.int64), y_pred)


@dataclass(frozen=True)
class Groups:
    """Group coding of one sensitive attribute (or intersection) over the test images.

    Group ``i < n_known`` is ``names[i]``; code ``n_known`` marks rows whose attribute is
    unknown and ``n_known + 1`` rows that a resampled label put in a combination absent from
    the observed data (left out of every figure).
    """

    attribute: str
    columns: tuple[str, ...]
    names: tuple[str, ...]
    values: pd.DataFrame
    vocabularies: tuple[pd.Index, ...]
    codes: np.ndarray
    lookup: np.ndarray

    @property
    def n_known(self) -> int:
        return len(self.names)

    @property
    def n_buckets(self) -> int:
        return len(self.names) + 2

    def encode(self, label_codes: Sequence[np.ndarray]) -> np.ndarray:
        """Group codes of per-column label codes (vocabulary positions, -1 for null)."""
        mixed: np.ndarray | int = 0
        unknown: np.ndarray | bool = False
        for codes, vocabulary in zip(label_codes, self.vocabularies, strict=True):
            mixed = mixed * len(vocabulary) + np.maximum(codes, 0)
            unknown = unknown | (codes < 0)
        groups = self.lookup[mixed]
        groups[np.broadcast_to(unknown, groups.shape)] = self.n_known
        return groups


def group_coding(
    images: pd.DataFrame,
    sensitive: Sensitive,
    *,
    extra_values: Mapping[str, Sequence[str]] | None = None,
    order: Mapping[str, Sequence[str]] = ATTRIBUTE_CLASSES,
) -> Groups:
    """Code the groups of ``sensitive`` among ``images``.

    Parameters
    ----------
    images : pandas.DataFrame
        One row per test image with the attribute columns.
    sensitive : str or sequence of str
        Attribute column, or several columns whose intersection defines the groups.
    extra_values : mapping of str to sequence of str, optional
        Further values a column may take when its labels are resampled (the posterior's
        classes); they extend the vocabulary, not the groups.
    order : mapping of str to sequence of str
        Preferred order of each column's values (FairFace order: age groups ascending);
        values not listed follow, sorted.

    Returns
    -------
    Groups
        Groups are the combinations present in ``images``, ordered by ``order``.

    Raises
    ------
    ValueError
        If a value is literally ``"<unknown>"`` or no row has a known value.
    """
    columns = as_columns(sensitive)
    extra_values = extra_values or {}
    vocabularies = []
    label_codes = []
    for column in columns:
        values = images[column]
        if values.isin([UNKNOWN_GROUP]).any():
            raise ValueError(
                f"a value of {column!r} is literally {UNKNOWN_GROUP!r}, which is reserved for "
                "null values; store unknown values as null instead"
            )
        present = set(values.dropna()) | set(extra_values.get(column, ()))
        preferred = [v for v in order.get(column, ()) if v in present]
        vocabulary = pd.Index(preferred + sorted(present.difference(preferred)))
        vocabularies.append(vocabulary)
        label_codes.append(vocabulary.get_indexer(values.astype(object).where(values.notna())))
    radix = [len(v) for v in vocabularies]
    mixed = np.zeros(len(images), dtype=np.int64)
    for codes, size in zip(label_codes, radix, strict=True):
        mixed = mixed * size + np.maximum(codes, 0)
    known = np.logical_and.reduce([codes >= 0 for codes in label_codes])
    if not known.any():
        raise ValueError(
            f"no row has a known {attribute_label(columns)!r}: every value is null; check the "
            "demographic labelling step or leave this attribute out"
        )
    observed = np.unique(mixed[known])
    lookup = np.full(int(np.prod(radix)), len(observed) + 1, dtype=np.int64)
    lookup[observed] = np.arange(len(observed))
    combinations = np.stack(np.unravel_index(observed, radix), axis=1)
    values = pd.DataFrame(
        {
            column: vocabulary[combinations[:, i]]
            for i, (column, vocabulary) in enumerate(zip(columns, vocabularies, strict=True))
        }
    )
    names = functools.reduce(
        lambda left, right: left + INTERSECTION_SEPARATOR + right,
        (values[column].astype(str) for column in columns),
    )
    return Groups(
        attribute=attribute_label(columns),
        columns=tuple(columns),
        names=tuple(names),
        values=values,
        vocabularies=tuple(vocabularies),
        codes=np.where(known, lookup[mixed], len(observed)),
        lookup=lookup,
    )


def confusion_counts(
    groups: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    n_groups: int,
    n_classes: int,
) -> np.ndarray:
    """Confusion counts per group with one ``bincount``, over any leading axes.

    Parameters
    ----------
    groups, y_true, y_pred : numpy.ndarray
        Integer codes of shapes broadcastable to (..., n_images).
    n_groups, n_classes : int
        Number of group codes and class codes.

    Returns
    -------
    numpy.ndarray
        Counts of shape (..., n_groups, n_classes, n_classes): [group, true class, predicted
        class].
    """
    cells = (groups * n_classes + y_true) * n_classes + y_pred
    leading = cells.shape[:-1]
    size = n_groups * n_classes * n_classes
    offsets = np.arange(int(np.prod(leading)), dtype=np.int64) * size
    flat = (cells.reshape(-1, cells.shape[-1]) + offsets[:, None]).ravel()
    counts = np.bincount(flat, minlength=len(offsets) * size)
    return counts.reshape(*leading, n_groups, n_classes, n_classes)


def figures(confusion: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Every group, class and summary figure of confusion counts, over any leading axes.

    Parameters
    ----------
    confusion : numpy.ndarray
        Counts (..., n_known + 2, K, K) from :func:`confusion_counts` with the group codes of
        :class:`Groups`: the known groups, then unknown, then unseen.

    Returns
    -------
    dict
        ``"group"``: :data:`GROUP_METRICS` and ``count``, shape (..., n_known + 1) (the known
        groups, then the unknown rows); ``"group_class"``: :data:`GROUP_CLASS_METRICS` and
        ``n_true``, shape (..., n_known, K); ``"class"``: :data:`CLASS_METRICS`, shape
        (..., K); ``"summary"``: :data:`SUMMARY_METRICS`, shape (...).

    Notes
    -----
    For group g and class c (one-vs-rest): selection rate P(pred = c | g); ``tpr`` (the
    recall) P(pred = c | true = c, g); ``fpr`` P(pred = c | true != c, g); ``fnr`` = 1 -
    ``tpr``; ``spd`` the statistical parity difference of g against the other known groups,
    P(pred = c | g) - P(pred = c | not g). Per group: ``balanced_accuracy`` is the mean
    recall over the classes present in the group (scikit-learn's definition), ``macro_f1``
    the mean F1 over the classes that are true or predicted in it, and ``fpr`` / ``fnr`` the
    means of the per-class rates. Per class, across the known groups present:
    ``dp_difference`` max - min selection rate, ``dp_ratio`` min / max (the disparate impact
    ratio), ``spd_max_abs`` the largest \\|spd\\|, ``eop_difference`` max - min ``tpr`` (equal
    opportunity) and ``eo_difference`` the larger of that and max - min ``fpr`` (equalized
    odds). A rate without a denominator is NaN, not 0; equal opportunity and equalized odds
    are NaN when a present group has no image of the class (or only images of it), where
    fairlearn would silently score the missing rate as 0. The summary takes worst case and
    mean over classes, skipping NaN, and the accuracy of the worst and best known group,
    their gap and their ratio (min / max, the fairness measure of Xu et al. 2020).
    """
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as meant
        labelled = confusion[..., :-1, :, :].astype(np.float64)
        n = labelled.sum(axis=(-2, -1))
        n_true = labelled.sum(axis=-1)
        n_pred = labelled.sum(axis=-2)
        hits = np.diagonal(labelled, axis1=-2, axis2=-1)
        tpr = hits / n_true
        fpr = (n_pred - hits) / (n[..., None] - n_true)
        selection = n_pred / n[..., None]
        f1 = np.where(n_true + n_pred > 0, 2 * hits / (n_true + n_pred), np.nan)
        accuracy = hits.sum(axis=-1) / n
        group = {
            "count": n,
            "accuracy": accuracy,
            "balanced_accuracy": np.nanmean(tpr, axis=-1),
            "macro_f1": np.nanmean(f1, axis=-1),
            "fpr": np.nanmean(fpr, axis=-1),
            "fnr": np.nanmean(1 - tpr, axis=-1),
        }

        known = slice(0, labelled.shape[-3] - 1)
        n_known, pred_known = n[..., known], n_pred[..., known, :]
        rest_pred = pred_known.sum(axis=-2, keepdims=True) - pred_known
        rest_n = n_known.sum(axis=-1, keepdims=True) - n_known
        spd = selection[..., known, :] - rest_pred / rest_n[..., None]
        group_class = {
            "n_true": n_true[..., known, :],
            "selection_rate": selection[..., known, :],
            "tpr": tpr[..., known, :],
            "fpr": fpr[..., known, :],
            "fnr": 1 - tpr[..., known, :],
            "spd": spd,
        }

        present = (n_known > 0)[..., None]
        sel_known = selection[..., known, :]
        dp_max, dp_min = np.nanmax(sel_known, axis=-2), np.nanmin(sel_known, axis=-2)
        tpr_known, fpr_known = tpr[..., known, :], fpr[..., known, :]
        tpr_defined = ~(present & np.isnan(tpr_known)).any(axis=-2)
        fpr_defined = ~(present & np.isnan(fpr_known)).any(axis=-2)
        tpr_spread = np.nanmax(tpr_known, axis=-2) - np.nanmin(tpr_known, axis=-2)
        fpr_spread = np.nanmax(fpr_known, axis=-2) - np.nanmin(fpr_known, axis=-2)
        eop = np.where(tpr_defined, tpr_spread, np.nan)
        eo = np.where(tpr_defined & fpr_defined, np.maximum(tpr_spread, fpr_spread), np.nan)
        by_class = {
            "dp_difference": dp_max - dp_min,
            "dp_ratio": np.where(dp_max > 0, dp_min / dp_max, np.nan),
            "spd_max_abs": np.nanmax(np.abs(spd), axis=-2),
            "eo_difference": eo,
            "eop_difference": eop,
        }

        all_hits = np.diagonal(confusion, axis1=-2, axis2=-1).sum(axis=(-2, -1))
        worst = np.nanmin(accuracy[..., known], axis=-1)
        best = np.nanmax(accuracy[..., known], axis=-1)
        summary = {
            "overall_accuracy": all_hits / confusion.sum(axis=(-3, -2, -1)),
            "worst_group_accuracy": worst,
            "best_group_accuracy": best,
            "accuracy_gap": best - worst,
            "accuracy_ratio": np.where(best > 0, worst / best, np.nan),
        }
        for name, values, worst_case in (
            ("dp_difference", by_class["dp_difference"], np.nanmax),
            ("dp_ratio", by_class["dp_ratio"], np.nanmin),
            ("spd", by_class["spd_max_abs"], np.nanmax),
            ("eo_difference", eo, np.nanmax),
            ("eop_difference", eop, np.nanmax),
        ):
            suffix = "min" if worst_case is np.nanmin else "max"
            summary[f"{name}_{suffix}"] = worst_case(values, axis=-1)
            summary[f"{name}_mean"] = np.nanmean(values, axis=-1)
    return {
        "group": group,
        "group_class": group_class,
        "class": by_class,
        "summary": {name: summary[name] for name in SUMMARY_METRICS},
    }


def label_sources(images: pd.DataFrame, columns: Sequence[str]) -> str:
    """``"ground_truth"``, ``"inferred"`` or ``"mixed"``: where the known labels came from."""
    known = images[list(columns)].notna().all(axis=1).to_numpy()
    sources = set(pd.unique(images[[f"{c}_source" for c in columns]].to_numpy()[known].ravel()))
    return sources.pop() if len(sources) == 1 else "mixed"


def label_note(
    images: pd.DataFrame, columns: Sequence[str], label_accuracy: Mapping[str, float]
) -> str:
    """Where each column's labels came from, e.g. ``"race: inferred (accuracy 0.575)"``."""
    parts = []
    for column in columns:
        source = label_sources(images, [column])
        accuracy = label_accuracy.get(column)
        detail = (
            f" (accuracy {accuracy:.3f})"
            if source != "ground_truth" and accuracy is not None
            else ""
        )
        parts.append(f"{column}: {source.replace('_', ' ')}{detail}")
    return "; ".join(parts)


def write_table(
    df: pd.DataFrame, stem: Path, *, markdown: pd.DataFrame | None = None
) -> list[Path]:
    """Write a table as ``<stem>.parquet``, ``<stem>.csv`` and ``<stem>.md``.

    Parquet and CSV keep full precision; the Markdown copy, meant for reading, shows
    ``markdown`` when given (e.g. :func:`fairfer.fairness.uncertainty.with_interval_text`) and
    ``df``
    otherwise, floats with 4 decimals. Each file is written to a temporary sibling and
    renamed, so an interrupted job leaves no truncated file behind.

    Parameters
    ----------
    df : pandas.DataFrame
        Table to write; its index is not written.
    stem : pathlib.Path
        Output path without extension; parent directories are created.
    markdown : pandas.DataFrame, optional
        Readable view of ``df`` for the Markdown copy.

    Returns
    -------
    list of pathlib.Path
        The Parquet, CSV and Markdown paths, in that order.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    readable = df if markdown is None else markdown
    writers: dict[str, Callable[[Path], object]] = {
        "parquet": lambda path: df.to_parquet(path, index=False),
        "csv": lambda path: df.to_csv(path, index=False),
        "md": lambda path: path.write_text(
            readable.to_markdown(index=False, floatfmt=".4f") + "\n", encoding="utf-8"
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


def _same_values(left: np.ndarray, right: np.ndarray) -> bool:
    return bool(pd.Series(left, dtype=object).equals(pd.Series(right, dtype=object)))


def _validate(predictions: pd.DataFrame, *, columns: Sequence[str], classes: Sequence[str]) -> None:
    if not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes {list(classes)!r} must be a non-empty list of distinct names")
    required = ["image_id", "strategy", "y_true", "y_pred", *columns]
    missing = [c for c in dict.fromkeys(required) if c not in predictions.columns]
    if missing:
        raise ValueError(
            f"predictions lack columns {missing} (present: {list(predictions.columns)}); "
            "pass the prediction table written by the training rule"
        )
    if predictions.empty:
        raise ValueError("predictions is empty: there is nothing to measure")
    for column in ("image_id", *run_keys(predictions), "y_true", "y_pred"):
        if predictions[column].isna().any():
            raise ValueError(f"predictions column {column!r} has null values; it must not")
    unknown = set(predictions["y_true"]).union(predictions["y_pred"]).difference(classes)
    if unknown:
        raise ValueError(
            f"labels {sorted(unknown)} in y_true/y_pred are not in classes {list(classes)}; "
            "pass the class list the model was trained with"
        )
