"""FER+ built straight from the original inputs: ``fer2013.csv`` and ``fer2013new.csv``.

``fer2013.csv`` (ICML 2013 challenge) has the columns ``emotion, pixels, Usage``: ``pixels`` is
48x48 = 2304 space-separated grayscale values, ``Usage`` is Training, PublicTest or PrivateTest.
``fer2013new.csv`` (FERPlus) has the crowd votes, one row per ``fer2013.csv`` row in the same
order; a row without ``Image name`` is not a face and is not part of FER+. Rows are matched by
position, as FERPlus' ``generate_training_data.py`` does: the image names are not the row
numbers (after the first nameless row, row 60 is ``fer0000059.png``).

The manifest equals :func:`fairfer.datasets.ferplus.build_manifest`'s (same image ids
``fer0000000``,
splits and majority labels) without needing Microsoft's ``generate_training_data.py``: images are
encoded as PNG in memory and returned in an ``image`` column, and ``source_path`` is
``fer2013.csv#<row>`` (0-based data row, header excluded) since there are no files.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fairfer.datasets.ferplus import USAGE_SPLITS, label_by_votes, read_official_labels
from fairfer.datasets.splits import sample_splits
from fairfer.schemas import MANIFEST_COLUMNS

logger = logging.getLogger(__name__)

IMAGE_SIDE = 48
PIXELS_FILE = "fer2013.csv"
LABELS_FILE = "fer2013new.csv"


def pixels_to_png(pixels: str, *, where: str = "pixels") -> bytes:
    """PNG bytes of one ``fer2013.csv`` ``pixels`` string (48x48 grayscale, row-major).

    Parameters
    ----------
    pixels
        2304 space-separated integers in 0-255.
    where
        Location named in the error message (e.g. ``"fer2013.csv, row 12"``).

    Returns
    -------
    bytes
        A lossless 8-bit grayscale PNG.
    """
    try:
        values = np.array(pixels.split(), dtype=np.int64)
    except ValueError:
        raise ValueError(f"{where}: pixels must be space-separated integers") from None
    if values.size != IMAGE_SIDE * IMAGE_SIDE or values.min() < 0 or values.max() > 255:
        raise ValueError(
            f"{where}: expected {IMAGE_SIDE * IMAGE_SIDE} values in 0-255, found {values.size}"
            + (f" in {values.min()}-{values.max()}" if values.size else "")
        )
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE), mode="L").save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"FER2013 {what} {path} is missing. Point config key datasets.ferplus.path at a "
            f"directory holding {PIXELS_FILE} (the ICML 2013 challenge file with columns emotion, "
            f"pixels, Usage) and {LABELS_FILE} (from the FERPlus repository; or set "
            f"datasets.ferplus.votes_csv to where {LABELS_FILE} is)."
        )
    return path


def build_manifest(
    root: str | Path,
    *,
    sample_per_split: Mapping[str, int] | None = None,
    seed: int = 0,
    labels_path: str | Path | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Manifest rows, with PNG image bytes, for the FER+ faces of ``fer2013.csv``.

    Parameters
    ----------
    root
        Directory holding ``fer2013.csv`` and (unless ``labels_path`` says otherwise)
        ``fer2013new.csv``.
    sample_per_split, seed
        Seeded subset size of each split named, for quick runs (drawn before encoding).
    labels_path
        ``fer2013new.csv`` when it is not in ``root`` (e.g. next to a Kaggle copy of
        ``fer2013.csv``).

    Returns
    -------
    manifest, report
        The adapters' manifest columns plus ``image``. Votes, splits (from ``fer2013new.csv``'s
        ``Usage``) and labels follow :mod:`fairfer.datasets.ferplus`. The report counts ``images``,
        ``rows_without_face`` (no image name), ``duplicate_image_names`` (earlier rows of a
        repeated name, dropped as in :func:`fairfer.datasets.ferplus.read_official_labels`),
        and ``usage_disagreements`` (the two files' ``Usage`` differ; fer2013new.csv wins).
    """
    root = Path(root)
    pixels_path = _require(root / PIXELS_FILE, "pixel file")
    labels_path = _require(
        Path(labels_path) if labels_path is not None else root / LABELS_FILE, "label file"
    )
    pixels = pd.read_csv(pixels_path, dtype=str, keep_default_na=False)
    missing = sorted({"pixels", "Usage"} - set(pixels.columns))
    if missing:
        raise ValueError(f"{pixels_path} lacks columns {missing}; is it the FER2013 challenge CSV?")
    named = pd.read_csv(labels_path, usecols=["Image name"])["Image name"].notna()
    if len(named) != len(pixels):
        raise ValueError(
            f"{labels_path} has {len(named)} rows but {pixels_path} has {len(pixels)}; the files "
            "must be the unmodified releases, whose rows correspond one to one"
        )
    # read_official_labels keeps the CSV's row index, which is the fer2013.csv row.
    labels = read_official_labels(labels_path)
    usage = pixels.loc[labels.index, "Usage"].str.strip().map(USAGE_SPLITS)
    report = {
        "rows_without_face": int((~named).sum()),
        "duplicate_image_names": int(named.sum()) - len(labels),
        "usage_disagreements": int((usage != labels["split"]).sum()),
    }
    if report["usage_disagreements"]:
        logger.warning(
            "%d rows have a different Usage in %s and %s; %s's is used",
            report["usage_disagreements"],
            PIXELS_FILE,
            LABELS_FILE,
            LABELS_FILE,
        )

    manifest = labels.rename_axis("row").reset_index()
    manifest = sample_splits(manifest, sample_per_split, seed=seed)
    manifest = label_by_votes(manifest)
    manifest["source_path"] = [f"{PIXELS_FILE}#{row}" for row in manifest["row"]]
    manifest["image"] = [
        pixels_to_png(pixels.at[row, "pixels"], where=f"{pixels_path}, data row {row}")
        for row in manifest["row"]
    ]
    report["images"] = len(manifest)
    return manifest[[*MANIFEST_COLUMNS, "image"]], report
