"""Embeddings of one shard of aligned crops by FaceNet fine-tuned on FairFace."""

import logging
from pathlib import Path

import torch

from fairfer.datasets.download import sha256_of
from fairfer.faces.embedding import write_embeddings
from fairfer.faces.facenet import preprocessing_for
from fairfer.faces.finetune import load_checkpoint
from fairfer.inference import (
    InferenceNetwork,
    Precision,
    dtype_name,
    resolve_device,
    resolve_precision,
)
from fairfer.schemas import embeddings_schema

logger = logging.getLogger(__name__)


def embed_shard_finetuned(
    aligned: Path,
    checkpoint: Path,
    output: Path,
    *,
    batch_size: int,
    workers: int,
    device: str,
    precision: Precision,
) -> int:
    """The 128-d bottleneck that the fine-tuned heads read (not L2-normalised)."""
    model, weights = load_checkpoint(checkpoint)
    torch_device = resolve_device(device, key="embedding.device")
    dtype = resolve_precision(precision, torch_device)
    schema = embeddings_schema(
        model.embedding_size,
        weights=weights,
        weights_sha256=sha256_of(checkpoint),
        embedder="finetuned",
        precision=dtype_name(dtype),
    )
    logger.info("embedding on %s in %s", torch_device, dtype)
    return write_embeddings(
        InferenceNetwork(
            model.embedder(), device=torch_device, dtype=dtype, normalise_output=False
        ),
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
        device=snakemake.params.device,
        precision=snakemake.params.precision,
    )
