"""Embeddings of one shard of aligned crops by FaceNet fine-tuned on FairFace."""

from pathlib import Path

import torch

from fairfer.download import sha256_of
from fairfer.embedding import write_embeddings
from fairfer.facenet import preprocessing_for
from fairfer.finetune import load_checkpoint
from fairfer.schemas import embeddings_schema


def embed_shard_finetuned(
    aligned: Path, checkpoint: Path, output: Path, *, batch_size: int, workers: int
) -> int:
    """The 128-d bottleneck that the fine-tuned heads read (not L2-normalised)."""
    model, weights = load_checkpoint(checkpoint)
    schema = embeddings_schema(
        model.embedding_size,
        weights=weights,
        weights_sha256=sha256_of(checkpoint),
        embedder="finetuned",
    )
    return write_embeddings(
        model.embedder(),
        preprocessing_for(weights),
        aligned,
        output,
        schema,
        batch_size=batch_size,
        workers=workers,
    )


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    torch.set_num_threads(snakemake.threads)
    embed_shard_finetuned(
        Path(snakemake.input.aligned),
        Path(snakemake.input.checkpoint),
        Path(snakemake.output.embeddings),
        batch_size=snakemake.params.batch_size,
        workers=snakemake.params.loader_workers,
    )
