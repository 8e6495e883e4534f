"""FairFace (Kärkkäinen & Joo, WACV 2021) in its official layout.

The image archive (``fairface-img-margin025-trainval.zip`` or the margin 1.25 variant) holds
``train/<n>.jpg`` and ``val/<n>.jpg``; ``fairface_label_{train,val}.csv`` have the columns
``file, age, gender, race, service_test``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fairfer.datasets.splits import sample_splits
from fairfer.schemas import ATTRIBUTE_CLASSES

logger = logging.getLogger(__name__)

#: FairFace's own split names and the split vocabulary used downstream.
SPLITS: dict[str, str] = {"train": "train", "val": "valid"}
LABEL_COLUMNS = ("file", "age", "gender", "race")


def read_labels(path: Path, *, split: str) -> pd.DataFrame:
    """Read one official label CSV and check its vocabulary against FairFace's classes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"FairFace label file {path} is missing. Set config key datasets.fairface."
            f"labels.{split} to the official fairface_label_{split}.csv."
        )
    frame = pd.read_csv(path, dtype=str)
    missing = [column for column in LABEL_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; is it an official FairFace label file?")
    for attribute, classes in ATTRIBUTE_CLASSES.items():
        unknown = sorted(set(frame[attribute].dropna()) - set(classes))
        if unknown:
            raise ValueError(f"{path}: unexpected {attribute} values {unknown}")
    frame["split"] = SPLITS[split]
    return frame


def build_manifest(
    image_root: Path,
    label_paths: dict[str, Path],
    *,
    sample_per_split: dict[str, int] | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Manifest rows (without image bytes) for the labelled FairFace images under ``image_root``.

    Labelled files absent from the archive are counted in the report and kept, for
    :func:`fairfer.schemas.publish_manifest` to reject as ``missing_file``.
    """
    frames = [read_labels(path, split=split) for split, path in label_paths.items()]
    manifest = pd.concat(frames, ignore_index=True)
    manifest = sample_splits(manifest, sample_per_split, seed=seed)
    present = manifest["file"].map(lambda name: (Path(image_root) / name).is_file())
    report = {"labelled_images_missing_from_archive": int((~present).sum())}
    if report["labelled_images_missing_from_archive"]:
        # Kept: publish_manifest rejects them (reason missing_file), so rows_in counts them.
        logger.warning(
            "%d labelled FairFace images are not in the archive (rejected as missing_file)",
            report["labelled_images_missing_from_archive"],
        )
    manifest["source_path"] = manifest["file"]
    manifest["image_id"] = manifest["file"].str.rsplit(".", n=1).str[0]
    manifest["dataset"] = "fairface"
    manifest["emotion"] = None
    manifest["label_status"] = "ok"
    manifest["emotion_votes"] = None
    manifest["subject_id"] = None
    return manifest.drop(
        columns=[c for c in manifest.columns if c in ("file", "service_test")]
    ), report
