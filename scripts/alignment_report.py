"""Per-dataset detection, fallback and reject rates, and the rejects with their reasons."""

import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

REJECTS_COLUMNS = ["image_id", "dataset", "split", "status", "reject_reason"]
STATUS_COLUMNS = [*REJECTS_COLUMNS, "detection_pass"]


def summarise(statuses: pd.DataFrame) -> pd.DataFrame:
    """Counts and rates of each alignment status per dataset."""
    counts = statuses.groupby(["dataset", "status"]).size().unstack(fill_value=0)
    for status in ("ok", "fallback", "rejected"):
        if status not in counts:
            counts[status] = 0
    summary = counts[["ok", "fallback", "rejected"]].rename(
        columns={"ok": "detected", "fallback": "fallback", "rejected": "rejected"}
    )
    summary.insert(0, "images", summary.sum(axis=1))
    summary.insert(
        2,
        "detected_by_retry",
        statuses[statuses["detection_pass"] == 2]
        .groupby("dataset")
        .size()
        .reindex(summary.index, fill_value=0),
    )
    for column in ("detected", "detected_by_retry", "fallback", "rejected"):
        summary[f"{column}_rate"] = summary[column] / summary["images"]
    return summary.reset_index()


def report(shards: list[Path], summary_path: Path, rejects_path: Path) -> pd.DataFrame:
    statuses = pd.concat(
        [pq.read_table(path, columns=STATUS_COLUMNS).to_pandas() for path in shards],
        ignore_index=True,
    )
    summary = summarise(statuses)
    summary.to_csv(summary_path, index=False)
    statuses.loc[statuses["status"] != "ok", REJECTS_COLUMNS].to_parquet(rejects_path, index=False)
    logger.info("alignment summary:\n%s", summary.to_string(index=False))
    return summary


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    report(
        [Path(p) for p in snakemake.input.aligned],
        Path(snakemake.output.summary),
        Path(snakemake.output.rejects),
    )
