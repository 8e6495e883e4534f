"""Crop loading for the embedding rule: order, rejects and worker processes."""

import io

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fairfer.faces.embedding import crop_loader, embed_batches
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


def _asymmetric_crops(path, n: int = 6):
    """160x160 crops whose left and right halves differ, so a mirror image is different."""
    rows = []
    rng = np.random.default_rng(0)
    for index in range(n):
        pixels = rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        rows.append(
            {
                "image_id": f"img{index}",
                "dataset": "d",
                "split": "train",
                "status": "ok",
                "reject_reason": None,
                "detection_probability": None,
                "detection_pass": None,
                "box": None,
                "landmarks": None,
                "crop": buffer.getvalue(),
            }
        )
    return write_parquet(pd.DataFrame(rows), path, ALIGNED)


def test_pooled_label_features_come_from_the_same_pass_as_the_embedding(tmp_path):
    from fairfer.faces.embedding import LabelFeatures, embed_with_label_features
    from fairfer.faces.facenet import POOLED_FEATURES, EmbeddingAndPooled, build_facenet

    torch.manual_seed(0)
    model = build_facenet(embedding_size=128).eval()
    path = _asymmetric_crops(tmp_path / "aligned.parquet")
    preprocess = lambda x: (x - 127.5) / 128.0  # noqa: E731
    plain = np.concatenate(
        [v for _, v in embed_batches(model, preprocess, crop_loader(path, batch_size=3, workers=0))]
    )
    outputs = {}
    for features in (
        LabelFeatures("pooled", False),
        LabelFeatures("pooled", True),
        LabelFeatures("embedding", True),
    ):
        batches = list(
            embed_with_label_features(
                EmbeddingAndPooled(model),
                preprocess,
                crop_loader(path, batch_size=3, workers=0),
                embedding_size=128,
                features=features,
            )
        )
        embeddings = np.concatenate([b[1] for b in batches])
        np.testing.assert_allclose(embeddings, plain, atol=1e-5)
        outputs[features.name] = np.concatenate([b[2] for b in batches])
    assert outputs["pooled"].shape == (6, POOLED_FEATURES)
    assert outputs["pooled"].dtype == np.float16
    assert not np.allclose(outputs["pooled"], outputs["pooled+flip"], atol=1e-3)
    flipped_embedding = outputs["embedding+flip"].astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(flipped_embedding, axis=1), 1, atol=2e-3)


def test_embeddings_schema_carries_the_label_features_kind():
    from fairfer.schemas import embeddings_schema

    schema = embeddings_schema(
        128, weights="w", weights_sha256="x", label_features=("pooled+flip", 1792)
    )
    assert schema.field("label_features").type.list_size == 1792
    assert schema.metadata[b"label_features"] == b"pooled+flip"
    assert "label_features" not in embeddings_schema(128, weights="w", weights_sha256="x").names
