"""Batched MTCNN face detection with facenet-pytorch's networks, resampling 8-bit images.

facenet-pytorch's ``detect_face`` resamples every pyramid level and every candidate crop with
``interpolate(mode="area")`` on float tensors, one call per candidate box: 40% of its time on
the CPU. The original MTCNN (Zhang et al. 2016, and Sandberg's port that facenet-pytorch
follows) resizes 8-bit images (``cv2.resize``). :func:`detect_faces` runs the same three
stages with the same networks, thresholds, non-maximum suppression and box arithmetic
(facenet-pytorch's own helpers), but resamples the 8-bit images with antialiased bilinear
filtering, torch's vectorised uint8 kernel (the one behind torchvision's ``resize``), which
is much faster than the float path (benchmarks/detector_agreement.py checks the detections
agree). Where a candidate's crop would be empty it
drops the candidate, where facenet-pytorch would pair the remaining crops with the wrong boxes.
"""

from __future__ import annotations

import numpy as np
import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from facenet_pytorch.models.utils.detect_face import (
    batched_nms_numpy,
    bbreg,
    generateBoundingBox,
    pad,
    rerec,
)
from torch.nn import functional as F
from torchvision.ops import batched_nms

#: P-Net's receptive field: faces are searched at scales that map min_face_size onto it.
PNET_CELL = 12
#: Candidates per R-Net and O-Net call. Every new input shape makes oneDNN build and keep new
#: kernels and buffers: with one call per batch's own candidate count, a 4,250-image FairFace
#: alignment job grew to 4.9 GB; fixed, padded chunks keep it flat at about 1.7 GB.
CANDIDATE_CHUNK = 128


def pyramid_scales(height: int, width: int, min_face_size: int, factor: float) -> list[float]:
    """Image scales of the P-Net pyramid, largest first, as in MTCNN.

    The first scale maps a face of ``min_face_size`` pixels onto P-Net's 12-pixel cell; each
    next one is ``factor`` times smaller, down to a shorter side of 12 pixels.
    """
    scale = PNET_CELL / min_face_size
    side = min(height, width) * scale
    scales = []
    while side >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _resized(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(images, size=size, mode="bilinear", antialias=True)


def _in_chunks(inputs: torch.Tensor, network: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """``network(inputs)`` computed in chunks of :data:`CANDIDATE_CHUNK` rows, the last one
    padded with zeros (rows are independent in eval mode)."""
    outputs = []
    for start in range(0, len(inputs), CANDIDATE_CHUNK):
        chunk = inputs[start : start + CANDIDATE_CHUNK]
        rows = len(chunk)
        if rows < CANDIDATE_CHUNK:
            chunk = torch.cat([chunk, chunk.new_zeros((CANDIDATE_CHUNK - rows, *chunk.shape[1:]))])
        outputs.append([output[:rows] for output in network(chunk)])
    return tuple(torch.cat(parts) for parts in zip(*outputs, strict=True))


def _network_input(images: torch.Tensor) -> torch.Tensor:
    """8-bit pixels to MTCNN's input range, (x - 127.5) / 128."""
    return (images.float() - 127.5) * 0.0078125


def _crops(
    images: torch.Tensor, boxes: torch.Tensor, image_indices: torch.Tensor, side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each box's part of its image (clipped to the frame) resized to ``side``; and which
    boxes have a non-empty part (only those have a crop)."""
    height, width = images.shape[2:]
    top, bottom, left, right = pad(boxes, width, height)
    keep = (bottom > top - 1) & (right > left - 1)
    crops = [
        _resized(images[index : index + 1, :, y0 - 1 : y1, x0 - 1 : x1], (side, side))
        for index, y0, y1, x0, x1 in zip(
            image_indices[torch.from_numpy(keep)].tolist(),
            top[keep],
            bottom[keep],
            left[keep],
            right[keep],
            strict=True,
        )
    ]
    if not crops:
        return torch.empty(0, 3, side, side), torch.from_numpy(keep)
    return _network_input(torch.cat(crops)), torch.from_numpy(keep)


@torch.inference_mode()
def detect_faces(
    batch: np.ndarray,
    networks: tuple[PNet, RNet, ONet],
    *,
    min_face_size: int,
    thresholds: tuple[float, float, float],
    factor: float,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Faces in a batch of equally sized images: boxes with scores, and five landmarks.

    Parameters
    ----------
    batch : numpy.ndarray
        uint8 RGB images, shape ``(n, height, width, 3)``.
    networks : tuple
        facenet-pytorch's pretrained P-, R- and O-Net, on the device the batch should go to.
    min_face_size : int
        Smallest face searched for, in pixels (at least 12).
    thresholds : tuple of float
        Score thresholds of the three stages.
    factor : float
        Scale step of the image pyramid.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        Per image, boxes ``(k, 5)`` as ``x1, y1, x2, y2, score`` and landmarks ``(k, 5, 2)``
        as (x, y) of left eye, right eye, nose, left and right mouth corner, in pixel-index
        coordinates of the image; ``k`` may be 0.
    """
    pnet, rnet, onet = networks
    device = next(pnet.parameters()).device
    # The permuted view keeps the channels-last memory of the batch, which the uint8 resize
    # kernel reads fastest.
    images = torch.as_tensor(batch, device=device).permute(0, 3, 1, 2)
    n_images, _, height, width = images.shape

    candidates, candidate_images, kept = [], [], []
    offset = 0
    for scale in pyramid_scales(height, width, min_face_size, factor):
        level = _resized(images, (int(height * scale + 1), int(width * scale + 1)))
        regression, probabilities = pnet(_network_input(level))
        found, found_images = generateBoundingBox(
            regression, probabilities[:, 1], scale, thresholds[0]
        )
        candidates.append(found)
        candidate_images.append(found_images)
        kept.append(batched_nms(found[:, :4], found[:, 4], found_images, 0.5) + offset)
        offset += len(found)
    pick = torch.cat(kept)
    boxes, image_indices = torch.cat(candidates)[pick], torch.cat(candidate_images)[pick]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], image_indices, 0.7)
    boxes, image_indices = boxes[pick], image_indices[pick]
    box_width = boxes[:, 2] - boxes[:, 0]
    box_height = boxes[:, 3] - boxes[:, 1]
    boxes = rerec(
        torch.stack(
            [
                boxes[:, 0] + boxes[:, 5] * box_width,
                boxes[:, 1] + boxes[:, 6] * box_height,
                boxes[:, 2] + boxes[:, 7] * box_width,
                boxes[:, 3] + boxes[:, 8] * box_height,
                boxes[:, 4],
            ],
            dim=1,
        )
    )

    if len(boxes):
        crops, keep = _crops(images, boxes, image_indices, 24)
        boxes, image_indices = boxes[keep], image_indices[keep]
    if len(boxes):
        regression, probabilities = _in_chunks(crops, rnet)
        score = probabilities[:, 1]
        passed = score > thresholds[1]
        boxes = torch.cat((boxes[passed, :4], score[passed, None]), dim=1)
        image_indices, regression = image_indices[passed], regression[passed]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_indices, 0.7)
        boxes = rerec(bbreg(boxes[pick], regression[pick]))
        image_indices = image_indices[pick]

    points = torch.zeros(0, 5, 2)
    if len(boxes):
        crops, keep = _crops(images, boxes, image_indices, 48)
        boxes, image_indices = boxes[keep], image_indices[keep]
    if len(boxes):
        regression, landmarks, probabilities = _in_chunks(crops, onet)
        score = probabilities[:, 1]
        passed = score > thresholds[2]
        boxes = torch.cat((boxes[passed, :4], score[passed, None]), dim=1)
        image_indices, regression = image_indices[passed], regression[passed]
        landmarks = landmarks[passed]
        # Landmarks are relative to the O-Net box, in facenet-pytorch's 1-based convention.
        box_width = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        box_height = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        points = torch.stack(
            (
                box_width * landmarks[:, :5] + boxes[:, 0:1] - 1,
                box_height * landmarks[:, 5:] + boxes[:, 1:2] - 1,
            ),
            dim=2,
        )
        boxes = bbreg(boxes, regression)
        pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_indices, 0.7, "Min")
        boxes, image_indices, points = boxes[pick], image_indices[pick], points[pick]

    boxes_array = boxes.cpu().numpy().astype(np.float64)
    points_array = points.cpu().numpy().astype(np.float64)
    owners = image_indices.cpu().numpy()
    return [(boxes_array[owners == i], points_array[owners == i]) for i in range(n_images)]
