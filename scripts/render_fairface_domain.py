"""Render FairFace like the emotion dataset's images (size, colour, crop) into a manifest."""

import logging
from pathlib import Path

import pyarrow.parquet as pq

from fairfer.group_labels.rendering import DomainRender, domain_render, render_batches
from fairfer.schemas import MANIFEST, write_parquet

logger = logging.getLogger(__name__)


def render(
    manifest: Path, output: Path, *, render: DomainRender, splits: list[str], batch_rows: int = 512
) -> int:
    """Write the rendered copy of ``manifest``'s ``splits``; returns its number of rows."""
    batches = pq.ParquetFile(manifest).iter_batches(batch_size=batch_rows)
    written = write_parquet(
        render_batches(batches, render, splits=splits, schema=MANIFEST), output, MANIFEST
    )
    rows = pq.ParquetFile(written).metadata.num_rows
    logger.info("rendered %d FairFace images (%s) as %s", rows, splits, render)
    return rows


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    render(
        Path(snakemake.input.manifest),
        Path(snakemake.output.manifest),
        render=domain_render(snakemake.params.render),
        splits=list(snakemake.params.splits),
    )
