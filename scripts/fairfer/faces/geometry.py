"""Geometry of 5-point face alignment: the canonical template and the similarity warp.

Coordinates follow the pixel-index convention used by MTCNN and OpenCV: the centre of the
top-left pixel is ``(0, 0)``. :mod:`fairfer.faces.alignment` detects the landmarks and uses
these functions to warp each face onto the template.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from fairfer.images import to_rgb

#: ArcFace 5-point template for a 112x112 crop: left eye, right eye, nose tip, left and right
#: mouth corners, as (x, y) in pixels ("left" is the image left, i.e. the subject's right).
ARCFACE_TEMPLATE_112: np.ndarray = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
_ARCFACE_SIZE = 112


def canonical_template(image_size: int = 160, face_scale: float = 1.0) -> np.ndarray:
    """Return the 5-point landmark template for a square aligned crop.

    The ArcFace 112x112 template is scaled to ``image_size`` and then shrunk (or grown) about
    the crop centre by ``face_scale``. At ``1.0`` the whole face down to the chin fits with a
    margin; it is already looser than FaceNet's MTCNN crops (margin 32 at 160), which match
    ``face_scale`` of about 1.15 on FairFace and FER+ but cut off the chin.

    Parameters
    ----------
    image_size : int
        Side of the square crop in pixels.
    face_scale : float
        Size of the face relative to the ArcFace crop; ``1.0`` reproduces the ArcFace framing,
        smaller values leave more background around the face.

    Returns
    -------
    numpy.ndarray
        Array of shape ``(5, 2)`` with (x, y) pixel coordinates of left eye, right eye, nose,
        left mouth corner and right mouth corner.

    Raises
    ------
    ValueError
        If ``image_size`` is not a positive integer or ``face_scale`` is outside ``(0, 2]``.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if not 0.0 < face_scale <= 2.0:
        raise ValueError(
            f"face_scale must be in (0, 2], got {face_scale!r}; 1.0 is the ArcFace framing"
        )
    # Scale in continuous coordinates (pixel centres at +0.5) so that the template stays
    # centred exactly as in the 112-pixel original whatever the output size.
    scaled = (ARCFACE_TEMPLATE_112 + 0.5) * (image_size / _ARCFACE_SIZE) - 0.5
    centre = (image_size - 1) / 2.0
    return centre + face_scale * (scaled - centre)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Estimate the least-squares similarity transform mapping ``source`` onto ``target``.

    Uses Umeyama's closed-form solution restricted to proper rotations (no reflection), a
    uniform scale and a translation.

    Parameters
    ----------
    source, target : numpy.ndarray
        Corresponding points, each of shape ``(n, 2)`` with ``n >= 2``.

    Returns
    -------
    numpy.ndarray
        Matrix ``M`` of shape ``(2, 3)`` such that ``target ~= source @ M[:, :2].T + M[:, 2]``.

    Raises
    ------
    ValueError
        If the arrays are not matching ``(n, 2)`` arrays of finite values with ``n >= 2``, or if
        all source points coincide (the scale is then undefined).
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(
            "source and target must both have shape (n, 2) with n >= 2, got "
            f"{src.shape} and {dst.shape}"
        )
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("source and target points must be finite (no NaN or inf)")
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var <= np.finfo(np.float64).eps:
        raise ValueError("all source points coincide; a similarity transform is undefined")
    covariance = dst_c.T @ src_c / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    # Flipping the last axis when det(U)det(V) < 0 forces a proper rotation; this also covers
    # collinear points, where the covariance is rank deficient.
    signs = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = float((singular * signs).sum() / src_var)
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def warp_to_template(
    image: Image.Image, landmarks: np.ndarray, *, image_size: int, template: np.ndarray
) -> Image.Image:
    """Warp ``image`` so that its ``landmarks`` land on ``template`` in a square crop.

    Parameters
    ----------
    image : PIL.Image.Image
        Source image; converted to RGB if needed.
    landmarks : numpy.ndarray
        Landmarks in ``image`` pixel coordinates, shape ``(5, 2)`` (or any ``(n, 2)`` matching
        ``template``).
    image_size : int
        Side of the output crop in pixels.
    template : numpy.ndarray
        Target landmark positions in the output crop, e.g. from :func:`canonical_template`.

    Returns
    -------
    PIL.Image.Image
        RGB crop of ``image_size`` x ``image_size`` pixels; areas outside the source are black.

    Raises
    ------
    ValueError
        If the landmarks or template are malformed (see :func:`similarity_transform`).
    """
    forward = similarity_transform(landmarks, template)
    linear_inv = np.linalg.inv(forward[:, :2])
    offset_inv = -linear_inv @ forward[:, 2]
    # PIL samples at continuous coordinates where pixel centres sit at +0.5, whereas landmarks
    # and template use pixel-index coordinates; shifting by half a pixel on both sides keeps the
    # warp exact to sub-pixel precision.
    half = np.array([0.5, 0.5])
    offset_pil = offset_inv + half - linear_inv @ half
    coefficients = (
        linear_inv[0, 0],
        linear_inv[0, 1],
        offset_pil[0],
        linear_inv[1, 0],
        linear_inv[1, 1],
        offset_pil[1],
    )
    return to_rgb(image).transform(
        (image_size, image_size),
        Image.Transform.AFFINE,
        tuple(float(c) for c in coefficients),
        resample=Image.Resampling.BILINEAR,
    )


def centre_square_resize(image: Image.Image, image_size: int) -> Image.Image:
    """Crop the largest centred square from ``image`` and resize it to ``image_size``.

    Parameters
    ----------
    image : PIL.Image.Image
        Source image in any mode.
    image_size : int
        Side of the output in pixels.

    Returns
    -------
    PIL.Image.Image
        RGB image of ``image_size`` x ``image_size`` pixels.
    """
    rgb = to_rgb(image)
    width, height = rgb.size
    side = min(width, height)
    left = (width - side) // 2
    top = (height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    return square.resize((image_size, image_size), Image.Resampling.BILINEAR)
