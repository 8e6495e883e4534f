"""Strategies side by side per model: paired deltas per seed, their mean and spread over seeds,
and a metrics JSON for DVC."""

import json
import logging
from pathlib import Path

import pandas as pd

from fairfer.fairness import write_table
from fairfer.replicates import aggregate_seeds, compare_per_seed
from fairfer.uncertainty import INTERVAL_METRICS

logger = logging.getLogger(__name__)


def headline_metrics(aggregated: pd.DataFrame) -> dict:
    """Nested {model: {strategy: {attribute: {metric: mean, metric_std: spread}}}}."""
    metrics: dict = {}
    for row in aggregated.to_dict("records"):
        figures = {}
        for key in INTERVAL_METRICS:
            for name, column in ((key, f"{key}_mean"), (f"{key}_std", f"{key}_std")):
                value = row.get(column)
                figures[name] = None if value is None or pd.isna(value) else round(float(value), 6)
        metrics.setdefault(row["model"], {}).setdefault(row["strategy"], {})[row["attribute"]] = (
            figures
        )
    return metrics


def compare(
    summaries: list[Path],
    runs: list[dict],
    table_path: Path,
    by_seed_path: Path,
    metrics_path: Path,
) -> pd.DataFrame:
    summary = pd.concat(
        [
            pd.read_parquet(path).assign(model=run["model"], seed=run["seed"])
            for path, run in zip(summaries, runs, strict=True)
        ],
        ignore_index=True,
    )
    by_seed = compare_per_seed(summary)
    aggregated = aggregate_seeds(by_seed)
    write_table(by_seed, by_seed_path.with_suffix(""))
    write_table(aggregated, table_path.with_suffix(""))
    metrics_path.write_text(json.dumps(headline_metrics(aggregated), indent=2) + "\n")
    return aggregated


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    compare(
        [Path(p) for p in snakemake.input.summaries],
        snakemake.params.runs,
        Path(snakemake.output.table[0]),
        Path(snakemake.output.by_seed[0]),
        Path(snakemake.output.metrics),
    )
