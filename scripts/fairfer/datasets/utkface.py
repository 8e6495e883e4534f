"""UTKFace (Zhang, Song & Qi, CVPR 2017): demographic labels encoded in the file names.

Files are named ``[age]_[gender]_[race]_[date&time].jpg`` (``.jpg.chip.jpg`` in the aligned and
cropped release): age is an integer (0-116), gender 0 male / 1 female, race 0 White, 1 Black,
2 Asian, 3 Indian, 4 Others (Hispanic, Latino, Middle Eastern, ...). A few released files lack a
field; they are counted and skipped. UTKFace has no emotion labels and no official split: the
split is drawn per image with a seed.

Ages are stored as FairFace's nine bins (:func:`fairface_age_bin`); races keep UTKFace's
vocabulary, and :data:`RACE_TO_FAIRFACE` says which FairFace classes each one corresponds to.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from fairfer.datasets.splits import DEFAULT_FRACTIONS, assign_splits, sample_splits
from fairfer.schemas import FAIRFACE_AGES, MANIFEST_COLUMNS

logger = logging.getLogger(__name__)

FILE_NAME = re.compile(
    r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?P<race>[0-4])_(?P<stamp>\d+)(?P<suffix>\.jpg(\.chip\.jpg)?)$",
    re.IGNORECASE,
)
GENDERS: dict[str, str] = {"0": "Male", "1": "Female"}
RACES: dict[str, str] = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}
#: FairFace race classes each UTKFace race corresponds to; every FairFace class belongs to
#: exactly one. "Asian" covers both of FairFace's Asian classes (UTKFace does not separate
#: them). "Others" is documented as "like Hispanic, Latino, Middle Eastern", so FairFace's
#: Latino_Hispanic and Middle Eastern map there; it also holds faces of other groups that have
#: no FairFace class, so agreement on "Others" is the loosest of the five.
RACE_TO_FAIRFACE: dict[str, tuple[str, ...]] = {
    "White": ("White",),
    "Black": ("Black",),
    "Asian": ("East Asian", "Southeast Asian"),
    "Indian": ("Indian",),
    "Others": ("Latino_Hispanic", "Middle Eastern"),
}
#: Lowest age of each FairFace bin, in :data:`FAIRFACE_AGES` order.
FAIRFACE_AGE_STARTS: tuple[int, ...] = (0, 3, 10, 20, 30, 40, 50, 60, 70)


def fairface_age_bin(age: int) -> str:
    """FairFace age bin (``"0-2"`` ... ``"more than 70"``) of an age in years.

    FairFace's top bin is read as 70 and over, since its ``60-69`` bin ends at 69.
    """
    if age < 0:
        raise ValueError(f"age must be non-negative, got {age}")
    index = sum(age >= start for start in FAIRFACE_AGE_STARTS) - 1
    return FAIRFACE_AGES[index]


def parse_file_name(name: str) -> dict[str, str | int] | None:
    """Labels encoded in a UTKFace file name, or ``None`` when the name lacks a field."""
    match = FILE_NAME.match(name)
    if match is None:
        return None
    return {
        "image_id": name[: -len(match["suffix"])],
        "age_years": int(match["age"]),
        "gender": GENDERS[match["gender"]],
        "race": RACES[match["race"]],
    }


def build_manifest(
    root: str | Path,
    *,
    image_glob: str = "**/*.jpg",
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    sample_per_split: Mapping[str, int] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Manifest rows (without image bytes) for the UTKFace images under ``root``.

    Parameters
    ----------
    root
        Folder of the release (e.g. the extracted ``UTKFace/`` or ``part1/`` ... ``part3/``).
    image_glob
        Pattern of the image files under ``root``.
    fractions, seed
        Shares of images per split (train, valid, test) and the seed of the draw.
    sample_per_split
        Seeded subset size of each split named, for quick runs.

    Returns
    -------
    manifest, report
        One row per well-named image with the adapters' manifest columns (``emotion`` null,
        ``label_status`` ``"ok"`` as for FairFace, ``subject_id`` null), and counts:
        ``images`` and ``malformed_file_names`` (skipped).
    """
    root = Path(root)
    files = sorted(root.glob(image_glob))
    if not files:
        raise FileNotFoundError(
            f"UTKFace: no image under {root} matches {image_glob!r}. Point config key "
            "datasets.utkface.path at the extracted UTKFace folder holding files named "
            "[age]_[gender]_[race]_[date&time].jpg(.chip.jpg)."
        )
    rows, malformed = [], []
    for path in files:
        labels = parse_file_name(path.name)
        if labels is None:
            malformed.append(path.name)
            continue
        relative = path.relative_to(root).as_posix()
        # Keep the sub-folder in the id: the in-the-wild parts can repeat a file name.
        labels["image_id"] = (Path(relative).parent / str(labels["image_id"])).as_posix()
        rows.append({**labels, "source_path": relative})
    report = {"malformed_file_names": len(malformed)}
    if malformed:
        logger.warning(
            "skipped %d UTKFace files whose names lack a field, e.g. %s",
            len(malformed),
            malformed[:3],
        )
    if not rows:
        raise ValueError(
            f"UTKFace: none of the {len(files)} files under {root} is named "
            "[age]_[gender]_[race]_[date&time].jpg"
        )
    manifest = pd.DataFrame(rows)
    manifest["age"] = manifest["age_years"].map(fairface_age_bin)
    manifest["split"] = assign_splits(list(manifest["image_id"]), fractions=fractions, seed=seed)
    manifest["dataset"] = "utkface"
    manifest["emotion"] = None
    manifest["label_status"] = "ok"
    manifest["emotion_votes"] = None
    manifest["subject_id"] = None
    manifest = sample_splits(manifest, sample_per_split, seed=seed)
    report["images"] = len(manifest)
    return manifest[list(MANIFEST_COLUMNS)], report
