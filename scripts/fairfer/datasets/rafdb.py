"""RAF-DB basic-expression subset (Li, Deng & Du, CVPR 2017) in its official or Kaggle layout.

Official layout, as described by the dataset's README::

    EmoLabel/list_patition_label.txt              "train_00001.jpg 5" per line (sic "patition")
    Image/aligned/train_00001_aligned.jpg         faces aligned and resized to 100x100
    Image/original/train_00001.jpg                the uncropped images
    Annotation/manual/train_00001_manu_attri.txt  optional attribute files

An attribute file holds five landmark lines ``x y`` (eye centres, nose tip, mouth corners), then
one line each for gender (0 male, 1 female, 2 unsure), race (0 Caucasian, 1 African-American,
2 Asian) and age group (0: 0-3, 1: 4-19, 2: 20-39, 3: 40-69, 4: 70+).

Kaggle layout (a common re-packaging): ``train_labels.csv`` and ``test_labels.csv`` with columns
``image,label``, images under ``DATASET/{train,test}/<label>/<image>``.

Labels 1-7 are Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral in both layouts.
Demographics keep RAF-DB's vocabulary; :data:`RACE_TO_FAIRFACE`, :data:`GENDER_TO_FAIRFACE` and
:func:`coarse_age` relate them to FairFace's. RAF-DB has no validation split:
:func:`fairfer.datasets.splits.split_validation` carves one out of train.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import pandas as pd

from fairfer.datasets.splits import sample_splits
from fairfer.schemas import MANIFEST_COLUMNS

logger = logging.getLogger(__name__)

#: The official label file's name, and the corrected spelling some copies use.
OFFICIAL_LABEL_FILES: tuple[str, ...] = (
    "EmoLabel/list_patition_label.txt",
    "EmoLabel/list_partition_label.txt",
)
KAGGLE_LABEL_FILES: dict[str, str] = {"train": "train_labels.csv", "test": "test_labels.csv"}
ATTRIBUTE_FOLDER = "Annotation/manual"
#: RAF-DB emotion codes and the FER+ emotion names used downstream.
EMOTION_CODES: dict[int, str] = {
    1: "surprise",
    2: "fear",
    3: "disgust",
    4: "happiness",
    5: "sadness",
    6: "anger",
    7: "neutral",
}
GENDER_CODES: dict[int, str] = {0: "Male", 1: "Female", 2: "Unsure"}
RACE_CODES: dict[int, str] = {0: "Caucasian", 1: "African-American", 2: "Asian"}
AGE_CODES: dict[int, str] = {0: "0-3", 1: "4-19", 2: "20-39", 3: "40-69", 4: "70+"}

#: FairFace race classes each RAF-DB race corresponds to. RAF-DB does not separate East from
#: Southeast Asian, so "Asian" is a coarse group of both; its "Caucasian" may also hold faces
#: FairFace would call Middle Eastern or Latino_Hispanic, so the White match is approximate.
RACE_TO_FAIRFACE: dict[str, tuple[str, ...]] = {
    "Caucasian": ("White",),
    "African-American": ("Black",),
    "Asian": ("East Asian", "Southeast Asian"),
}
#: Gender maps one to one; "Unsure" is stored as a null gender.
GENDER_TO_FAIRFACE: dict[str, str] = {"Male": "Male", "Female": "Female"}
#: Age groups that RAF-DB's five and FairFace's nine bins both map onto.
COARSE_AGES: tuple[str, ...] = ("0-19", "20-39", "40-69", "70+")
#: RAF-DB, FairFace and coarse age labels, each with its coarse group. The bin edges coincide
#: (20, 40, 70), so no bin is split; what is lost is resolution. FairFace's "more than 70" is
#: read as 70 and over (its 60-69 bin ends at 69). Both are apparent ages from different
#: annotators, so equal labels need not mean equal judgements.
AGE_TO_COARSE: dict[str, str] = {
    "0-3": "0-19",
    "4-19": "0-19",
    "0-2": "0-19",
    "3-9": "0-19",
    "10-19": "0-19",
    "20-29": "20-39",
    "30-39": "20-39",
    "40-49": "40-69",
    "50-59": "40-69",
    "60-69": "40-69",
    "more than 70": "70+",
    **{label: label for label in COARSE_AGES},
}

Layout = Literal["official", "kaggle"]


def coarse_age(label: str | None) -> str | None:
    """Coarse age group (:data:`COARSE_AGES`) of a RAF-DB or FairFace age label.

    Parameters
    ----------
    label
        A RAF-DB age group (``"4-19"``), a FairFace bin (``"30-39"``), a coarse group, or
        ``None``.

    Returns
    -------
    str or None
        ``"0-19"``, ``"20-39"``, ``"40-69"`` or ``"70+"``; ``None`` for ``None``.
    """
    if label is None:
        return None
    if label not in AGE_TO_COARSE:
        raise ValueError(f"unknown age label {label!r}; expected one of {list(AGE_TO_COARSE)}")
    return AGE_TO_COARSE[label]


def _emotion(code: str, *, where: str) -> str:
    try:
        return EMOTION_CODES[int(code)]
    except (KeyError, ValueError):
        raise ValueError(
            f"{where}: emotion label {code!r} is not one of RAF-DB's codes 1-7"
        ) from None


def _split_of(name: str, *, where: str) -> str:
    for split in KAGGLE_LABEL_FILES:
        if name.startswith(f"{split}_"):
            return split
    raise ValueError(f"{where}: image name {name!r} starts with neither 'train_' nor 'test_'")


def _image_id(name: str) -> str:
    """``train_00001`` from ``train_00001.jpg`` or ``train_00001_aligned.jpg``."""
    return Path(name).stem.removesuffix("_aligned")


def read_partition_labels(path: Path) -> pd.DataFrame:
    """Read the official ``list_patition_label.txt`` into image id, split and emotion."""
    rows = []
    for line_number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"{where}: expected '<image name> <label 1-7>', found {line!r}")
        name, code = fields
        rows.append(
            {
                "image_id": _image_id(name),
                "split": _split_of(name, where=where),
                "emotion": _emotion(code, where=where),
            }
        )
    return pd.DataFrame(rows, columns=["image_id", "split", "emotion"])


def read_kaggle_labels(path: Path, *, split: str) -> pd.DataFrame:
    """Read a Kaggle ``{train,test}_labels.csv`` into image id, split, emotion and file path."""
    frame = pd.read_csv(path, dtype=str)
    missing = sorted({"image", "label"} - set(frame.columns))
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; expected the columns image,label")
    frame["emotion"] = [
        _emotion(code, where=f"{path}, line {index + 2}") for index, code in frame["label"].items()
    ]
    frame["image_id"] = frame["image"].map(_image_id)
    frame["split"] = split
    frame["source_path"] = (
        "DATASET/" + split + "/" + frame["label"].str.strip() + "/" + frame["image"]
    )
    return frame[["image_id", "split", "emotion", "source_path"]]


def _parses(value: str, kind: type) -> bool:
    try:
        kind(value)
    except ValueError:
        return False
    return True


def read_attributes(path: Path) -> tuple[str, str, str]:
    """Gender, race and age group of one ``*_manu_attri.txt`` file, in RAF-DB's vocabulary."""
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    well_formed = (
        len(lines) == 8
        and all(len(fields) == 2 and all(_parses(v, float) for v in fields) for fields in lines[:5])
        and all(len(fields) == 1 and _parses(fields[0], int) for fields in lines[5:])
    )
    if not well_formed:
        raise ValueError(
            f"{path}: expected five landmark lines 'x y' followed by one gender, one race and "
            "one age code per line (RAF-DB Annotation/manual format)"
        )
    gender, race, age = (int(fields[0]) for fields in lines[5:])
    for name, code, table in (
        ("gender", gender, GENDER_CODES),
        ("race", race, RACE_CODES),
        ("age", age, AGE_CODES),
    ):
        if code not in table:
            raise ValueError(f"{path}: {name} code {code} is not one of {sorted(table)}")
    return GENDER_CODES[gender], RACE_CODES[race], AGE_CODES[age]


def detect_layout(root: str | Path) -> Layout:
    """``"official"`` or ``"kaggle"``, from the label files present under ``root``."""
    root = Path(root)
    if any((root / name).is_file() for name in OFFICIAL_LABEL_FILES):
        return "official"
    if (root / KAGGLE_LABEL_FILES["train"]).is_file():
        return "kaggle"
    raise FileNotFoundError(
        f"RAF-DB: {root} holds neither {OFFICIAL_LABEL_FILES[0]} (official layout, with images "
        f"in Image/aligned/) nor {KAGGLE_LABEL_FILES['train']} and "
        f"{KAGGLE_LABEL_FILES['test']} (Kaggle layout, with images in DATASET/<split>/<label>/). "
        "Point config key datasets.rafdb.path at the extracted 'basic' folder of RAF-DB."
    )


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"RAF-DB {what} {path} is missing. Point config key datasets.rafdb.path at the "
            f"RAF-DB 'basic' folder and place {path.name} at {path}."
        )
    return path


def build_manifest(
    root: str | Path,
    *,
    layout: Layout | Literal["auto"] = "auto",
    image_variant: Literal["aligned", "original"] = "aligned",
    sample_per_split: Mapping[str, int] | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, int | str]]:
    """Manifest rows (without image bytes) for the labelled RAF-DB basic-subset images.

    Parameters
    ----------
    root
        The RAF-DB ``basic`` folder (official layout) or the Kaggle download's root.
    layout
        ``"official"``, ``"kaggle"``, or ``"auto"`` to detect it from the label files.
    image_variant
        Official layout only: ``"aligned"`` (``Image/aligned/*_aligned.jpg``, 100x100) or
        ``"original"`` (``Image/original/*.jpg``).
    sample_per_split, seed
        Seeded subset size of each split named, for quick runs.

    Returns
    -------
    manifest, report
        Rows with the adapters' manifest columns, splits ``train`` and ``test`` only. Race,
        gender and age come from ``Annotation/manual`` when present (null otherwise, and an
        "unsure" gender is null). The report counts ``images``,
        ``labelled_images_missing`` (listed but absent: rejected at publishing),
        ``images_without_attribute_file`` and ``gender_unsure``, and names the ``layout``.
    """
    root = Path(root)
    if layout == "auto":
        layout = detect_layout(root)
    if image_variant not in ("aligned", "original"):
        raise ValueError(f"image_variant must be 'aligned' or 'original', got {image_variant!r}")
    if layout == "official":
        label_path = next(
            (root / name for name in OFFICIAL_LABEL_FILES if (root / name).is_file()),
            root / OFFICIAL_LABEL_FILES[0],
        )
        manifest = read_partition_labels(_require(label_path, "label file"))
        manifest["source_path"] = (
            "Image/aligned/" + manifest["image_id"] + "_aligned.jpg"
            if image_variant == "aligned"
            else "Image/original/" + manifest["image_id"] + ".jpg"
        )
    elif layout == "kaggle":
        manifest = pd.concat(
            [
                read_kaggle_labels(_require(root / name, "label file"), split=split)
                for split, name in KAGGLE_LABEL_FILES.items()
            ],
            ignore_index=True,
        )
    else:
        raise ValueError(f"layout must be 'official', 'kaggle' or 'auto', got {layout!r}")
    repeated = manifest["image_id"][manifest["image_id"].duplicated()].unique()
    if len(repeated):
        raise ValueError(f"RAF-DB labels list these images more than once: {sorted(repeated)[:5]}")

    present = manifest["source_path"].map(lambda relative: (root / relative).is_file())
    report: dict[str, int | str] = {
        "layout": layout,
        "labelled_images_missing": int((~present).sum()),
    }
    if report["labelled_images_missing"]:
        # Kept: publish_manifest rejects them (reason missing_file), so rows_in counts them.
        logger.warning(
            "%d labelled RAF-DB images are missing (rejected as missing_file), e.g. %s",
            report["labelled_images_missing"],
            list(manifest.loc[~present, "source_path"].head(3)),
        )
    manifest = sample_splits(manifest, sample_per_split, seed=seed)

    attribute_paths = [
        root / ATTRIBUTE_FOLDER / f"{image_id}_manu_attri.txt" for image_id in manifest["image_id"]
    ]
    attributes = [
        read_attributes(path) if path.is_file() else (None, None, None) for path in attribute_paths
    ]
    manifest["gender"] = [gender for gender, _, _ in attributes]
    manifest["race"] = [race for _, race, _ in attributes]
    manifest["age"] = [age for _, _, age in attributes]
    report["images_without_attribute_file"] = int(manifest["race"].isna().sum())
    unsure = manifest["gender"] == "Unsure"
    report["gender_unsure"] = int(unsure.sum())
    manifest.loc[unsure, "gender"] = None
    if report["images_without_attribute_file"]:
        logger.info(
            "%d RAF-DB images have no %s/*_manu_attri.txt: their demographics are null",
            report["images_without_attribute_file"],
            ATTRIBUTE_FOLDER,
        )

    manifest["dataset"] = "rafdb"
    manifest["label_status"] = "ok"
    manifest["emotion_votes"] = None
    manifest["subject_id"] = None
    report["images"] = len(manifest)
    return manifest[list(MANIFEST_COLUMNS)], report
