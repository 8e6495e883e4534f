"""Batched FaceNet embedding of aligned crops, decoded in DataLoader worker processes."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
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


@dataclass(frozen=True)
class LabelFeatures:
    """Which features of the frozen FaceNet the demographic classifiers read.

    ``kind`` is ``embedding`` (the 128-d normalised embedding) or ``pooled`` (the 1792-d
    average-pooled layer the embedding is computed from); with ``flip`` the features of each
    crop and of its mirror image are averaged (test-time augmentation; an embedding is then
    normalised again).
    """

    kind: str
    flip: bool

    @property
    def name(self) -> str:
        return self.kind + ("+flip" if self.flip else "")


@torch.inference_mode()
def embed_with_label_features(
    network: torch.nn.Module,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    loader: DataLoader,
    *,
    embedding_size: int,
    features: LabelFeatures,
) -> Iterator[tuple[dict[str, list], np.ndarray, np.ndarray]]:
    """Yield (metadata, embeddings, label features) per non-empty batch, in file order.

    ``network`` is a :class:`fairfer.faces.facenet.EmbeddingAndPooled` (wrapped for inference,
    unnormalised outputs): one pass gives the embedding and the pooled layer; with ``flip`` a
    second pass on the mirrored crops. The embeddings are those of the unflipped crops, as
    :func:`embed_batches` gives them.
    """
    for metadata, images in loader:
        if len(metadata["image_id"]) == 0:
            continue
        outputs = network(preprocess(images)).float()
        embedding = F.normalize(outputs[:, :embedding_size], dim=1)
        label = outputs[:, embedding_size:] if features.kind == "pooled" else embedding
        if features.flip:
            mirrored = network(preprocess(torch.flip(images, dims=[3]))).float()
            if features.kind == "pooled":
                label = (label + mirrored[:, embedding_size:]) / 2
            else:
                label = F.normalize(label + F.normalize(mirrored[:, :embedding_size], dim=1), dim=1)
        yield metadata, embedding.numpy(), label.numpy().astype(np.float16)


def write_embeddings(
    model: torch.nn.Module,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    aligned: Path,
    output: Path,
    schema: pa.Schema,
    *,
    batch_size: int,
    workers: int,
    label_features: LabelFeatures | None = None,
) -> int:
    """Embed every non-rejected crop of ``aligned`` into ``output`` (streamed); return the count.

    With ``label_features``, ``model`` is a :class:`fairfer.faces.facenet.EmbeddingAndPooled` for
    inference and ``schema`` has the ``label_features`` column
    (:func:`embed_with_label_features`).
    """
    dimension = schema.field("embedding").type.list_size
    done = 0

    def batches() -> Iterator[pa.Table]:
        nonlocal done
        loader = crop_loader(aligned, batch_size=batch_size, workers=workers)
        if label_features is None:
            results = (
                (metadata, vectors, None)
                for metadata, vectors in embed_batches(model, preprocess, loader)
            )
        else:
            results = embed_with_label_features(
                model, preprocess, loader, embedding_size=dimension, features=label_features
            )
        for metadata, vectors, features in results:
            done += len(vectors)
            logger.info("embedded %d crops", done)
            columns = {
                "image_id": metadata["image_id"],
                "dataset": metadata["dataset"],
                "split": metadata["split"],
                "alignment_status": metadata["status"],
                "embedding": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.reshape(-1)), dimension
                ),
            }
            if features is not None:
                columns["label_features"] = pa.FixedSizeListArray.from_arrays(
                    pa.array(features.reshape(-1), type=pa.float16()), features.shape[1]
                )
            yield pa.Table.from_pydict(columns, schema=schema)

    write_parquet(batches(), output, schema)
    return done
