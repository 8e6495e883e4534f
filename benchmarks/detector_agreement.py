"""Print the speed of fairfer's batched MTCNN against facenet-pytorch's, and how far apart
their landmarks are compared with MTCNN's own jitter.

On the same padded FairFace val images (the aligner's first-pass input), with the same
networks (channels-last, as the aligner builds them) and settings, one thread:

- images/s of ``facenet_pytorch``'s ``detect_face`` and of ``fairfer.faces.mtcnn.detect_faces``
  with float32 and with bfloat16 networks (bfloat16 is not used by the pipeline: 1.1x faster,
  landmarks further from float32's than MTCNN's own jitter), in batches of ``--batch``;
- detections found by one and not the other;
- for the largest face, the mean distance between fairfer's and facenet-pytorch's five
  landmarks, relative to the inter-ocular distance (median, 95th percentile);
- the same distance between facenet-pytorch's landmarks on the image and on the image shifted
  by one pixel (corrected for the shift): MTCNN's own jitter, the yardstick for the above.

    .venv/bin/python benchmarks/detector_agreement.py --images 512
"""

import argparse
import copy
import io
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from facenet_pytorch.models.utils.detect_face import detect_face
from PIL import Image

from fairfer.faces.mtcnn import detect_faces

ROOT = Path(__file__).resolve().parents[1]

THRESHOLDS = (0.6, 0.7, 0.7)
FACTOR = 0.709


class BFloat16Network(torch.nn.Module):
    """A copy of an MTCNN network computing in bfloat16, with float32 inputs and outputs (the
    detector's box arithmetic is numpy, which has no bfloat16)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = copy.deepcopy(network).to(torch.bfloat16)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(output.float() for output in self.network(images.to(torch.bfloat16)))


def padded_images(archive: Path, n_images: int, pad: tuple[int, int]) -> np.ndarray:
    """FairFace val images 1..n with ``pad`` (before, after) pixels of edge replication."""
    with zipfile.ZipFile(archive) as handle:
        images = [
            np.asarray(Image.open(io.BytesIO(handle.read(f"val/{i}.jpg"))).convert("RGB"))
            for i in range(1, n_images + 1)
        ]
    return np.stack([np.pad(image, (pad, pad, (0, 0)), mode="edge") for image in images])


def facenet_pytorch_detections(batch, networks, min_face_size, batch_size):
    results = []
    for start in range(0, len(batch), batch_size):
        with torch.inference_mode():
            boxes, points = detect_face(
                torch.from_numpy(batch[start : start + batch_size]),
                min_face_size,
                *networks,
                list(THRESHOLDS),
                FACTOR,
                "cpu",
            )
        results += [
            (np.asarray(b, np.float64).reshape(-1, 5), np.asarray(p, np.float64).reshape(-1, 5, 2))
            for b, p in zip(boxes, points, strict=True)
        ]
    return results


def fairfer_detections(batch, networks, min_face_size, batch_size):
    results = []
    for start in range(0, len(batch), batch_size):
        results += detect_faces(
            batch[start : start + batch_size],
            networks,
            min_face_size=min_face_size,
            thresholds=THRESHOLDS,
            factor=FACTOR,
        )
    return results


def landmark_distances(first, second, shift: float = 0.0) -> tuple[np.ndarray, int, int]:
    """Per image found by both: mean landmark distance of the largest faces / eye distance."""
    distances, only_first, only_second = [], 0, 0
    for (boxes_a, points_a), (boxes_b, points_b) in zip(first, second, strict=True):
        if len(boxes_a) and len(boxes_b):
            a = points_a[
                np.argmax((boxes_a[:, 2] - boxes_a[:, 0]) * (boxes_a[:, 3] - boxes_a[:, 1]))
            ]
            b = points_b[
                np.argmax((boxes_b[:, 2] - boxes_b[:, 0]) * (boxes_b[:, 3] - boxes_b[:, 1]))
            ]
            distances.append(
                np.linalg.norm(a - (b - shift), axis=1).mean() / np.linalg.norm(a[0] - a[1])
            )
        else:
            only_first += bool(len(boxes_a))
            only_second += bool(len(boxes_b))
    return np.asarray(distances), only_first, only_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--archive", type=Path, default=ROOT / "data/fairface/fairface-img-margin025-trainval.zip"
    )
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--min-face-size", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    networks = tuple(
        network().to(memory_format=torch.channels_last).eval() for network in (PNet, RNet, ONet)
    )
    precisions = {
        "float32": networks,
        "bfloat16": tuple(BFloat16Network(network) for network in networks),
    }
    batch = padded_images(args.archive, args.images, (56, 56))
    shifted = padded_images(args.archive, args.images, (57, 55))

    start = time.perf_counter()
    theirs = facenet_pytorch_detections(batch, networks, args.min_face_size, args.batch)
    their_seconds = time.perf_counter() - start
    jitter, _, _ = landmark_distances(
        theirs,
        facenet_pytorch_detections(shifted, networks, args.min_face_size, args.batch),
        1.0,
    )
    print(
        f"{args.images} FairFace val images padded to {batch.shape[1]}x{batch.shape[2]}, 1 thread"
    )
    print(
        "detector                  images/s  speed-up  found only by facenet-pytorch / only "
        "by it  landmark distance / eye distance: median, 95th percentile"
    )
    print(f"facenet-pytorch float32   {args.images / their_seconds:8.1f}      1.00")
    for precision, nets in precisions.items():
        start = time.perf_counter()
        ours = fairfer_detections(batch, nets, args.min_face_size, args.batch)
        seconds = time.perf_counter() - start
        distances, only_theirs, only_ours = landmark_distances(theirs, ours)
        print(
            f"fairfer {precision:<17} {args.images / seconds:8.1f}  "
            f"{their_seconds / seconds:8.2f}  {only_theirs:>4} / {only_ours:<4}  "
            f"{np.median(distances):.4f}, {np.percentile(distances, 95):.4f}"
        )
    print(
        f"1-pixel shift of the image (facenet-pytorch float32, MTCNN's own jitter): "
        f"{np.median(jitter):.4f}, {np.percentile(jitter, 95):.4f}"
    )


if __name__ == "__main__":
    main()
