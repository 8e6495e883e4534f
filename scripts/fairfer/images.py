"""Decoding stored image bytes (with a reason for every image that cannot be used) and
converting any pixel format to 8-bit RGB or grayscale.

Ingest checks every image once with :func:`decode_image`, so that downstream rules can count
on decodable images; alignment calls it again (its input may come from elsewhere) and records
the same reasons.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# 16-bit integer modes hold 0..65535; dividing by 257 maps that range exactly onto 0..255.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})

#: Reason codes of unusable images, as recorded in reject tables.
UNDECODABLE = "undecodable_image"
TOO_LARGE = "image_too_large"


class UnusableImageError(ValueError):
    """Image bytes that cannot be decoded, or that decode to more pixels than Pillow allows.

    Attributes
    ----------
    reason : str
        :data:`UNDECODABLE` or :data:`TOO_LARGE`.
    detail : str
        Pillow's message.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason.replace('_', ' ')}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes fully, so a truncated file fails here and not later.

    Parameters
    ----------
    data : bytes
        The file's content (PNG, JPEG, ... anything Pillow reads).

    Returns
    -------
    PIL.Image.Image
        The loaded image, in its stored mode (``L``, ``RGB``, ``RGBA``, ``I;16`` ...).

    Raises
    ------
    UnusableImageError
        With reason :data:`UNDECODABLE` for empty, truncated, corrupt or non-image bytes, and
        :data:`TOO_LARGE` for images above Pillow's decompression-bomb limit
        (``Image.MAX_IMAGE_PIXELS`` x 2, about 179 megapixels by default).
    """
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError as error:
        raise UnusableImageError(TOO_LARGE, str(error)) from error
    except UnidentifiedImageError as error:
        # Pillow's own message names the in-memory buffer's address, which varies per run.
        raise UnusableImageError(UNDECODABLE, "not in an image format Pillow reads") from error
    except (OSError, ValueError, SyntaxError) as error:
        # Pillow raises SyntaxError for some malformed headers (e.g. a broken PNG chunk).
        raise UnusableImageError(UNDECODABLE, str(error) or type(error).__name__) from error
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit RGB.

    16-bit and 32-bit integer images are rescaled to 0..255 rather than clipped (PIL's own
    conversion would turn most 16-bit pixels white); float images are assumed to be in 0..1
    when their maximum is at most 1, else in 0..255. Alpha is dropped.

    Parameters
    ----------
    image : PIL.Image.Image
        Image in any PIL mode (``L``, ``RGB``, ``RGBA``, ``P``, ``I;16``, ``I``, ``F`` ...).

    Returns
    -------
    PIL.Image.Image
        The image in mode ``RGB`` (the same object when it already is RGB).

    Raises
    ------
    TypeError
        If ``image`` is not a PIL image.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image.Image, got {type(image).__name__}")
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode in _SIXTEEN_BIT_MODES or (image.mode == "I" and values.max(initial=0) > 255):
            values = values / 257.0
        elif image.mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return image.convert("RGB")


def to_grayscale(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit grayscale (``L``), rescaling as :func:`to_rgb`.

    Pillow's own ``convert("L")`` clips 16-bit pixels, turning most of an image white.
    """
    return image if image.mode == "L" else to_rgb(image).convert("L")


def check_image_bytes(data: bytes) -> tuple[bytes | None, tuple[str, str] | None]:
    """``data`` if it decodes to a usable image, else None and (reason, detail)."""
    try:
        decode_image(data)
    except UnusableImageError as error:
        return None, (error.reason, error.detail)
    return data, None


def read_image_file(path: Path) -> tuple[bytes | None, tuple[str, str] | None]:
    """A file's bytes if they decode to a usable image, else None and (reason, detail).

    Reasons are ``missing_file``, ``unreadable_file`` and those of :func:`decode_image`.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, ("missing_file", "no such file")
    except OSError as error:
        return None, ("unreadable_file", error.strerror or type(error).__name__)
    return check_image_bytes(data)
