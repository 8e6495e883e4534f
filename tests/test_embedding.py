"""Crop loading for the embedding rule: order, rejects and worker processes."""

import io

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fairfer.embedding import crop_loader, embed_batches
from fairfer.schemas import ALIGNED, write_parquet


def aligned_file(path, n: int = 23):
    rows = []
    for index in range(n):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (index, index, index)).save(buffer, format="PNG")
        rejected = index % 5 == 0
        rows.append(
            {
                "image_id": f"img{index}",
                "dataset": "d",
                "split": "train",
                "status": "rejected" if rejected else "ok",
                "reject_reason": "x" if rejected else None,
                "detection_probability": None,
                "detection_pass": None,
                "box": None,
                "landmarks": None,
                "crop": None if rejected else buffer.getvalue(),
            }
        )
    return write_parquet(pd.DataFrame(rows), path, ALIGNED)


class MeanPixel(torch.nn.Module):
    def forward(self, images):
        return images.mean(dim=(1, 2, 3), keepdim=False)[:, None]


def test_workers_keep_file_order_and_skip_rejects(tmp_path):
    path = aligned_file(tmp_path / "aligned.parquet")
    results = {}
    for workers in (0, 2):
        loader = crop_loader(path, batch_size=4, workers=workers)
        batches = list(embed_batches(MeanPixel(), lambda x: x, loader))
        ids = [i for metadata, _ in batches for i in metadata["image_id"]]
        values = np.concatenate([v for _, v in batches]).ravel()
        results[workers] = (ids, values)
    ids, values = results[0]
    assert ids == [f"img{i}" for i in range(23) if i % 5]
    assert values.tolist() == [float(i) for i in range(23) if i % 5]
    assert results[2][0] == ids
