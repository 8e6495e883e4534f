"""Per-group metrics, one-vs-rest disparities, the headline summary and its intervals."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from fairfer.fairness import (
    attribute_label,
    fairness_summary,
    group_metrics,
    one_vs_rest_disparities,
    write_table,
)
from fairfer.schemas import ATTRIBUTE_CLASSES, schema_metadata
from fairfer.uncertainty import intervals, summary_draws

logger = logging.getLogger(__name__)


def inferred_posteriors(
    predictions: pd.DataFrame, group_labels_path: Path
) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    """Calibrated posteriors of the attributes inferred for the predicted images."""
    columns = ["image_id"] + [
        c for a in ATTRIBUTE_CLASSES for c in (f"{a}_source", f"{a}_probabilities")
    ]
    labels = pq.read_table(group_labels_path, columns=columns).to_pandas().set_index("image_id")
    labels = labels.reindex(predictions["image_id"])
    posteriors = {}
    for attribute, classes in ATTRIBUTE_CLASSES.items():
        if not (labels[f"{attribute}_source"] == "inferred").all():
            continue
        rows = [
            np.full(len(classes), np.nan) if p is None else np.asarray(p, dtype=float)
            for p in labels[f"{attribute}_probabilities"]
        ]
        posteriors[attribute] = (np.vstack(rows), classes)
    return posteriors


def tables(
    predictions_path: Path,
    classifier_report: dict,
    group_labels_path: Path,
    *,
    attributes: list,
    min_group_size: int,
    uncertainty: dict,
    seed: int,
) -> dict[str, pd.DataFrame]:
    predictions = pq.read_table(predictions_path).to_pandas()
    classes = json.loads(schema_metadata(predictions_path)["classes"])
    groups = pd.concat(
        [group_metrics(predictions, sensitive=a, classes=classes) for a in attributes],
        ignore_index=True,
    )
    groups["small_group"] = groups["count"] < min_group_size
    disparities = pd.concat(
        [one_vs_rest_disparities(predictions, sensitive=a, classes=classes) for a in attributes],
        ignore_index=True,
    )
    summary = fairness_summary(predictions, attributes=attributes, classes=classes)
    # How trustworthy each inferred attribute is: its classifier's accuracy on FairFace valid.
    accuracy = {
        attribute_label(a): classifier_report["attributes"][a]["accuracy"]
        for a in attributes
        if isinstance(a, str) and a in classifier_report["attributes"]
    }
    summary["inferred_label_accuracy"] = (
        summary["attribute"].map(accuracy).where(summary["label_source"] == "inferred")
    )
    summary["n_small_groups"] = summary["attribute"].map(
        groups[groups["group"] != "<unknown>"].groupby("attribute")["small_group"].sum()
    )

    replicates = {}
    method = uncertainty["method"]
    common = dict(attributes=attributes, classes=classes, draws=uncertainty["draws"], seed=seed)
    if method in ("bootstrap", "multiple_imputation"):
        replicates["bootstrap"] = summary_draws(predictions, {}, impute=False, **common)
    if method == "multiple_imputation":
        posteriors = inferred_posteriors(predictions, group_labels_path)
        logger.info("imputing group labels of %s from their posteriors", sorted(posteriors))
        replicates["multiple_imputation"] = summary_draws(
            predictions, posteriors, impute=True, **common
        )
    interval_table = intervals(summary, replicates, level=uncertainty["level"])
    return {
        "group_metrics": groups,
        "class_disparities": disparities,
        "summary": summary,
        "intervals": interval_table,
    }


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    result = tables(
        Path(snakemake.input.predictions),
        json.loads(Path(snakemake.input.classifier_report).read_text()),
        Path(snakemake.input.group_labels),
        attributes=snakemake.params.attributes,
        min_group_size=snakemake.params.min_group_size,
        uncertainty=snakemake.params.uncertainty,
        seed=snakemake.params.seed,
    )
    for name, table in result.items():
        write_table(table, Path(snakemake.output[name][0]).with_suffix(""))
