"""Detect and align the faces of one shard of a dataset manifest (MTCNN + 5-point template)."""

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from fairfer.faces.alignment import AlignmentResult, FaceAligner, RetrySettings, encode_png
from fairfer.images import UnusableImageError, decode_image
from fairfer.schemas import ALIGNED, write_parquet

logger = logging.getLogger(__name__)


def shard_rows(manifest: Path, shard: int, shards: int, batch_size: int) -> Iterator[pa.Table]:
    """Stream the manifest's rows of one shard (row index modulo ``shards``)."""
    offset = 0
    columns = ["image_id", "dataset", "split", "image"]
    for batch in pq.ParquetFile(manifest).iter_batches(batch_size=batch_size, columns=columns):
        table = pa.Table.from_batches([batch])
        keep = [i for i in range(table.num_rows) if (offset + i) % shards == shard]
        offset += table.num_rows
        if keep:
            yield table.take(keep)


def aligned_record(row: dict, result: AlignmentResult | None, reason: str | None) -> dict:
    """One output row; ``result`` None means rejected for ``reason``."""
    record = {key: row[key] for key in ("image_id", "dataset", "split")}
    if result is None:
        return {
            **record,
            "status": "rejected",
            "reject_reason": reason,
            "detection_probability": None,
            "detection_pass": None,
            "box": None,
            "landmarks": None,
            "crop": None,
        }
    return {
        **record,
        "status": result.status,
        "reject_reason": None,
        "detection_probability": result.probability,
        "detection_pass": result.detection_pass or None,
        "box": None if result.box is None else [float(v) for v in result.box],
        "landmarks": None
        if result.landmarks is None
        else [float(v) for v in result.landmarks.reshape(-1)],
        "crop": encode_png(result.crop),
    }


def align_rows(rows: pa.Table, aligner: FaceAligner) -> list[dict]:
    """Align a table of manifest rows; unusable images and faceless rejects get a reason."""
    pylist = rows.to_pylist()
    records: list[dict | None] = [None] * rows.num_rows
    decoded: list[tuple[int, Image.Image]] = []
    for index, row in enumerate(pylist):
        try:
            decoded.append((index, decode_image(row["image"])))
        except UnusableImageError as error:
            records[index] = aligned_record(row, None, str(error))
    results = aligner.align([image for _, image in decoded])
    for (index, _), result in zip(decoded, results, strict=True):
        records[index] = aligned_record(pylist[index], result, None if result else "no face found")
    return records


def align_shard(
    manifest: Path, output: Path, *, shard: int, shards: int, alignment: dict
) -> dict[str, int]:
    aligner = FaceAligner(
        image_size=alignment["image_size"],
        face_scale=alignment["face_scale"],
        min_face_size=alignment["min_face_size"],
        thresholds=tuple(alignment["thresholds"]),
        pad_fraction=alignment["pad_fraction"],
        upscale_min_side=alignment["upscale_min_side"],
        max_detector_side=alignment["max_detector_side"],
        fallback=alignment["fallback"],
        batch_size=alignment["batch_size"],
        retry=None
        if alignment["retry"] is None
        else RetrySettings(
            pad_fraction=alignment["retry"]["pad_fraction"],
            thresholds=tuple(alignment["retry"]["thresholds"]),
        ),
    )
    counts: dict[str, int] = {}

    def batches() -> Iterator[pa.RecordBatch]:
        for rows in shard_rows(manifest, shard, shards, alignment["batch_size"] * 4):
            records = align_rows(rows, aligner)
            for record in records:
                counts[record["status"]] = counts.get(record["status"], 0) + 1
            logger.info("shard %d/%d: %s", shard, shards, counts)
            yield pa.RecordBatch.from_pylist(records, schema=ALIGNED)

    write_parquet(batches(), output, ALIGNED)
    return counts


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    torch.set_num_threads(snakemake.threads)
    align_shard(
        Path(snakemake.input.manifest),
        Path(snakemake.output.aligned),
        shard=snakemake.params.shard,
        shards=snakemake.params.shards,
        alignment=snakemake.params.alignment,
    )
