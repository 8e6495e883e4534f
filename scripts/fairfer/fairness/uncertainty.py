"""Bootstrap replicates of every figure, with inferred group labels treated as noisy.

Two intervals are reported for every figure:

- bootstrap (``*_ci_low`` / ``*_ci_high``): test images are resampled with replacement;
  group labels are held at their recorded value (for inferred attributes the classifier's
  most likely label). This is the usual sampling uncertainty, the same percentile interval
  as fairlearn's ``MetricFrame(n_boot=..., ci_quantiles=...)``.
- multiple imputation (``*_mi_low`` / ``*_mi_high``): each draw also samples every inferred
  group label from its calibrated posterior (ground-truth labels stay fixed), so the interval
  also carries the label noise of the race/gender/age classifiers. Attributes are sampled
  independently; an intersection uses the same draws as its components.

Both resample the same images in the same draws (separate random streams for images and
labels), so their intervals differ only by the label noise; every run and attribute also sees
the same resampled images, which makes the run-to-run differences paired.

The replicates are computed on confusion counts (:func:`fairfer.fairness.metrics.confusion_counts`)
for all draws of a chunk at once: no per-replicate DataFrame work.
"""

from __future__ import annotations

import json
import logging
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from fairfer.config_checks import attribute_names
from fairfer.fairness.metrics import Groups, Runs, confusion_counts, figures, label_sources
from fairfer.group_labels.correction import (
    LabelErrors,
    correct_counts,
    misclassification_matrix,
    resample_confusion,
    used_evaluation,
)
from fairfer.schemas import schema_metadata

logger = logging.getLogger(__name__)

#: Bound on the elements of one chunk's largest array (about 64 MiB of int64).
_CHUNK_ELEMENTS = 2**23

Figures = dict[str, dict[str, np.ndarray]]


def sample_labels(probabilities: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Class codes drawn from each row's posterior by inverting its CDF at ``uniform``.

    Parameters
    ----------
    probabilities : numpy.ndarray
        Posteriors (n_rows, n_classes); a row with NaN has no posterior.
    uniform : numpy.ndarray
        Uniform [0, 1) numbers (n_draws, n_rows), one per draw and row.

    Returns
    -------
    numpy.ndarray
        Codes (n_draws, n_rows) into the posterior's classes; -1 for rows without a posterior.
    """
    valid = ~np.isnan(probabilities).any(axis=1)
    weights = np.where(valid[:, None], probabilities, 1.0)
    cumulative = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    # The code is the number of cumulative probabilities below the uniform number: one pass
    # per class instead of a (draws, rows, classes) array.
    codes = np.zeros(uniform.shape, dtype=np.int64)
    for boundary in cumulative[:, :-1].T:
        codes += uniform > boundary
    codes[:, ~valid] = -1
    return codes


def resampled_rows(n_rows: int, draws: range, *, seed: int) -> np.ndarray:
    """Bootstrap row indices (len(draws), n_rows); draw ``d`` depends on ``seed`` and ``d`` only.

    One stream per draw keeps every draw the same whatever the chunking, the number of runs
    compared or the attributes measured, so per-run tables and paired comparisons agree.
    """
    return np.stack(
        [np.random.default_rng([seed, 0, d]).integers(0, n_rows, n_rows) for d in draws]
    )


def label_uniforms(n_rows: int, draws: range, *, seed: int, column: str) -> np.ndarray:
    """Uniform numbers (len(draws), n_rows) that sample ``column``'s labels in each draw."""
    stream = zlib.crc32(column.encode())
    return np.stack([np.random.default_rng([seed, 1, stream, d]).random(n_rows) for d in draws])


def point_confusion(runs: Runs, groups: Groups) -> np.ndarray:
    """Confusion counts (n_runs, n_buckets, K, K) of every run on the observed data."""
    return confusion_counts(
        groups.codes[None],
        runs.y_true[None],
        runs.y_pred,
        n_groups=groups.n_buckets,
        n_classes=len(runs.classes),
    )


def point_figures(runs: Runs, groups: Groups) -> Figures:
    """Figures of every run on the observed data; arrays lead with the run axis."""
    return figures(point_confusion(runs, groups))


#: Figures given corrected for group misclassification, per table level.
CORRECTED_METRICS: dict[str, tuple[str, ...]] = {
    "group": ("count", "accuracy"),
    "group_class": ("tpr",),
    "summary": ("worst_group_accuracy", "best_group_accuracy", "accuracy_gap"),
}


def corrected_figures(
    confusion: np.ndarray,
    groups: Groups,
    errors: LabelErrors,
    misclassification: np.ndarray,
    *,
    min_group_size: int,
) -> Figures:
    """Figures per *true* group, from confusion counts per inferred group (matrix method).

    Parameters
    ----------
    confusion : numpy.ndarray
        Counts (..., n_buckets, K, K) by inferred group, coded by ``groups`` (one column).
    groups : Groups
        Group coding of the attribute whose labels were inferred.
    errors : LabelErrors
        The classifier's classes and in-domain confusion matrix.
    misclassification : numpy.ndarray
        ``P(pred | true)`` (k, k), or one per draw broadcasting against the leading axes.
    min_group_size : int
        Groups estimated to hold fewer test images are left out of the corrected worst and
        best group (their corrected accuracy is too noisy to rank).

    Returns
    -------
    dict
        ``group`` (``count``, ``accuracy``; shape (..., n_known + 1) in the order of
        ``groups.names`` then the unknown rows), ``group_class`` (``tpr`` (..., n_known, K)),
        ``summary`` (:data:`CORRECTED_METRICS`, over every class of the classifier, and
        ``worst_group_index`` into ``errors.classes``, -1 where undefined) and
        ``diagnostics`` (``ill_conditioned``, ``clipped_share``). Ill-conditioned draws are NaN.
    """
    classes = list(errors.classes)
    k, n_known = len(classes), groups.n_known
    positions = [classes.index(name) for name in groups.names]
    lead = confusion.shape[:-3]
    by_class = np.zeros((*lead, k, *confusion.shape[-2:]), dtype=np.float64)
    by_class[..., positions, :, :] = confusion[..., :n_known, :, :]
    correction = correct_counts(
        by_class,
        misclassification,
        max_condition=errors.max_condition,
        max_clipped_share=errors.max_clipped_share,
    )
    counts = correction.counts
    # Known true groups, then the unknown rows as observed, then an empty "unseen" bucket.
    shape = (*counts.shape[:-3], 1, *counts.shape[-2:])
    unknown = np.broadcast_to(confusion[..., n_known : n_known + 1, :, :], shape)
    full = np.concatenate([counts, unknown, np.zeros(shape)], axis=-3)
    result = figures(full)
    ill = correction.ill_conditioned
    rows = [*positions, k]
    group = {name: result["group"][name][..., rows] for name in CORRECTED_METRICS["group"]}
    group_class = {"tpr": result["group_class"]["tpr"][..., positions, :]}
    accuracy = result["group"]["accuracy"][..., :k]
    size = result["group"]["count"][..., :k]
    ranked = np.where(size >= min_group_size, accuracy, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        worst, best = np.nanmin(ranked, axis=-1), np.nanmax(ranked, axis=-1)
    defined = ~np.isnan(ranked).all(axis=-1)
    worst_index = np.where(defined, np.nanargmin(np.where(defined[..., None], ranked, 0), -1), -1)
    summary = {
        "worst_group_accuracy": worst,
        "best_group_accuracy": best,
        "accuracy_gap": best - worst,
    }
    for level in (group, group_class, summary):
        for name, values in level.items():
            mask = ill.reshape(ill.shape + (1,) * (values.ndim - ill.ndim))
            level[name] = np.where(mask, np.nan, values)
    summary["worst_group_index"] = np.where(ill, -1, worst_index)
    return {
        "group": group,
        "group_class": group_class,
        "summary": summary,
        "diagnostics": {
            "ill_conditioned": ill,
            "clipped_share": np.broadcast_to(correction.clipped_share, ill.shape),
        },
    }


def applicable_corrections(
    attributes: Sequence[Groups],
    corrections: Mapping[str, LabelErrors] | None,
    runs: Runs,
) -> dict[str, LabelErrors]:
    """The attributes whose tables are corrected (:func:`correction_status` "corrected"): one
    inferred column with an in-domain confusion matrix."""
    return {
        groups.attribute: corrections[groups.columns[0]]
        for groups in attributes
        if correction_status(groups, corrections, runs) == "corrected"
    }


def correction_status(
    groups: Groups, corrections: Mapping[str, LabelErrors] | None, runs: Runs
) -> str:
    """Why an attribute's tables are (not) corrected, for the tables' ``correction`` column."""
    if len(groups.columns) != 1:
        return "not corrected: intersection"
    if label_sources(runs.images, groups.columns) == "ground_truth":
        return "not needed: ground-truth labels"
    errors = (corrections or {}).get(groups.columns[0])
    if errors is None:
        return "not corrected: no confusion matrix"
    if errors.reason is not None:
        return f"not corrected: {errors.reason}"
    if label_sources(runs.images, groups.columns) != "inferred":
        return "not corrected: labels mix ground truth and inference"
    return "corrected"


def replicate_figures(
    runs: Runs,
    attributes: Sequence[Groups],
    *,
    draws: int,
    seed: int,
    posteriors: Mapping[str, pd.DataFrame] | None = None,
    corrections: Mapping[str, LabelErrors] | None = None,
    min_group_size: int = 30,
) -> dict[str, dict[str, Figures]]:
    """Bootstrap (and multiple-imputation) replicates of every figure of every run.

    Parameters
    ----------
    runs : Runs
        Aligned predictions of one or more runs.
    attributes : sequence of Groups
        Group codings (:func:`fairfer.fairness.metrics.group_coding`) of the sensitive attributes,
        built with the posteriors' classes as ``extra_values``.
    draws : int
        Replicates.
    seed : int
        Seed of the image and label random streams.
    posteriors : mapping of str to pandas.DataFrame, optional
        Per inferred attribute column, the calibrated posteriors of the images whose label was
        inferred: index ``image_id``, one column per class. With it, multiple-imputation
        replicates are computed too; images absent from it keep their label.
    corrections : mapping of str to LabelErrors, optional
        Per attribute label (:func:`applicable_corrections`), the label errors whose
        corrected figures (:func:`corrected_figures`) are replicated too, under
        ``"corrected"``: each draw corrects the bootstrap draw's counts with the in-domain
        confusion matrix resampled in the same draw, so the interval carries both the test
        set's and the validation set's sampling noise.
    min_group_size : int
        As for :func:`corrected_figures`.

    Returns
    -------
    dict
        ``{"bootstrap": {attribute: figures}}`` and, with ``posteriors``, the same under
        ``"multiple_imputation"``; figure arrays have shape (n_runs, draws, ...).
    """
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    n_images = len(runs.images)
    methods = ["bootstrap"] + (["multiple_imputation"] if posteriors else [])
    posterior = _aligned_posteriors(runs, attributes, posteriors or {})
    widest = max(max(n_images, g.n_buckets * len(runs.classes) ** 2) for g in attributes)
    chunk = max(1, min(draws, _CHUNK_ELEMENTS // (len(runs.keys) * widest)))
    parts: dict[str, dict[str, list[Figures]]] = {
        method: {g.attribute: [] for g in attributes} for method in methods
    }
    corrections = dict(corrections or {})
    if corrections:
        parts["corrected"] = {attribute: [] for attribute in corrections}
    for start in range(0, draws, chunk):
        chunk_draws = range(start, min(start + chunk, draws))
        rows = resampled_rows(n_images, chunk_draws, seed=seed)
        y_true = runs.y_true[rows][None]
        y_pred = runs.y_pred[:, rows]
        sampled = {
            column: sample_labels(
                probabilities, label_uniforms(n_images, chunk_draws, seed=seed, column=column)
            )
            for column, (probabilities, _) in posterior.items()
        }
        for groups in attributes:
            codes = {"bootstrap": groups.codes[rows]}
            if posteriors:
                imputed = groups.encode(_imputed_label_codes(runs, groups, sampled, posterior))
                imputed = np.broadcast_to(imputed, rows.shape)
                codes["multiple_imputation"] = np.take_along_axis(imputed, rows, axis=1)
            for method, group_codes in codes.items():
                confusion = confusion_counts(
                    group_codes[None],
                    y_true,
                    y_pred,
                    n_groups=groups.n_buckets,
                    n_classes=len(runs.classes),
                )
                parts[method][groups.attribute].append(figures(confusion))
                errors = corrections.get(groups.attribute)
                if method == "bootstrap" and errors is not None:
                    misclassification = misclassification_matrix(
                        resample_confusion(errors.confusion, chunk_draws, seed=seed)
                    )
                    parts["corrected"][groups.attribute].append(
                        corrected_figures(
                            confusion,
                            groups,
                            errors,
                            misclassification,
                            min_group_size=min_group_size,
                        )
                    )
    return {
        method: {attribute: _concatenate(chunks) for attribute, chunks in by_attribute.items()}
        for method, by_attribute in parts.items()
    }


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the draw axis (axis 1), skipping draws where it is NaN.

    The quantiles are numpy's default (linear) ones, as fairlearn's ``ci_quantiles``.
    """
    tail = (1 - level) / 2
    # np.nanquantile loops over slices in Python; sorting once (NaN last) and interpolating
    # between order statistics is the same linear quantile, vectorised.
    ordered = np.sort(replicates, axis=1)
    n_valid = (~np.isnan(ordered)).sum(axis=1, keepdims=True)
    bounds = []
    for quantile in (tail, 1 - tail):
        position = quantile * np.maximum(n_valid - 1, 0)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, np.maximum(n_valid - 1, 0))
        low = np.take_along_axis(ordered, below, axis=1)
        high = np.take_along_axis(ordered, above, axis=1)
        value = low + (high - low) * (position - below)
        bounds.append(np.where(n_valid > 0, value, np.nan).squeeze(axis=1))
    return bounds[0], bounds[1]


def _aligned_posteriors(
    runs: Runs, attributes: Sequence[Groups], posteriors: Mapping[str, pd.DataFrame]
) -> dict[str, tuple[np.ndarray, pd.Index]]:
    """Posterior matrices in the order of ``runs.images`` (NaN rows keep their label)."""
    used = {column for groups in attributes for column in groups.columns}
    aligned = {}
    for column, table in posteriors.items():
        if column not in used:
            continue
        matrix = table.reindex(runs.images["image_id"]).to_numpy(dtype=np.float64)
        matrix[runs.images[column].isna().to_numpy()] = np.nan
        aligned[column] = (matrix, pd.Index(table.columns))
        logger.info(
            "imputing %s for %d of %d images from posteriors over %s",
            column,
            int((~np.isnan(matrix).any(axis=1)).sum()),
            len(matrix),
            list(table.columns),
        )
    return aligned


def _imputed_label_codes(
    runs: Runs,
    groups: Groups,
    sampled: Mapping[str, np.ndarray],
    posterior: Mapping[str, tuple[np.ndarray, pd.Index]],
) -> list[np.ndarray]:
    """Per column of ``groups``, vocabulary codes with the sampled labels substituted."""
    label_codes = []
    for column, vocabulary in zip(groups.columns, groups.vocabularies, strict=True):
        observed = vocabulary.get_indexer(runs.images[column].astype(object))[None]
        if column not in sampled:
            label_codes.append(observed)
            continue
        to_vocabulary = vocabulary.get_indexer(posterior[column][1])
        if (to_vocabulary < 0).any():
            raise ValueError(
                f"posterior classes of {column!r} are not all in the group coding; build it "
                "with group_coding(..., extra_values=<posterior classes>)"
            )
        draws = sampled[column]
        codes = to_vocabulary[draws]
        # Rows without a posterior were sampled as -1 in every draw: they keep their label.
        kept = draws[0] < 0
        codes[:, kept] = observed[0, kept]
        label_codes.append(codes)
    return label_codes


def _concatenate(chunks: Sequence[Figures]) -> Figures:
    return {
        level: {name: np.concatenate([c[level][name] for c in chunks], axis=1) for name in metrics}
        for level, metrics in chunks[0].items()
    }


def inferred_posteriors(
    group_labels: pd.DataFrame, classes: Mapping[str, Sequence[str]]
) -> dict[str, pd.DataFrame]:
    """Posteriors of the images whose attribute was inferred, per attribute.

    Parameters
    ----------
    group_labels : pandas.DataFrame
        Group-label table: ``image_id`` and, per attribute, ``<attribute>_source`` and
        ``<attribute>_probabilities`` (null where none).
    classes : mapping of str to sequence of str
        Each attribute's classifier classes, in the order of its probabilities.

    Returns
    -------
    dict of str to pandas.DataFrame
        Per attribute with inferred rows: index ``image_id``, one column per class.
    """
    posteriors = {}
    for attribute, names in classes.items():
        rows = group_labels[
            (group_labels[f"{attribute}_source"] == "inferred")
            & group_labels[f"{attribute}_probabilities"].notna()
        ]
        if len(rows):
            posteriors[attribute] = pd.DataFrame(
                np.vstack(rows[f"{attribute}_probabilities"].to_numpy()),
                index=rows["image_id"].to_numpy(),
                columns=list(names),
            )
    return posteriors


def interval_inputs(
    uncertainty: Mapping[str, object], group_labels_path: Path, attributes: Sequence[object]
) -> tuple[int, dict[str, pd.DataFrame] | None]:
    """Draws and posteriors for the configured interval method (config ``fairness.uncertainty``).

    ``none`` gives 0 draws; ``bootstrap`` draws without posteriors; ``multiple_imputation``
    also reads the posteriors of the inferred labels of the attributes' columns from the
    group-label file.
    """
    method = uncertainty["method"]
    draws = 0 if method == "none" else int(uncertainty["draws"])
    if method != "multiple_imputation":
        return draws, None
    metadata = schema_metadata(group_labels_path)
    # Only inferred attributes have posteriors; a dataset's own attributes are ground truth.
    columns = sorted(
        set(attribute_names(attributes))
        & {key.removesuffix("_classes") for key in metadata if key.endswith("_classes")}
    )
    wanted = [f"{c}_{part}" for c in columns for part in ("source", "probabilities")]
    labels = pq.read_table(group_labels_path, columns=["image_id", *wanted]).to_pandas()
    posteriors = inferred_posteriors(
        labels, {c: json.loads(metadata[f"{c}_classes"]) for c in columns}
    )
    logger.info("imputing group labels of %s from their posteriors", sorted(posteriors))
    return draws, posteriors


def label_accuracies(classifier_report: Mapping[str, object]) -> dict[str, float]:
    """Accuracy of each attribute classifier where its labels are used.

    ``classifier_report`` is the JSON report of ``group_labels``
    (``{"attributes": {attribute: {"in_domain": {"accuracy": ...}, "clean": {...}}}}``): the
    accuracy on FairFace val rendered like the emotion dataset, or on clean FairFace val where
    no in-domain evaluation was made.
    """
    attributes = classifier_report.get("attributes", {})
    return {
        attribute: float(used_evaluation(result)["accuracy"])
        for attribute, result in attributes.items()
    }
