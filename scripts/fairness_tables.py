"""Per-group, per-class and summary fairness tables of one run, every figure with intervals."""

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from fairfer.fairness.metrics import write_table
from fairfer.fairness.tables import fairness_tables, with_interval_text
from fairfer.fairness.uncertainty import interval_inputs, label_accuracies
from fairfer.group_labels.correction import label_errors
from fairfer.schemas import schema_metadata

logger = logging.getLogger(__name__)


def tables(
    predictions_path: Path,
    classifier_report: dict,
    group_labels_path: Path,
    *,
    attributes: list,
    min_group_size: int,
    uncertainty: dict,
    seed: int,
    correction: dict,
) -> dict[str, pd.DataFrame]:
    predictions = pq.read_table(predictions_path).to_pandas()
    classes = json.loads(schema_metadata(predictions_path)["classes"])
    draws, posteriors = interval_inputs(uncertainty, group_labels_path, attributes)
    return fairness_tables(
        predictions,
        attributes=attributes,
        classes=classes,
        draws=draws,
        level=uncertainty["level"],
        seed=seed,
        posteriors=posteriors,
        label_accuracy=label_accuracies(classifier_report),
        min_group_size=min_group_size,
        corrections=label_errors(classifier_report, **correction),
    )


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
        correction=snakemake.params.correction,
    )
    for name, table in result.items():
        stem = Path(snakemake.output[name][0]).with_suffix("")
        write_table(table, stem, markdown=with_interval_text(table))
