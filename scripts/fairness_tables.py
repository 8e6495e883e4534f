"""Per-group metrics, one-vs-rest disparities and the headline summary of one strategy."""

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from fairfer.fairness import (
    attribute_label,
    fairness_summary,
    group_metrics,
    one_vs_rest_disparities,
    write_table,
)
from fairfer.schemas import schema_metadata

logger = logging.getLogger(__name__)


def tables(
    predictions_path: Path, classifier_report: dict, *, attributes: list, min_group_size: int
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
    return {"group_metrics": groups, "class_disparities": disparities, "summary": summary}


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    result = tables(
        Path(snakemake.input.predictions),
        json.loads(Path(snakemake.input.classifier_report).read_text()),
        attributes=snakemake.params.attributes,
        min_group_size=snakemake.params.min_group_size,
    )
    for name, table in result.items():
        write_table(table, Path(snakemake.output[name][0]).with_suffix(""))
