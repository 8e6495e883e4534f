"""MTCNN face detection and 5-point similarity alignment to a canonical template.

Faces are detected with the pretrained MTCNN networks shipped in ``facenet-pytorch`` (run in
batches by :func:`fairfer.faces.mtcnn.detect_faces`), one face is kept per image (the largest box),
and the image is warped with the least-squares similarity transform that maps the face's five
landmarks onto a fixed template. Images that yield no face either fall back to the whole frame
or are rejected, so every caller decides explicitly how undetected faces enter an analysis.

Coordinates follow the pixel-index convention used by MTCNN and OpenCV: the centre of the
top-left pixel is ``(0, 0)``.
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from PIL import Image

from fairfer.faces.geometry import canonical_template, centre_square_resize, warp_to_template
from fairfer.faces.mtcnn import detect_faces
from fairfer.images import to_rgb

logger = logging.getLogger(__name__)

FallbackMode = Literal["whole_frame", "reject"]
_FALLBACK_MODES: tuple[str, ...] = ("whole_frame", "reject")
# Detector-input pixels per MTCNN call: 64 padded FairFace images (336x336), the default batch;
# fewer images of larger sizes go together, so memory does not grow with image size.
_PIXELS_PER_DETECTOR_CALL = 64 * 336 * 336


def encode_png(image: Image.Image) -> bytes:
    """Encode a PIL image as PNG bytes, with zlib's fastest setting.

    PNG is lossless at every level; level 1 encodes 160x160 face crops several times faster
    than the default level 6 for slightly larger files (measured when this was chosen; the
    alignment rule's cost is in benchmarks/naive_vs_pipeline.py).

    Parameters
    ----------
    image : PIL.Image.Image
        Image to encode.

    Returns
    -------
    bytes
        The PNG file content.
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@dataclass
class AlignmentResult:
    """Outcome of aligning one image.

    Attributes
    ----------
    status : {"ok", "fallback"}
        ``"ok"`` when a face was detected and aligned, ``"fallback"`` when the whole frame was
        used instead.
    crop : PIL.Image.Image
        RGB crop of ``image_size`` x ``image_size`` pixels.
    box : numpy.ndarray or None
        Detected box ``(x1, y1, x2, y2)`` in original image coordinates (may extend beyond the
        image), or None for a fallback.
    landmarks : numpy.ndarray or None
        The five landmarks, shape ``(5, 2)``, in original image coordinates, or None.
    probability : float or None
        MTCNN face probability of the selected box, or None.
    detection_pass : int
        1 when the face was found by the main detector settings, 2 when only the retry
        settings found it, 0 for a fallback.
    """

    status: Literal["ok", "fallback"]
    crop: Image.Image
    box: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    probability: float | None = None
    detection_pass: int = 0


@dataclass(frozen=True)
class RetrySettings:
    """Detector settings of the second pass over images the first pass found no face in.

    Attributes
    ----------
    pad_fraction : float
        Border added on every side before detection, as in :class:`FaceAligner`; more than
        the first pass so that faces overflowing the frame or in profile are found.
    thresholds : tuple of float
        MTCNN P-, R- and O-net score thresholds, usually lower than the first pass's.
    """

    pad_fraction: float
    thresholds: tuple[float, float, float]


@dataclass
class _DetectorInput:
    """An image prepared for the detector, with the mapping back to its own coordinates."""

    rgb: Image.Image
    # Border added on each side, in source-image pixels.
    pad: tuple[float, float]
    detector_array: np.ndarray
    scale: tuple[float, float]


class FaceAligner:
    """Detect one face per image with MTCNN and align it to a canonical 5-point template.

    Parameters
    ----------
    image_size : int
        Side of the square output crops in pixels.
    face_scale : float
        Face size within the crop, passed to :func:`canonical_template`; ``1.0`` is the ArcFace
        framing (whole face with a margin).
    min_face_size : int
        Smallest face MTCNN searches for, in detector-input pixels; larger values are faster.
    thresholds : tuple of float
        Score thresholds of the P-, R- and O-net stages.
    factor : float
        Scale step of the MTCNN image pyramid.
    pad_fraction : float
        Border added on every side before detection, as a fraction of the image side, by edge
        replication; 0 disables it. Tight face crops such as FER+ and FairFace need it: MTCNN
        misses many faces that fill or overflow the frame. It only helps the detector; the
        crop is warped from the unpadded image so that areas outside the photograph are black
        for every dataset alike.
    upscale_min_side : int
        Before detection, upscale (after padding) so the shorter side is at least this many
        pixels; 0 disables it. Small images such as 48x48 FER+ detect better upscaled; larger
        images are left alone.
    max_detector_side : int
        Downscale (after padding) so the longer side is at most this many pixels before
        detection; 0 disables it. Bounds the detector's time and memory on huge photographs;
        the crop is still warped from the full-resolution image. Faces smaller than
        ``min_face_size`` after downscaling are missed.
    fallback : {"whole_frame", "reject"}
        What to return for images without a detected face: the centred square of the whole
        frame (status ``"fallback"``) or None.
    device : str or torch.device
        Torch device for the detector networks.
    batch_size : int
        Maximum number of equally sized images per detector call.
    retry : RetrySettings or None
        Settings of a second detection pass over the images the first pass found no face in,
        before falling back; None disables it. On FairFace a pass with more padding and lower
        thresholds finds a face in two thirds of the first pass's misses, mostly profiles.
    """

    def __init__(
        self,
        *,
        image_size: int = 160,
        face_scale: float = 1.0,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        pad_fraction: float = 0.25,
        upscale_min_side: int = 160,
        max_detector_side: int = 1024,
        fallback: FallbackMode = "whole_frame",
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        retry: RetrySettings | None = None,
    ) -> None:
        if min_face_size < 12:
            raise ValueError(
                f"min_face_size must be at least 12 (MTCNN's cell), got {min_face_size}"
            )
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}; MTCNN uses 0.709")
        _check_detector_settings(pad_fraction, thresholds)
        if retry is not None:
            _check_detector_settings(retry.pad_fraction, retry.thresholds)
        if upscale_min_side < 0:
            raise ValueError(f"upscale_min_side must be >= 0, got {upscale_min_side!r}")
        if max_detector_side < 0:
            raise ValueError(f"max_detector_side must be >= 0, got {max_detector_side!r}")
        if fallback not in _FALLBACK_MODES:
            raise ValueError(f"fallback must be one of {_FALLBACK_MODES}, got {fallback!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.image_size = image_size
        self.template = canonical_template(image_size, face_scale)
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = factor
        self.pad_fraction = pad_fraction
        self.upscale_min_side = upscale_min_side
        self.max_detector_side = max_detector_side
        self.fallback = fallback
        self.batch_size = batch_size
        self.retry = retry
        self.device = torch.device(device)
        # Channels-last weights make the convolutions of all three networks take oneDNN's
        # fast path whatever the input layout: twice as fast on the CPU, with outputs equal
        # to the default layout's within 3e-6.
        self._pnet, self._rnet, self._onet = (
            network().to(self.device, memory_format=torch.channels_last).eval()
            for network in (PNet, RNet, ONet)
        )

    def align(self, images: Sequence[Image.Image]) -> list[AlignmentResult | None]:
        """Detect and align one face in each image.

        Images of identical size are detected together in batches of up to ``batch_size``
        (fewer when they are large, so that one detector call holds a bounded number of
        pixels).

        Parameters
        ----------
        images : sequence of PIL.Image.Image
            Images in any PIL mode and size.

        Returns
        -------
        list of AlignmentResult or None
            One entry per input image, in input order; None only for images without a face
            when ``fallback="reject"``.

        Raises
        ------
        TypeError
            If an element of ``images`` is not a PIL image.
        """
        for index, image in enumerate(images):
            if not isinstance(image, Image.Image):
                raise TypeError(
                    f"images[{index}] is a {type(image).__name__}, expected a PIL.Image.Image"
                )
        rgb = [to_rgb(image) for image in images]
        results = self._detection_pass(
            rgb, range(len(rgb)), self.pad_fraction, self.thresholds, detection_pass=1
        )
        missed = [index for index, result in enumerate(results) if result is None]
        if missed and self.retry is not None:
            retried = self._detection_pass(
                rgb, missed, self.retry.pad_fraction, self.retry.thresholds, detection_pass=2
            )
            for index, result in zip(missed, retried, strict=True):
                results[index] = result
        n_ok = sum(result is not None for result in results)
        logger.debug("detected a face in %d of %d image(s)", n_ok, len(results))
        if self.fallback == "reject":
            return results
        return [
            AlignmentResult(status="fallback", crop=centre_square_resize(image, self.image_size))
            if result is None
            else result
            for image, result in zip(rgb, results, strict=True)
        ]

    def _detection_pass(
        self,
        rgb: Sequence[Image.Image],
        indices: Sequence[int],
        pad_fraction: float,
        thresholds: tuple[float, ...],
        *,
        detection_pass: int,
    ) -> list[AlignmentResult | None]:
        """Detect in ``rgb[i]`` for each i of ``indices``; None where no face was found."""
        prepared = [self._prepare(rgb[index], pad_fraction) for index in indices]
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for position, item in enumerate(prepared):
            groups[item.detector_array.shape].append(position)

        results: list[AlignmentResult | None] = [None] * len(prepared)
        for shape, positions in groups.items():
            per_call = max(
                1, min(self.batch_size, _PIXELS_PER_DETECTOR_CALL // (shape[0] * shape[1]))
            )
            for start in range(0, len(positions), per_call):
                chunk = positions[start : start + per_call]
                detections = self._detect(
                    np.stack([prepared[p].detector_array for p in chunk]), thresholds
                )
                for position, (boxes, points) in zip(chunk, detections, strict=True):
                    results[position] = self._result(
                        prepared[position], boxes, points, detection_pass
                    )
            logger.debug(
                "pass %d: detected in %d image(s) of detector shape %s",
                detection_pass,
                len(positions),
                shape,
            )
        return results

    def _prepare(self, rgb: Image.Image, pad_fraction: float) -> _DetectorInput:
        width, height = rgb.size
        pad_x, pad_y = round(pad_fraction * width), round(pad_fraction * height)
        padded_size = (width + 2 * pad_x, height + 2 * pad_y)
        factor = 1.0
        if self.upscale_min_side and min(padded_size) < self.upscale_min_side:
            factor = self.upscale_min_side / min(padded_size)
        if self.max_detector_side and max(padded_size) * factor > self.max_detector_side:
            factor = self.max_detector_side / max(padded_size)
        if factor < 1.0:
            # Shrink before padding: a padded copy of a huge photograph would cost more memory
            # than the photograph. The pad is then expressed in source pixels (fractional).
            small = rgb.resize(_scaled(rgb.size, factor), Image.Resampling.BILINEAR)
            scale = (small.width / width, small.height / height)
            small_pad = (round(pad_fraction * small.width), round(pad_fraction * small.height))
            detector_image = _pad_edges(small, *small_pad)
            pad = (small_pad[0] / scale[0], small_pad[1] / scale[1])
        else:
            padded = _pad_edges(rgb, pad_x, pad_y)
            detector_image = padded
            if factor > 1.0:
                detector_image = padded.resize(
                    _scaled(padded.size, factor), Image.Resampling.BILINEAR
                )
            scale = (detector_image.width / padded.width, detector_image.height / padded.height)
            pad = (float(pad_x), float(pad_y))
        return _DetectorInput(
            rgb=rgb, pad=pad, detector_array=np.asarray(detector_image), scale=scale
        )

    def _detect(
        self, batch: np.ndarray, thresholds: tuple[float, ...]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Run MTCNN on a uint8 ``(n, h, w, 3)`` batch; return per-image boxes and points."""
        n_images = batch.shape[0]
        # With no pyramid level at least 12 pixels there is nothing to search.
        if min(batch.shape[1:3]) < self.min_face_size:
            return [(np.zeros((0, 5)), np.zeros((0, 5, 2)))] * n_images
        return detect_faces(
            batch,
            (self._pnet, self._rnet, self._onet),
            min_face_size=self.min_face_size,
            thresholds=thresholds,
            factor=self.factor,
        )

    def _result(
        self, item: _DetectorInput, boxes: np.ndarray, points: np.ndarray, detection_pass: int
    ) -> AlignmentResult | None:
        scale = np.asarray(item.scale)
        # Undo the upscaling in continuous coordinates (pixel centres at +0.5) so the mapping
        # is exact; the result is in padded-image pixel indices.
        boxes_xy = (boxes[:, :4].reshape(-1, 2, 2) + 0.5) / scale - 0.5
        points_xy = (points + 0.5) / scale - 0.5
        pad = np.asarray(item.pad, dtype=np.float64)
        centres = boxes_xy.mean(axis=1) - pad
        width, height = item.rgb.size
        # A detection centred in the padding belongs to no face of the photograph itself.
        inside = (
            (centres[:, 0] >= 0)
            & (centres[:, 0] <= width - 1)
            & (centres[:, 1] >= 0)
            & (centres[:, 1] <= height - 1)
        )
        if not inside.any():
            return None
        candidates = np.flatnonzero(inside)
        extents = boxes_xy[candidates, 1] - boxes_xy[candidates, 0]
        best = candidates[np.argmax(extents[:, 0] * extents[:, 1])]
        landmarks = points_xy[best] - pad
        crop = warp_to_template(
            item.rgb, landmarks, image_size=self.image_size, template=self.template
        )
        return AlignmentResult(
            status="ok",
            crop=crop,
            box=(boxes_xy[best] - pad).reshape(4),
            landmarks=landmarks,
            probability=float(boxes[best, 4]),
            detection_pass=detection_pass,
        )


def _scaled(size: tuple[int, int], factor: float) -> tuple[int, int]:
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def _pad_edges(image: Image.Image, pad_x: int, pad_y: int) -> Image.Image:
    """``image`` with borders of ``pad_x`` and ``pad_y`` pixels that replicate its edges."""
    if not (pad_x or pad_y):
        return image
    array = np.pad(np.asarray(image), ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="edge")
    return Image.fromarray(array)


def _check_detector_settings(pad_fraction: float, thresholds: Sequence[float]) -> None:
    if not 0.0 <= pad_fraction <= 1.0:
        raise ValueError(f"pad_fraction must be in [0, 1], got {pad_fraction!r}")
    if len(thresholds) != 3 or not all(0.0 <= t <= 1.0 for t in thresholds):
        raise ValueError(f"thresholds must be three probabilities, got {thresholds!r}")
