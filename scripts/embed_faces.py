"""FaceNet (InceptionResnetV1) embeddings of one shard of aligned crops, batched."""

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from fairfer.download import sha256_of
from fairfer.facenet import load_facenet, preprocessing_for
from fairfer.schemas import embeddings_schema, write_parquet

logger = logging.getLogger(__name__)


def crops_to_tensor(crops: list[bytes]) -> torch.Tensor:
    """Decode PNG crops into a float (N, 3, H, W) batch of 0..255 RGB values."""
    arrays = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in crops]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()


@torch.inference_mode()
def embed_crops(model: torch.nn.Module, preprocess, crops: list[bytes]) -> np.ndarray:
    return model(preprocess(crops_to_tensor(crops))).numpy().astype(np.float32)


def embed_shard(
    aligned: Path,
    output: Path,
    *,
    weights: str,
    weights_path: Path | None,
    batch_size: int,
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
        columns = ["image_id", "dataset", "split", "status", "crop"]
        for batch in pq.ParquetFile(aligned).iter_batches(batch_size=batch_size, columns=columns):
            rows = pa.Table.from_batches([batch])
            rows = rows.filter(pa.compute.not_equal(rows["status"], "rejected"))
            if rows.num_rows == 0:
                continue
            vectors = embed_crops(model, preprocess, rows["crop"].to_pylist())
            done += rows.num_rows
            logger.info("embedded %d crops", done)
            yield pa.Table.from_pydict(
                {
                    "image_id": rows["image_id"],
                    "dataset": rows["dataset"],
                    "split": rows["split"],
                    "alignment_status": rows["status"],
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
        seed=snakemake.params.seed,
    )
