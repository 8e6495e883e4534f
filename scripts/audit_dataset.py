"""Representational and stereotypical bias of the emotion dataset, before any model.

Reads the emotion dataset's labelled images and their group labels (ground truth or inferred,
with posteriors), and writes the dataset-audit tables and NPMI heat maps that the report shows
(:mod:`fairfer.fairness.dataset_audit`).
"""

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fairfer.config_checks import attribute_names
from fairfer.fairness.dataset_audit import audit_dataset
from fairfer.report.plots import plot_npmi_heatmaps
from fairfer.schemas import MANIFEST, extra_attributes_of, read_checked, schema_metadata

logger = logging.getLogger(__name__)


def run(
    manifest_path: Path,
    group_labels_path: Path,
    *,
    attributes: list,
    draws: int,
    level: float,
    seed: int,
    dataset: str,
    metrics_path: Path,
    npmi_path: Path,
    plot_path: Path,
) -> None:
    manifest = read_checked(
        manifest_path, MANIFEST, ["image_id", "emotion", "label_status"]
    ).to_pandas()
    labelled = manifest[(manifest["label_status"] == "ok") & manifest["emotion"].notna()]
    metadata = schema_metadata(group_labels_path)
    inferable = [k.removesuffix("_classes") for k in metadata if k.endswith("_classes")]
    extra = extra_attributes_of(group_labels_path)
    # Single attributes only: intersections are the fairness tables' business.
    singles = attribute_names(attributes)
    columns = ["image_id"]
    for name in singles:
        columns += [name, f"{name}_source"]
        if name in inferable:
            columns.append(f"{name}_probabilities")
    labels = pq.read_table(group_labels_path, columns=columns).to_pandas()
    rows = labelled[["image_id", "emotion"]].merge(labels, on="image_id", how="left")
    sources = {
        name: "inferred" if (rows[f"{name}_source"] == "inferred").any() else "ground_truth"
        for name in singles
    }
    posteriors = {}
    for name in singles:
        if name in inferable and sources[name] == "inferred":
            classes = json.loads(metadata[f"{name}_classes"])
            matrix = np.full((len(rows), len(classes)), np.nan)
            for position, value in enumerate(rows[f"{name}_probabilities"]):
                if value is not None:
                    matrix[position] = value
            posteriors[name] = (matrix, classes)
    logger.info(
        "auditing %d labelled images of %s: %s (dataset attributes %s)",
        len(rows),
        dataset,
        sources,
        extra,
    )
    metrics, npmi = audit_dataset(
        rows,
        attributes=singles,
        sources=sources,
        posteriors=posteriors,
        draws=draws,
        level=level,
        seed=seed,
    )
    metrics.insert(0, "dataset", dataset)
    npmi.insert(0, "dataset", dataset)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics.to_csv(metrics_path, index=False)
    npmi.to_csv(npmi_path, index=False)
    plot_npmi_heatmaps(
        npmi,
        plot_path,
        title=f"{dataset}: association of each group with each emotion (NPMI)",
    )


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    run(
        Path(snakemake.input.manifest),
        Path(snakemake.input.group_labels),
        attributes=snakemake.params.attributes,
        draws=snakemake.params.draws,
        level=snakemake.params.level,
        seed=snakemake.params.seed,
        dataset=snakemake.params.dataset,
        metrics_path=Path(snakemake.output.metrics),
        npmi_path=Path(snakemake.output.npmi),
        plot_path=Path(snakemake.output.plot),
    )
