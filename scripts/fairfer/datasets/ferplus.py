"""FER+ (Barsoum et al. 2016) in the layout produced by Microsoft's ``generate_training_data.py``.

``FER2013{Train,Valid,Test}/label.csv`` (no header: image, face box, ten vote counts) sit next to
the PNGs, and ``fer2013new.csv`` is the official label file. Labels follow the FERPlus
reference code's "majority" mode: votes of a single annotator are discarded as outliers, the
top emotion must hold more than half of the remaining votes, and images whose majority is
"unknown" or "not a face" are excluded.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fairfer.datasets.splits import sample_splits
from fairfer.schemas import EMOTIONS, FERPLUS_VOTE_COLUMNS

logger = logging.getLogger(__name__)

#: Folder of each split in the generated layout, and the split name used downstream.
SPLIT_FOLDERS: dict[str, str] = {
    "train": "FER2013Train",
    "valid": "FER2013Valid",
    "test": "FER2013Test",
}
#: ``Usage`` values of ``fer2013new.csv`` for each split.
USAGE_SPLITS: dict[str, str] = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}


def majority_label(votes: Sequence[int]) -> tuple[str | None, str]:
    """Majority-vote emotion of one image by the FERPlus reference rules.

    Parameters
    ----------
    votes
        The ten vote counts in :data:`FERPLUS_VOTE_COLUMNS` order.

    Returns
    -------
    emotion, status
        The emotion name and ``"ok"``, or ``None`` and why the image has no label:
        ``"no_majority"``, ``"majority_unknown"`` or ``"majority_not_face"``.
    """
    if len(votes) != len(FERPLUS_VOTE_COLUMNS):
        raise ValueError(f"expected {len(FERPLUS_VOTE_COLUMNS)} vote counts, got {len(votes)}")
    # A single vote is treated as annotator noise, as in FERPlus' _process_data.
    kept = np.where(np.asarray(votes, dtype=float) > 1.0, np.asarray(votes, dtype=float), 0.0)
    total = kept.sum()
    top = int(np.argmax(kept))
    if total == 0 or kept[top] <= 0.5 * total:
        return None, "no_majority"
    if FERPLUS_VOTE_COLUMNS[top] == "unknown":
        return None, "majority_unknown"
    if FERPLUS_VOTE_COLUMNS[top] == "not_face":
        return None, "majority_not_face"
    return EMOTIONS[top], "ok"


def vote_distribution(votes: Sequence[int]) -> np.ndarray:
    """Probability label over the eight emotions (votes normalised, unknown/NF dropped)."""
    emotion_votes = np.asarray(votes[: len(EMOTIONS)], dtype=np.float64)
    total = emotion_votes.sum()
    return emotion_votes / total if total > 0 else np.full(len(EMOTIONS), np.nan)


def read_label_csv(path: Path) -> pd.DataFrame:
    """Read one split's headerless ``label.csv`` into image name and vote columns."""
    rows = []
    with open(path, newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle), start=1):
            if len(row) != 2 + len(FERPLUS_VOTE_COLUMNS):
                raise ValueError(
                    f"{path}:{line_number}: expected 12 columns (image, face box, 10 votes), "
                    f"found {len(row)}; is this a FER+ label.csv?"
                )
            rows.append([row[0], *map(int, row[2:])])
    return pd.DataFrame(rows, columns=["image_name", *FERPLUS_VOTE_COLUMNS])


def read_official_labels(path: Path) -> pd.DataFrame:
    """Read ``fer2013new.csv``; rows without an image name (not in FER+) are dropped."""
    frame = pd.read_csv(path)
    expected = {"Usage", "Image name"}
    if not expected <= set(frame.columns):
        raise ValueError(f"{path} lacks columns {sorted(expected - set(frame.columns))}")
    frame = frame.rename(columns={"Image name": "image_name", "NF": "not_face"})
    frame = frame.dropna(subset=["image_name"])
    # A few names occur twice; generate_training_data.py wrote the PNG of the later row last,
    # so that row describes the image on disk.
    frame = frame.drop_duplicates(subset=["image_name"], keep="last")
    frame["split"] = frame["Usage"].map(USAGE_SPLITS)
    return frame[["image_name", "split", *FERPLUS_VOTE_COLUMNS]]


def build_manifest(
    root: Path,
    *,
    sample_per_split: dict[str, int] | None = None,
    seed: int = 0,
    vote_source: str = "official",
    labels_path: Path | None = None,
) -> tuple[pd.DataFrame, dict[str, int | str]]:
    """Manifest rows (without image bytes) for every FER+ image found under ``root``.

    Images are those listed in the split folders' ``label.csv``. Their votes come from
    ``fer2013new.csv`` (``vote_source="official"``, the published labels, which can be newer
    than a generated layout) or from the folders' own ``label.csv`` (``"folder"``); the two are
    compared either way. ``labels_path`` is ``fer2013new.csv`` when it is not in ``root``.
    ``sample_per_split`` keeps a seeded random subset of each split (for quick runs); the
    returned counts say how many official rows had no PNG or disagreed.
    """
    if vote_source not in ("official", "folder"):
        raise ValueError(f"vote_source must be 'official' or 'folder', got {vote_source!r}")
    root = Path(root)
    official_path = Path(labels_path) if labels_path is not None else root / "fer2013new.csv"
    for required in [official_path, *(root / folder for folder in SPLIT_FOLDERS.values())]:
        if not required.exists():
            raise FileNotFoundError(
                f"FER+ input {required} is missing. Point config key datasets.ferplus.path at a "
                "directory in the layout of Microsoft's FERPlus generate_training_data.py "
                "(FER2013Train/, FER2013Valid/, FER2013Test/ with label.csv, and fer2013new.csv)."
            )
    frames = []
    for split, folder in SPLIT_FOLDERS.items():
        labels = read_label_csv(root / folder / "label.csv")
        labels["split"] = split
        labels["source_path"] = folder + "/" + labels["image_name"]
        frames.append(labels)
    manifest = pd.concat(frames, ignore_index=True)

    official = read_official_labels(official_path)
    joined = manifest.merge(
        official,
        on=["image_name", "split"],
        how="outer",
        indicator=True,
        suffixes=("", "_official"),
    )
    both = joined["_merge"] == "both"
    disagreeing = both & np.any(
        [joined[c] != joined[f"{c}_official"] for c in FERPLUS_VOTE_COLUMNS], axis=0
    )
    report = {
        "official_rows_without_png": int((joined["_merge"] == "right_only").sum()),
        "png_rows_not_in_official_labels": int((joined["_merge"] == "left_only").sum()),
        "rows_with_disagreeing_votes": int(disagreeing.sum()),
    }
    if report["rows_with_disagreeing_votes"]:
        logger.warning(
            "%d images have votes that differ from fer2013new.csv",
            report["rows_with_disagreeing_votes"],
        )

    if vote_source == "official":
        manifest = joined.loc[joined["_merge"] != "right_only"].reset_index(drop=True)
        has_official = manifest["_merge"] == "both"
        for column in FERPLUS_VOTE_COLUMNS:
            manifest.loc[has_official, column] = manifest.loc[has_official, f"{column}_official"]
            manifest[column] = manifest[column].astype(int)
        manifest = manifest[["image_name", "split", "source_path", *FERPLUS_VOTE_COLUMNS]]
    report["vote_source"] = vote_source

    manifest = sample_splits(manifest, sample_per_split, seed=seed)

    return label_by_votes(manifest).drop(columns=["image_name", *FERPLUS_VOTE_COLUMNS]), report


def label_by_votes(manifest: pd.DataFrame) -> pd.DataFrame:
    """Add the manifest's label columns to rows holding ``image_name`` and the ten vote counts.

    Majority label and its status, the votes as one list, the id (the PNG name without
    extension), and FER+'s absent demographics. Shared by both FER+ input layouts.
    """
    manifest = manifest.copy()
    votes = manifest[list(FERPLUS_VOTE_COLUMNS)].to_numpy()
    labels = [majority_label(row) for row in votes]
    manifest["emotion"] = [emotion for emotion, _ in labels]
    manifest["label_status"] = [status for _, status in labels]
    manifest["emotion_votes"] = list(votes.astype(np.uint8))
    manifest["image_id"] = manifest["image_name"].str.removesuffix(".png")
    manifest["dataset"] = "ferplus"
    for column in ("race", "gender", "age", "subject_id"):
        manifest[column] = None
    return manifest
