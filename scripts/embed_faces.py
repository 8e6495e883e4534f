"""FaceNet (InceptionResnetV1) embeddings of one shard of aligned crops, batched."""

import logging
from pathlib import Path

import torch

from fairfer.download import sha256_of
from fairfer.embedding import write_embeddings
from fairfer.facenet import load_facenet, preprocessing_for
from fairfer.inference import (
    InferenceNetwork,
    Precision,
    dtype_name,
    resolve_device,
    resolve_precision,
)
from fairfer.schemas import embeddings_schema

logger = logging.getLogger(__name__)


def embed_shard(
    aligned: Path,
    output: Path,
    *,
    weights: str,
    weights_path: Path | None,
    batch_size: int,
    workers: int,
    seed: int,
    device: str,
    precision: Precision,
) -> int:
    model, dimension = load_facenet(weights, state_dict_path=weights_path, seed=seed)
    torch_device = resolve_device(device, key="embedding.device")
    dtype = resolve_precision(precision, torch_device)
    digest = sha256_of(weights_path) if weights_path is not None else weights
    schema = embeddings_schema(
        dimension, weights=weights, weights_sha256=digest, precision=dtype_name(dtype)
    )
    logger.info("embedding on %s in %s", torch_device, dtype)
    if weights == "random":
        logger.warning("embedding with RANDOM weights: outputs are marked random_weights=true")
    return write_embeddings(
        InferenceNetwork(model, device=torch_device, dtype=dtype, normalise_output=True),
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
    weights_input = snakemake.input.get("weights")
    embed_shard(
        Path(snakemake.input.aligned),
        Path(snakemake.output.embeddings),
        weights=snakemake.params.weights,
        weights_path=Path(weights_input) if weights_input else None,
        batch_size=snakemake.params.batch_size,
        workers=snakemake.params.loader_workers,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        precision=snakemake.params.precision,
    )
