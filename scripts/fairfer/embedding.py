"""Batched FaceNet embedding of aligned crops, decoded in DataLoader worker processes."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fairfer.schemas import write_parquet

logger = logging.getLogger(__name__)

CROP_COLUMNS = ["image_id", "dataset", "split", "status", "crop"]


def crops_to_tensor(crops: list[bytes]) -> torch.Tensor:
    """Decode PNG crops into a float (N, 3, H, W) batch of 0..255 RGB values."""
    arrays = [np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in crops]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()


class AlignedCropBatches(IterableDataset):
    """Batches of decoded crops from an aligned-faces Parquet file, rejects skipped.

    Streams the file in record batches (memory stays bounded) and deals batch ``i`` to worker
    ``i % n_workers``; DataLoader returns workers' batches round-robin, so the output order is
    the file's order whatever the number of workers.
    """

    def __init__(self, path: Path, *, batch_size: int) -> None:
        self.path = Path(path)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[tuple[dict[str, list], torch.Tensor]]:
        worker = get_worker_info()
        worker_id, n_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        batches = pq.ParquetFile(self.path).iter_batches(
            batch_size=self.batch_size, columns=CROP_COLUMNS
        )
        for index, batch in enumerate(batches):
            if index % n_workers != worker_id:
                continue
            rows = pa.Table.from_batches([batch])
            rows = rows.filter(pc.not_equal(rows["status"], "rejected"))
            metadata = {name: rows[name].to_pylist() for name in CROP_COLUMNS[:-1]}
            # An empty batch still travels so that every worker keeps its turn in the order.
            crops = rows["crop"].to_pylist()
            yield metadata, crops_to_tensor(crops) if crops else torch.empty(0, 3, 0, 0)


def crop_loader(path: Path, *, batch_size: int, workers: int) -> DataLoader:
    """DataLoader over :class:`AlignedCropBatches`; ``workers=0`` decodes in-process."""
    return DataLoader(
        AlignedCropBatches(path, batch_size=batch_size),
        batch_size=None,
        num_workers=workers,
        persistent_workers=False,
    )


@torch.inference_mode()
def embed_batches(
    model: torch.nn.Module,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
) -> Iterator[tuple[dict[str, list], np.ndarray]]:
    """Yield (metadata, float32 embeddings) per non-empty batch, in file order."""
    for metadata, images in loader:
        if len(metadata["image_id"]) == 0:
            continue
        yield metadata, model(preprocess(images)).numpy().astype(np.float32)


def write_embeddings(
    model: torch.nn.Module,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    aligned: Path,
    output: Path,
    schema: pa.Schema,
    *,
    batch_size: int,
    workers: int,
) -> int:
    """Embed every non-rejected crop of ``aligned`` into ``output`` (streamed); return the count."""
    dimension = schema.field("embedding").type.list_size
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
