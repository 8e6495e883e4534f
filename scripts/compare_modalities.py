"""Every clip model (audio, visual, fused) against each reference modality, per strategy:
paired bootstrap on the same test clips (fairfer.audiovisual.modalities)."""

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from fairfer.audiovisual.modalities import compare_modalities
from fairfer.fairness.metrics import write_table
from fairfer.fairness.tables import with_interval_text
from fairfer.fairness.uncertainty import interval_inputs
from fairfer.schemas import schema_metadata

logger = logging.getLogger(__name__)


def run(
    prediction_paths: list[Path],
    group_labels_path: Path,
    *,
    references: list[str],
    attributes: list,
    uncertainty: dict,
    seed: int,
    min_group_size: int,
) -> dict[str, pd.DataFrame]:
    predictions = pd.concat(
        [pq.read_table(path).to_pandas() for path in prediction_paths], ignore_index=True
    )
    classes = json.loads(schema_metadata(prediction_paths[0])["classes"])
    _, posteriors = interval_inputs(uncertainty, group_labels_path, attributes)
    return compare_modalities(
        predictions,
        references=references,
        attributes=attributes,
        classes=classes,
        draws=uncertainty["draws"],
        level=uncertainty["level"],
        seed=seed,
        posteriors=posteriors,
        min_group_size=min_group_size,
    )


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    result = run(
        [Path(p) for p in snakemake.input.predictions],
        Path(snakemake.input.group_labels),
        references=snakemake.params.references,
        attributes=snakemake.params.attributes,
        uncertainty=snakemake.params.uncertainty,
        seed=snakemake.params.seed,
        min_group_size=snakemake.params.min_group_size,
    )
    for name, output in (("over_seeds", "table"), ("by_seed", "by_seed")):
        stem = Path(snakemake.output[output][0]).with_suffix("")
        write_table(result[name], stem, markdown=with_interval_text(result[name]))
