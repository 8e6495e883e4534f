"""Batched MTCNN: same pyramid and cascade as facenet-pytorch, faces assigned to their images."""

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from facenet_pytorch.models.utils.detect_face import detect_face
from PIL import Image

from fairfer.faces.mtcnn import detect_faces, pyramid_scales

DATA_DIR = Path(
    os.environ.get("FAIRFER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
FAIRFACE_ZIP = DATA_DIR / "fairface" / "fairface-img-margin025-trainval.zip"
SETTINGS = {"min_face_size": 20, "thresholds": (0.6, 0.7, 0.7), "factor": 0.709}


@pytest.fixture(scope="module")
def networks():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tuple(network().eval() for network in (PNet, RNet, ONet))
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Twelve FairFace val photographs with a 25% border, as the aligner pads them."""
    if not FAIRFACE_ZIP.is_file():
        pytest.skip(f"FairFace zip not found at {FAIRFACE_ZIP}")
    with zipfile.ZipFile(FAIRFACE_ZIP) as archive:
        images = [
            np.asarray(Image.open(io.BytesIO(archive.read(f"val/{i}.jpg"))).convert("RGB"))
            for i in range(1, 13)
        ]
    return np.stack([np.pad(image, ((56, 56), (56, 56), (0, 0)), mode="edge") for image in images])


def largest(boxes: np.ndarray) -> int:
    return int(np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])))


@pytest.mark.parametrize("size", [(336, 336), (160, 160), (480, 300), (13, 40)])
def test_pyramid_matches_mtcnn(size):
    height, width = size
    expected, scale, side = [], 12 / 20, min(size) * 12 / 20
    while side >= 12:
        expected.append(scale)
        scale, side = scale * 0.709, side * 0.709
    assert pyramid_scales(height, width, 20, 0.709) == pytest.approx(expected)
    assert pyramid_scales(13, 40, 20, 0.709) == []


def test_agrees_with_facenet_pytorch(networks, faces):
    ours = detect_faces(faces, networks, **SETTINGS)
    with torch.inference_mode():
        boxes, points = detect_face(
            torch.from_numpy(faces), 20, *networks, [0.6, 0.7, 0.7], 0.709, "cpu"
        )
    distances = []
    for (our_boxes, our_points), their_boxes, their_points in zip(ours, boxes, points, strict=True):
        assert our_boxes.shape[1:] == (5,) and our_points.shape[1:] == (5, 2)
        their_boxes = np.asarray(their_boxes, dtype=np.float64).reshape(-1, 5)
        their_points = np.asarray(their_points, dtype=np.float64).reshape(-1, 5, 2)
        assert len(our_boxes) > 0 and len(their_boxes) > 0
        ours_face, theirs_face = our_points[largest(our_boxes)], their_points[largest(their_boxes)]
        inter_ocular = np.linalg.norm(theirs_face[0] - theirs_face[1])
        distances.append(np.linalg.norm(ours_face - theirs_face, axis=1).mean() / inter_ocular)
    # Resampling the 8-bit image moves landmarks about as much as shifting the photograph by
    # one pixel moves facenet-pytorch's own (median 2% of the eye distance on FairFace).
    assert np.median(distances) < 0.05
    assert np.mean(np.asarray(distances) < 0.15) >= 0.75


def test_faces_stay_with_their_image(networks, faces):
    blank = np.full_like(faces[:1], 128)
    batch = np.concatenate([blank, faces[:3], blank])
    results = detect_faces(batch, networks, **SETTINGS)
    alone = detect_faces(faces[:3], networks, **SETTINGS)
    assert len(results) == 5
    assert len(results[0][0]) == 0 and len(results[4][0]) == 0
    for (boxes, points), (boxes_alone, points_alone) in zip(results[1:4], alone, strict=True):
        np.testing.assert_allclose(boxes, boxes_alone, atol=1e-3)
        np.testing.assert_allclose(points, points_alone, atol=1e-3)


def test_no_candidate_gives_empty_results(networks):
    results = detect_faces(np.zeros((2, 64, 64, 3), np.uint8), networks, **SETTINGS)
    assert [(b.shape, p.shape) for b, p in results] == [((0, 5), (0, 5, 2))] * 2
