"""Join each clip's frames (pooled FaceNet embeddings) and voice (log-mel) into the clip
models' inputs, with every clip's status and a reconciliation of clips and frames."""

import json
import logging
from pathlib import Path

import pyarrow.parquet as pq

from fairfer.audiovisual.clips import assemble, frame_embeddings, reconciliation
from fairfer.schemas import (
    CLIPS,
    MANIFEST,
    clip_inputs_schema,
    read_checked,
    schema_metadata,
    write_parquet,
)

logger = logging.getLogger(__name__)


def run(
    clips_path: Path,
    manifest_path: Path,
    ingest_report_path: Path,
    embedding_paths: list[Path],
    audio_path: Path,
    output: Path,
    report_path: Path,
) -> dict:
    clips = read_checked(clips_path, CLIPS, ["clip_id", "frame_ids"]).to_pandas()
    manifest = read_checked(manifest_path, MANIFEST, ["image_id", "split"]).to_pandas()
    frames = frame_embeddings(embedding_paths)
    audio = pq.read_table(audio_path).to_pandas()
    metadata = schema_metadata(audio_path)
    inputs = assemble(clips, manifest, frames, audio)
    dimension = len(frames["embedding"].iloc[0]) if len(frames) else 128
    schema = clip_inputs_schema(
        dimension,
        int(metadata["n_mels"]),
        int(metadata["frames"]),
        egemaps=json.loads(metadata["egemaps"]),
    )
    write_parquet(inputs, output, schema)
    ingest_report = json.loads(ingest_report_path.read_text())
    report = reconciliation(ingest_report["clips_listed"], ingest_report, inputs, frames)
    report_path.write_text(json.dumps(report, indent=2, default=int) + "\n")
    logger.info("clip inputs: %s", report)
    return report


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    run(
        Path(snakemake.input.clips),
        Path(snakemake.input.manifest),
        Path(snakemake.input.ingest_report),
        [Path(p) for p in snakemake.input.embeddings],
        Path(snakemake.input.audio),
        Path(snakemake.output.inputs),
        Path(snakemake.output.report),
    )
