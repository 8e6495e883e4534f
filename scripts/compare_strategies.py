"""One table across strategies (deltas against the baseline) and a metrics JSON for DVC."""

import json
import logging
from pathlib import Path

import pandas as pd

from fairfer.fairness import compare_strategies, write_table
from fairfer.uncertainty import INTERVAL_METRICS

logger = logging.getLogger(__name__)


def headline_metrics(comparison: pd.DataFrame) -> dict:
    """Nested {strategy: {attribute: {metric: value}}} of the figures worth tracking."""
    metrics: dict = {}
    for row in comparison.to_dict("records"):
        metrics.setdefault(row["strategy"], {})[row["attribute"]] = {
            key: None if pd.isna(row[key]) else round(float(row[key]), 6)
            for key in INTERVAL_METRICS
        }
    return metrics


def compare(summaries: list[Path], table_path: Path, metrics_path: Path) -> pd.DataFrame:
    summary = pd.concat([pd.read_parquet(path) for path in summaries], ignore_index=True)
    comparison = compare_strategies(summary)
    write_table(comparison, table_path.with_suffix(""))
    metrics_path.write_text(json.dumps(headline_metrics(comparison), indent=2) + "\n")
    return comparison


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    compare(
        [Path(p) for p in snakemake.input.summaries],
        Path(snakemake.output.table[0]),
        Path(snakemake.output.metrics),
    )
