"""Correction of confusion counts for misclassified (inferred) demographic group labels.

The group labels of many emotion-dataset images are *inferred* by a classifier (race, gender,
age) whose confusion matrix was measured on a labelled validation set: counts with rows = true
group ``i`` and columns = predicted group ``j``, in the classifier's class order (``k``
classes). The fairness tables are computed from the emotion model's confusion counts per
*predicted* group, ``observed[..., j, a, b]`` = images with predicted group ``j``, true emotion
``a`` and predicted emotion ``b``. Those counts mix the images of every true group::

    observed[..., j, a, b] = sum_i P(pred=j | true=i) * true_counts[..., i, a, b]

so the counts per true group are recovered by solving ``B @ true = observed`` for every cell,
with ``B[j, i] = P(pred=j | true=i)`` (the transpose of the row-normalised confusion matrix).
This is the *matrix method* of misclassification correction.

Assumption: a group label's error is independent of the emotion model's prediction (and of
the true emotion) given the true group, i.e. the group classifier confuses the images of a
true group at the same rates whatever their emotion and whether the emotion model gets them
right, and at the rates measured on the validation set. If, say, the group classifier errs
more on images the emotion model also gets wrong, the corrected figures are biased.

Estimates are clipped at zero, because a negative count has no meaning; the share of mass
clipped is reported, and a correction with a badly conditioned ``B`` (noise in ``observed``
amplified up to ``cond(B)`` times) or much clipped mass is flagged as ill-conditioned. The
uncertainty of ``B`` itself is carried by :func:`resample_confusion`: correcting every
bootstrap draw of the test counts with its own resampled validation matrix.

Everything here works on counts only; accuracy, recall and gaps are computed from the
corrected counts by :func:`fairfer.fairness.metrics.figures` like any other counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: One sentence for table notes: the assumption behind every corrected figure.
CORRECTION_ASSUMPTION = (
    "Corrected figures assume that a group label's error is independent of whether the "
    "emotion prediction is right, given the true group (matrix method)."
)

#: Condition number above which ``B`` is treated as numerically singular: no estimate.
_SINGULAR_CONDITION = 1e12


def misclassification_matrix(confusion: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix of the group classifier: ``P(pred=j | true=i)``.

    Parameters
    ----------
    confusion : numpy.ndarray
        Validation counts (..., k, k); rows are true groups, columns predicted groups.

    Returns
    -------
    numpy.ndarray
        Float64 (..., k, k) with ``[..., i, j] = P(pred=j | true=i)``; each row sums to 1, a
        row without images is NaN.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    if confusion.ndim < 2 or confusion.shape[-1] != confusion.shape[-2]:
        raise ValueError(f"confusion must have shape (..., k, k), got {confusion.shape}")
    totals = confusion.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, confusion / totals, np.nan)


def resample_confusion(confusion: np.ndarray, draws: range, *, seed: int) -> np.ndarray:
    """Bootstrap replicates of a validation confusion matrix.

    Every draw resamples the ``n = confusion.sum()`` validation images with replacement, i.e.
    a multinomial draw of ``n`` over the ``k * k`` cells with probabilities
    ``confusion / n``. Draw ``d`` uses its own stream ``np.random.default_rng([seed, 2, d])``,
    so a draw is the same whichever chunk of draws it is computed in.

    Parameters
    ----------
    confusion : numpy.ndarray
        Counts (k, k) of the validation set; rows true groups, columns predicted groups.
    draws : range
        Indices of the draws to compute.
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    numpy.ndarray
        Int64 (len(draws), k, k) resampled counts; each replicate sums to ``n``.
    """
    counts = np.asarray(confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion must have shape (k, k), got {counts.shape}")
    if (counts < 0).any() or not np.array_equal(counts, np.round(counts)):
        raise ValueError("confusion must hold non-negative integer counts")
    counts = counts.astype(np.int64)
    n = int(counts.sum())
    out = np.zeros((len(draws), *counts.shape), dtype=np.int64)
    if n == 0:
        return out
    p = counts.ravel() / n
    for position, d in enumerate(draws):
        out[position] = np.random.default_rng([seed, 2, d]).multinomial(n, p).reshape(counts.shape)
    return out


@dataclass(frozen=True)
class Correction:
    """Counts corrected for group misclassification, with diagnostics.

    Attributes
    ----------
    counts : numpy.ndarray
        Float64 (*lead, k, C, C) estimated counts per *true* group, clipped at 0; NaN where
        ``B`` is singular or NaN. ``lead`` is the broadcast of the leading axes of
        ``observed`` and of the misclassification matrices.
    condition : numpy.ndarray
        Condition number (2-norm) of ``B`` per misclassification matrix, shape
        ``misclassification.shape[:-2]``; ``inf`` for a singular, NaN for a NaN matrix.
    clipped_share : numpy.ndarray
        Per leading batch (*lead): the negative mass clipped to 0 as a share of the total
        absolute corrected mass (0 when there is no mass, NaN where there is no estimate).
    ill_conditioned : numpy.ndarray
        Bool (*lead): condition above ``max_condition``, ``B`` singular or NaN, or
        ``clipped_share`` above ``max_clipped_share``.
    """

    counts: np.ndarray
    condition: np.ndarray
    clipped_share: np.ndarray
    ill_conditioned: np.ndarray


def _condition_and_usable(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Condition numbers of a stack of matrices (..., k, k) and which can be solved."""
    finite = np.isfinite(matrices).all(axis=(-2, -1))
    safe = np.where(finite[..., None, None], matrices, np.eye(matrices.shape[-1]))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        condition = np.linalg.cond(safe)
    condition = np.where(finite, condition, np.nan)
    usable = finite & (condition < _SINGULAR_CONDITION)  # NaN compares False
    return condition, usable


def _solve(matrices: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Batched ``solve(matrices, rhs)`` that falls back to one matrix at a time on failure."""
    try:
        return np.linalg.solve(matrices, rhs)
    except np.linalg.LinAlgError:
        # Only reached for a matrix below the singularity threshold that LAPACK still cannot
        # factor (an exact zero pivot); rare enough for a loop over the batch.
        lead = np.broadcast_shapes(matrices.shape[:-2], rhs.shape[:-2])
        a = np.broadcast_to(matrices, (*lead, *matrices.shape[-2:])).reshape(
            -1, *matrices.shape[-2:]
        )
        b = np.broadcast_to(rhs, (*lead, *rhs.shape[-2:])).reshape(-1, *rhs.shape[-2:])
        out = np.full(b.shape, np.nan)
        for index in range(len(a)):
            with contextlib.suppress(np.linalg.LinAlgError):
                out[index] = np.linalg.solve(a[index], b[index])
        return out.reshape(*lead, *rhs.shape[-2:])


def correct_counts(
    observed: np.ndarray,
    misclassification: np.ndarray,
    *,
    max_condition: float = 50.0,
    max_clipped_share: float = 0.05,
) -> Correction:
    """Counts per true group from counts per predicted group (matrix method).

    Solves ``B @ true = observed`` exactly for every (true emotion, predicted emotion) cell,
    with ``B[j, i] = misclassification[i, j] = P(pred=j | true=i)``, then clips negative
    estimates to 0. The solve keeps totals: before clipping, the estimates of every cell sum
    over groups to the observed total of that cell (columns of ``B`` sum to 1); clipping adds
    exactly the clipped mass, and nothing is rescaled.

    Parameters
    ----------
    observed : numpy.ndarray
        Confusion counts (*lead, k, C, C) per predicted group: [..., predicted group, true
        emotion, predicted emotion].
    misclassification : numpy.ndarray
        ``P(pred=j | true=i)`` (*mlead, k, k) as from :func:`misclassification_matrix`;
        ``mlead`` broadcasts against ``lead`` (e.g. one matrix per bootstrap draw).
    max_condition : float
        Condition number of ``B`` above which a correction is flagged.
    max_clipped_share : float
        Clipped share of the corrected mass above which a correction is flagged.

    Returns
    -------
    Correction
        Corrected counts and diagnostics; a singular or NaN ``B`` gives NaN counts and a
        flag, never an exception.
    """
    observed = np.asarray(observed, dtype=np.float64)
    misclassification = np.asarray(misclassification, dtype=np.float64)
    if observed.ndim < 3:
        raise ValueError(f"observed must have shape (..., k, C, C), got {observed.shape}")
    k = observed.shape[-3]
    if misclassification.ndim < 2 or misclassification.shape[-2:] != (k, k):
        raise ValueError(
            f"misclassification must have shape (..., {k}, {k}) to match observed "
            f"{observed.shape}, got {misclassification.shape}"
        )
    cells = observed.shape[-2:]
    lead = np.broadcast_shapes(observed.shape[:-3], misclassification.shape[:-2])

    b = np.swapaxes(misclassification, -1, -2)
    condition, usable = _condition_and_usable(b)
    safe_b = np.where(usable[..., None, None], b, np.eye(k))

    rhs = observed.reshape(*observed.shape[:-2], -1)  # (*lead_o, k, C*C)
    estimate = _solve(safe_b, rhs)
    estimate = np.broadcast_to(estimate, (*lead, k, rhs.shape[-1]))
    usable = np.broadcast_to(usable, lead)
    estimate = np.where(usable[..., None, None], estimate, np.nan)

    negative = -np.minimum(estimate, 0.0).sum(axis=(-2, -1))
    mass = np.abs(estimate).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        clipped_share = np.where(mass > 0, negative / mass, 0.0)
    clipped_share = np.where(usable, clipped_share, np.nan)
    counts = np.maximum(estimate, 0.0)  # NaN propagates through np.maximum

    ill = (
        ~usable
        | ~(np.broadcast_to(condition, lead) <= max_condition)
        | (np.nan_to_num(clipped_share, nan=0.0) > max_clipped_share)
    )
    return Correction(
        counts=counts.reshape(*lead, k, *cells),
        condition=condition,
        clipped_share=clipped_share,
        ill_conditioned=ill,
    )


def corrected_composition(
    observed_counts: np.ndarray,
    misclassification: np.ndarray,
    *,
    max_condition: float = 50.0,
    max_clipped_share: float = 0.05,
) -> tuple[np.ndarray, bool]:
    """Images per true group from images per predicted group (matrix method).

    Parameters
    ----------
    observed_counts : numpy.ndarray
        Counts (..., k) of images per predicted group.
    misclassification : numpy.ndarray
        ``P(pred=j | true=i)`` (..., k, k), broadcasting against the leading axes.
    max_condition : float
        Condition number of ``B`` above which the correction is flagged.
    max_clipped_share : float
        Clipped share of the corrected mass above which the correction is flagged.

    Returns
    -------
    tuple of (numpy.ndarray, bool)
        Estimated counts (..., k) per true group, clipped at 0 (NaN for a singular or NaN
        matrix), and whether any batch's correction is ill-conditioned.
    """
    observed_counts = np.asarray(observed_counts, dtype=np.float64)
    correction = correct_counts(
        observed_counts[..., None, None],
        misclassification,
        max_condition=max_condition,
        max_clipped_share=max_clipped_share,
    )
    return correction.counts[..., 0, 0], bool(correction.ill_conditioned.any())


def used_evaluation(result: Mapping[str, object]) -> Mapping[str, object]:
    """The evaluation an attribute's tables rely on: in the target domain where measured
    (FairFace val rendered like the emotion dataset), else clean FairFace val."""
    evaluation = result.get("in_domain") or result.get("clean")
    if evaluation is None:
        raise ValueError(
            "classifier report entry has neither 'in_domain' nor 'clean' evaluation; it was "
            "written by an older version of group_labels: rerun it"
        )
    return evaluation


@dataclass(frozen=True)
class LabelErrors:
    """What is known of one inferred attribute's label errors, for correcting its tables.

    Attributes
    ----------
    attribute : str
        Attribute column (``race``).
    classes : tuple of str
        The classifier's classes, in the order of ``confusion``.
    confusion : numpy.ndarray or None
        In-domain validation counts (k, k), rows true, columns predicted; None when the
        correction does not apply.
    reason : str or None
        Why no correction is made (None: it applies).
    max_condition, max_clipped_share : float
        Thresholds of :func:`correct_counts`.
    """

    attribute: str
    classes: tuple[str, ...]
    confusion: np.ndarray | None
    reason: str | None
    max_condition: float = 50.0
    max_clipped_share: float = 0.05

    def misclassification(self) -> np.ndarray:
        assert self.confusion is not None
        return misclassification_matrix(self.confusion)


def label_errors(
    classifier_report: Mapping[str, object],
    *,
    max_condition: float = 50.0,
    max_clipped_share: float = 0.05,
) -> dict[str, LabelErrors]:
    """Per attribute of a ``group_labels`` report, its in-domain confusion matrix.

    The correction applies to per-image labels measured in the target domain: an attribute
    without an in-domain evaluation, or whose labels were pooled over a subject's images (their
    errors are not the per-image ones measured), gets a ``reason`` instead.
    """
    pooled = classifier_report.get("subject_pooling") or {}
    errors = {}
    for attribute, result in (classifier_report.get("attributes") or {}).items():
        classes = tuple(result["classes"])
        in_domain = result.get("in_domain")
        reason = None
        if not in_domain:
            reason = "no in-domain evaluation of the classifier"
        elif (pooled.get(attribute) or {}).get("n_subjects"):
            reason = "labels pooled over each subject's images"
        confusion = None if reason else np.asarray(in_domain["confusion_matrix"], dtype=np.int64)
        errors[attribute] = LabelErrors(
            attribute, classes, confusion, reason, max_condition, max_clipped_share
        )
    return errors


def corrected_composition_table(
    table: pd.DataFrame,
    errors: Mapping[str, LabelErrors],
    accuracy: Mapping[str, float],
    *,
    draws: int,
    level: float,
    seed: int,
) -> pd.DataFrame:
    """A composition table (``fairfer.group_labels.classifiers.composition``), true shares added.

    Per inferred attribute with an in-domain confusion matrix, and per split, the images per
    true group are estimated by the matrix method (:func:`corrected_composition`) as
    ``share_corrected``, with a percentile interval over ``draws`` draws that resample both the
    split's images (multinomially) and the validation images behind the confusion matrix.
    Groups no image was assigned to get a row of their own (count 0), because true members may
    still be there. ``label_accuracy`` is the in-domain accuracy of the attribute's labels;
    ``correction`` says why an attribute is not corrected.
    """
    rows = []
    for (attribute, split), part in table.groupby(["attribute", "split"], sort=False):
        part = part.copy()
        part["label_accuracy"] = accuracy.get(attribute, np.nan)
        attribute_errors = errors.get(attribute)
        if attribute_errors is None or attribute_errors.reason is not None:
            part["correction"] = (
                "not corrected: ground-truth or unmeasured labels"
                if attribute_errors is None
                else f"not corrected: {attribute_errors.reason}"
            )
            rows.append(part)
            continue
        classes = list(attribute_errors.classes)
        unknown = sorted(set(part["group"].dropna()) - set(classes))
        if unknown:
            part["correction"] = f"not corrected: groups {unknown} are not classifier classes"
            rows.append(part)
            continue
        missing = [c for c in classes if c not in set(part["group"])]
        if missing:
            filler = pd.DataFrame(
                {
                    "attribute": attribute,
                    "split": split,
                    "group": missing,
                    "label_accuracy": accuracy.get(attribute, np.nan),
                }
            )
            part = pd.concat([part, filler], ignore_index=True)
            for column in ("count", "abstained"):
                part[column] = part[column].fillna(0).astype(np.int64)
            part["share"] = part["count"] / part["count"].sum()
        part = part.set_index("group").loc[classes].reset_index()
        observed = part["count"].to_numpy(dtype=np.float64)
        n = observed.sum()
        estimate, ill = corrected_composition(
            observed,
            attribute_errors.misclassification(),
            max_condition=attribute_errors.max_condition,
            max_clipped_share=attribute_errors.max_clipped_share,
        )
        part["share_corrected"] = np.nan if ill else estimate / estimate.sum()
        part["share_corrected_ci_low"] = part["share_corrected_ci_high"] = np.nan
        if draws and not ill and n > 0:
            counts = np.stack(
                [
                    np.random.default_rng([seed, 3, d]).multinomial(int(n), observed / n)
                    for d in range(draws)
                ]
            )
            matrices = misclassification_matrix(
                resample_confusion(attribute_errors.confusion, range(draws), seed=seed)
            )
            replicate, _ = corrected_composition(
                counts,
                matrices,
                max_condition=np.inf,
                max_clipped_share=1.0,
            )
            with np.errstate(invalid="ignore", divide="ignore"):
                shares = replicate / replicate.sum(axis=-1, keepdims=True)
            tail = (1 - level) / 2
            low, high = np.nanquantile(shares, [tail, 1 - tail], axis=0)
            part["share_corrected_ci_low"], part["share_corrected_ci_high"] = low, high
        part["correction"] = "not corrected: ill-conditioned" if ill else "corrected"
        rows.append(part)
    return pd.concat(rows, ignore_index=True)
