"""FaceNet (InceptionResnetV1) embeddings of one shard of aligned crops, batched."""

import logging
from pathlib import Path

import torch

from fairfer.datasets.download import sha256_of
from fairfer.faces.embedding import LabelFeatures, write_embeddings
from fairfer.faces.facenet import (
    POOLED_FEATURES,
    EmbeddingAndPooled,
    load_facenet,
    preprocessing_for,
)
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
    label_features: LabelFeatures | None = None,
) -> int:
    """Embed one shard; with ``label_features`` (other than the plain embedding) also write the
    features the demographic classifiers read (``race_matching.features``, ``.flip_average``)."""
    model, dimension = load_facenet(weights, state_dict_path=weights_path, seed=seed)
    torch_device = resolve_device(device, key="embedding.device")
    dtype = resolve_precision(precision, torch_device)
    digest = sha256_of(weights_path) if weights_path is not None else weights
    if label_features is not None and label_features.name == "embedding":
        label_features = None  # the classifiers read the embedding column itself
    size = POOLED_FEATURES if label_features and label_features.kind == "pooled" else dimension
    schema = embeddings_schema(
        dimension,
        weights=weights,
        weights_sha256=digest,
        precision=dtype_name(dtype),
        label_features=(label_features.name, size) if label_features else None,
    )
    logger.info(
        "embedding on %s in %s%s",
        torch_device,
        dtype,
        f", label features {label_features.name}" if label_features else "",
    )
    if weights == "random":
        logger.warning("embedding with RANDOM weights: outputs are marked random_weights=true")
    network = (
        InferenceNetwork(model, device=torch_device, dtype=dtype, normalise_output=True)
        if label_features is None
        else InferenceNetwork(
            EmbeddingAndPooled(model), device=torch_device, dtype=dtype, normalise_output=False
        )
    )
    return write_embeddings(
        network,
        preprocessing_for(weights),
        aligned,
        output,
        schema,
        batch_size=batch_size,
        workers=workers,
        label_features=label_features,
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
        label_features=LabelFeatures(
            snakemake.params.label_features["features"],
            snakemake.params.label_features["flip_average"],
        ),
    )
