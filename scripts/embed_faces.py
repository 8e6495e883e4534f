"""FaceNet (InceptionResnetV1) embeddings of one shard of aligned crops, batched."""

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import torch

from fairfer.download import sha256_of
from fairfer.embedding import crop_loader, embed_batches
from fairfer.facenet import load_facenet, preprocessing_for
from fairfer.schemas import embeddings_schema, write_parquet

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
) -> int:
    model, dimension = load_facenet(weights, state_dict_path=weights_path, seed=seed)
    preprocess = preprocessing_for(weights)
    digest = sha256_of(weights_path) if weights_path is not None else weights
    schema = embeddings_schema(dimension, weights=weights, weights_sha256=digest)
    if weights == "random":
        logger.warning("embedding with RANDOM weights: outputs are marked random_weights=true")
    done = 0

    def batches() -> Iterator[pa.Table]:
        nonlocal done
        loader = crop_loader(aligned, batch_size=batch_size, workers=workers)
        for metadata, vectors in embed_batches(model, preprocess, loader):
            done += len(vectors)
            logger.info("embedded %d crops", done)
            yield pa.Table.from_pydict(
                {
                    "image_id": metadata["image_id"],
                    "dataset": metadata["dataset"],
                    "split": metadata["split"],
                    "alignment_status": metadata["status"],
                    "embedding": pa.FixedSizeListArray.from_arrays(
                        pa.array(vectors.reshape(-1)), dimension
                    ),
                },
                schema=schema,
            )

    write_parquet(batches(), output, schema)
    return done


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
    )
