"""Any emotion or face dataset described by a CSV manifest or by folders of image sets.

A CSV manifest has one row per image: ``path`` (relative to the dataset root, or absolute) and
``emotion`` are required; ``race``, ``gender``, ``age``, ``subject_id`` and ``split`` are
optional. A folder dataset keeps its images as ``images/<set_id>/*.jpg`` and describes each set
(its emotion, or its subject's demographics) in one metadata CSV row keyed by set id.

Emotion names are checked against a vocabulary (FER+'s by default) after common synonyms are
mapped (``"happy"`` to ``"happiness"``, ...). Without a ``split`` column the split is drawn with a
seed per subject when subjects are known, so no subject's images land in two splits.

The split helpers here (:func:`assign_splits`, :func:`sample_splits`) are shared by the other
adapters whose datasets have no official split.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fairfer.schemas import EMOTIONS

logger = logging.getLogger(__name__)

#: Columns of every adapter's manifest: the MANIFEST schema's, without ``image``, plus
#: ``subject_id``.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id",
    "dataset",
    "split",
    "source_path",
    "emotion",
    "label_status",
    "emotion_votes",
    "race",
    "gender",
    "age",
    "subject_id",
)
SPLITS: tuple[str, ...] = ("train", "valid", "test")
#: Other spellings of the split names accepted in a ``split`` column.
SPLIT_ALIASES: dict[str, str] = {
    "training": "train",
    "val": "valid",
    "validation": "valid",
    "testing": "test",
}
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "valid": 0.1, "test": 0.1}
#: Common emotion synonyms and the FER+ names they stand for.
EMOTION_ALIASES: dict[str, str] = {
    "happy": "happiness",
    "angry": "anger",
    "sad": "sadness",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
}
OPTIONAL_COLUMNS: tuple[str, ...] = ("race", "gender", "age", "subject_id", "split")
DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("race", "gender", "age")


def assign_splits(
    keys: Sequence[Hashable], *, fractions: Mapping[str, float], seed: int
) -> np.ndarray:
    """Seeded split of every item, drawn per distinct key so that equal keys share a split.

    Parameters
    ----------
    keys
        One key per item (an image id, or a subject id to keep a subject's images together).
    fractions
        Share of the distinct keys per split name (``train``, ``valid``, ``test``); the shares
        must sum to 1. The shares of images follow only approximately when groups differ in size.
    seed
        Seed of the permutation; the same keys and seed always give the same splits.

    Returns
    -------
    numpy.ndarray
        The split name of each item, in the order of ``keys``.
    """
    unknown = sorted(set(fractions) - set(SPLITS))
    if unknown:
        raise ValueError(f"split fractions name unknown splits {unknown}; use {list(SPLITS)}")
    shares = np.array([fractions.get(split, 0.0) for split in SPLITS], dtype=float)
    if (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"split fractions {dict(fractions)} must be non-negative and sum to 1")
    # Sorting first makes the result independent of the input order.
    distinct = sorted({str(key) for key in keys})
    order = np.random.default_rng(seed).permutation(len(distinct))
    bounds = np.round(np.cumsum(shares) * len(distinct)).astype(int)
    position = np.empty(len(distinct), dtype=int)
    position[order] = np.arange(len(distinct))
    split_of = {
        key: SPLITS[int(np.searchsorted(bounds, rank, side="right"))]
        for key, rank in zip(distinct, position, strict=True)
    }
    return np.array([split_of[str(key)] for key in keys], dtype=object)


def sample_splits(
    manifest: pd.DataFrame, sample_per_split: Mapping[str, int] | None, *, seed: int
) -> pd.DataFrame:
    """Keep a seeded random subset of the splits named in ``sample_per_split`` (quick runs)."""
    if not sample_per_split:
        return manifest
    return pd.concat(
        [
            group.sample(n=min(len(group), sample_per_split[split]), random_state=seed)
            if split in sample_per_split
            else group
            for split, group in manifest.groupby("split", sort=False)
        ],
        ignore_index=True,
    )


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == ""


def _normalize_emotions(
    values: pd.Series,
    *,
    vocabulary: Sequence[str],
    aliases: Mapping[str, str],
    source: Path,
) -> list[str]:
    """Vocabulary names of ``values``; errors name the CSV line (index + 2: header, 0-based)."""
    canonical = {name.lower(): name for name in vocabulary}
    lowered_aliases = {alias.lower(): target.lower() for alias, target in aliases.items()}
    names = []
    for index, value in values.items():
        key = "" if _blank(value) else str(value).strip().lower()
        key = lowered_aliases.get(key, key)
        if key not in canonical:
            shown = "an empty value" if _blank(value) else repr(value)
            raise ValueError(
                f"{source}, line {int(index) + 2}: emotion {shown} is not one of "
                f"{list(vocabulary)}. Correct the value, or map it with emotion_aliases "
                f"(known aliases: {sorted(aliases)})."
            )
        names.append(canonical[key])
    return names


def _normalize_split_column(values: pd.Series, *, source: Path) -> list[str]:
    names = []
    for index, value in values.items():
        key = "" if _blank(value) else str(value).strip().lower()
        key = SPLIT_ALIASES.get(key, key)
        if key not in SPLITS:
            raise ValueError(
                f"{source}, line {int(index) + 2}: split {value!r} is not one of {list(SPLITS)} "
                f"(or {sorted(SPLIT_ALIASES)}). Fill in every row's split, or drop the column "
                "to have splits drawn with the seed."
            )
        names.append(key)
    return names


def _read_csv(path: Path, *, required: Sequence[str], dataset: str, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(
            f"{dataset} {what} {path} is missing. Point config key datasets.{dataset}.path at "
            f"the dataset root and place there a CSV with columns {list(required)} (optional: "
            f"{list(OPTIONAL_COLUMNS)})."
        )
    # Only empty cells are missing: labels such as "NA" or "None" stay text.
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(
            f"{path} lacks required columns {missing} (found {list(frame.columns)}); "
            "rename its columns accordingly."
        )
    return frame


def _text_or_none(values: pd.Series) -> list[str | None]:
    return [None if _blank(value) else str(value).strip() for value in values]


def _finish(
    table: pd.DataFrame,
    *,
    root: Path,
    dataset: str,
    split_groups: pd.Series,
    fractions: Mapping[str, float],
    seed: int,
    sample_per_split: Mapping[str, int] | None,
    report: dict[str, int],
) -> pd.DataFrame:
    """Manifest from ``table`` (``path``, ``split`` and label columns, one row per image)."""
    duplicated = table["image_id"][table["image_id"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(
            f"{dataset}: several files share the image id (path without extension) "
            f"{sorted(duplicated)[:5]}; list each image once."
        )
    if table["split"].isna().all():
        table["split"] = assign_splits(list(split_groups), fractions=fractions, seed=seed)
        report["splits_drawn_with_seed"] = 1
    else:
        report["splits_drawn_with_seed"] = 0
    subjects = table.dropna(subset=["subject_id"]).groupby("subject_id")["split"].nunique()
    report["subjects_in_several_splits"] = int((subjects > 1).sum())
    if report["subjects_in_several_splits"]:
        logger.warning(
            "%s: %d subjects have images in more than one split",
            dataset,
            report["subjects_in_several_splits"],
        )

    present = np.array([(root / path).is_file() for path in table["path"]], dtype=bool)
    report["listed_images_missing"] = int((~present).sum())
    if not present.any():
        raise FileNotFoundError(
            f"{dataset}: none of the {len(table)} listed images exists under {root} (e.g. "
            f"{root / table['path'].iloc[0]}). Point config key datasets.{dataset}.path at the "
            "directory that the paths are relative to."
        )
    if report["listed_images_missing"]:
        logger.warning(
            "%s: %d listed images are missing, e.g. %s",
            dataset,
            report["listed_images_missing"],
            list(table.loc[~present, "path"].head(3)),
        )
    table = table[present].reset_index(drop=True)
    table["source_path"] = table["path"]
    table["dataset"] = dataset
    table["label_status"] = "ok"
    table["emotion_votes"] = None
    table = sample_splits(table, sample_per_split, seed=seed)
    report["images"] = len(table)
    return table[list(MANIFEST_COLUMNS)]


def _image_id(path: str) -> str:
    return Path(path).with_suffix("").as_posix()


def build_manifest(
    root: str | Path,
    *,
    manifest_csv: str | Path = "manifest.csv",
    dataset: str = "generic",
    emotion_vocabulary: Sequence[str] = EMOTIONS,
    emotion_aliases: Mapping[str, str] = EMOTION_ALIASES,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    sample_per_split: Mapping[str, int] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Manifest rows (without image bytes) for the images a CSV lists.

    Parameters
    ----------
    root
        Dataset root; relative ``path`` values are relative to it. ``source_path`` keeps each
        path as given and ``image_id`` is that path without its extension (absolute paths
        therefore give absolute ids).
    manifest_csv
        The CSV, relative to ``root`` or absolute. Columns ``path`` and ``emotion`` are
        required; ``race``, ``gender``, ``age``, ``subject_id`` and ``split`` are optional.
    dataset
        Name written to the ``dataset`` column and used in error messages
        (config key ``datasets.<dataset>.path``).
    emotion_vocabulary
        Allowed emotion names (matched case-insensitively, stored as spelled here).
    emotion_aliases
        Other names mapped onto the vocabulary before checking; ``{}`` disables them.
    fractions, seed
        Split shares and seed used when the CSV has no ``split`` column: drawn per
        ``subject_id`` when that column exists (images without one count as their own subject),
        else per image.
    sample_per_split
        Seeded subset size of each split named, for quick runs.

    Returns
    -------
    manifest, report
        One row per existing image with :data:`MANIFEST_COLUMNS`, and counts: ``images``,
        ``listed_images_missing``, ``splits_drawn_with_seed`` (0 or 1) and
        ``subjects_in_several_splits`` (non-zero only with a given ``split`` column).
    """
    root = Path(root)
    csv_path = root / manifest_csv
    frame = _read_csv(csv_path, required=("path", "emotion"), dataset=dataset, what="manifest")
    if frame.empty:
        raise ValueError(f"{csv_path} lists no images")
    table = pd.DataFrame(
        {
            "path": [str(path).strip() for path in frame["path"]],
            "emotion": _normalize_emotions(
                frame["emotion"],
                vocabulary=emotion_vocabulary,
                aliases=emotion_aliases,
                source=csv_path,
            ),
        }
    )
    duplicated = table["path"][table["path"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"{csv_path} lists these paths more than once: {sorted(duplicated)[:5]}")
    table["image_id"] = table["path"].map(_image_id)
    for column in (*DEMOGRAPHIC_COLUMNS, "subject_id"):
        table[column] = _text_or_none(frame[column]) if column in frame else None
    table["split"] = (
        _normalize_split_column(frame["split"], source=csv_path) if "split" in frame else None
    )
    groups = table["subject_id"].where(table["subject_id"].notna(), "image:" + table["image_id"])
    report: dict[str, int] = {}
    manifest = _finish(
        table,
        root=root,
        dataset=dataset,
        split_groups=groups,
        fractions=fractions,
        seed=seed,
        sample_per_split=sample_per_split,
        report=report,
    )
    return manifest, report


def from_folder_sets(
    root: str | Path,
    metadata_csv: str | Path,
    *,
    image_glob: str = "images/*/*.jpg",
    set_column: str = "set_id",
    dataset: str = "folder_sets",
    emotion_vocabulary: Sequence[str] = EMOTIONS,
    emotion_aliases: Mapping[str, str] = EMOTION_ALIASES,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    sample_per_split: Mapping[str, int] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Manifest rows for images in per-set folders, labelled by a per-set metadata CSV.

    Parameters
    ----------
    root
        Dataset root that ``image_glob`` is matched under.
    metadata_csv
        CSV (relative to ``root`` or absolute) with one row per set: ``set_column`` is required;
        ``emotion``, ``race``, ``gender``, ``age``, ``subject_id`` and ``split`` are optional and
        apply to every image of the set.
    image_glob
        Pattern of the images under ``root``; an image's set id is its folder's name.
    set_column
        Name of the set id column in ``metadata_csv``.
    dataset, emotion_vocabulary, emotion_aliases, fractions, seed, sample_per_split
        As in :func:`build_manifest`. Without a ``split`` column, splits are drawn per
        ``subject_id`` when given, else per set, so a set never straddles splits. Without an
        ``emotion`` column (demographic-only data) ``emotion`` is null and ``label_status`` is
        ``"ok"``, as in the FairFace manifest.

    Returns
    -------
    manifest, report
        As in :func:`build_manifest`, plus ``images_without_metadata`` (skipped: their set is
        not in the CSV) and ``sets_without_images``.
    """
    root = Path(root)
    csv_path = root / metadata_csv
    metadata = _read_csv(csv_path, required=(set_column,), dataset=dataset, what="set metadata")
    metadata[set_column] = _text_or_none(metadata[set_column])
    repeated = metadata[set_column][metadata[set_column].duplicated()].unique()
    if len(repeated) or metadata[set_column].isna().any():
        raise ValueError(
            f"{csv_path}: every row needs its own {set_column!r}; empty or repeated ids: "
            f"{sorted(map(str, repeated))[:5]}"
        )
    labels = pd.DataFrame({"set": metadata[set_column]})
    labels["emotion"] = (
        _normalize_emotions(
            metadata["emotion"],
            vocabulary=emotion_vocabulary,
            aliases=emotion_aliases,
            source=csv_path,
        )
        if "emotion" in metadata
        else None
    )
    for column in (*DEMOGRAPHIC_COLUMNS, "subject_id"):
        labels[column] = _text_or_none(metadata[column]) if column in metadata else None
    labels["split"] = (
        _normalize_split_column(metadata["split"], source=csv_path) if "split" in metadata else None
    )

    images = sorted(path.relative_to(root).as_posix() for path in root.glob(image_glob))
    if not images:
        raise FileNotFoundError(
            f"{dataset}: no image under {root} matches {image_glob!r}. Point config key "
            f"datasets.{dataset}.path at a directory holding images/<{set_column}>/<image>, or "
            "adjust image_glob."
        )
    table = pd.DataFrame({"path": images})
    table["set"] = [Path(path).parent.name for path in images]
    table = table.merge(labels, on="set", how="left", indicator=True)
    unmatched = table["_merge"] == "left_only"
    report = {
        "images_without_metadata": int(unmatched.sum()),
        "sets_without_images": int((~labels["set"].isin(table["set"])).sum()),
    }
    if report["images_without_metadata"]:
        logger.warning(
            "%s: %d images are in sets absent from %s, e.g. %s; they are skipped",
            dataset,
            report["images_without_metadata"],
            csv_path,
            sorted(table.loc[unmatched, "set"].unique())[:3],
        )
    table = table[~unmatched].drop(columns="_merge").reset_index(drop=True)
    if table.empty:
        raise ValueError(
            f"{dataset}: no image folder under {root} matches a {set_column} of {csv_path}"
        )
    table["image_id"] = table["path"].map(_image_id)
    groups = table["subject_id"].where(table["subject_id"].notna(), "set:" + table["set"])
    manifest = _finish(
        table,
        root=root,
        dataset=dataset,
        split_groups=groups,
        fractions=fractions,
        seed=seed,
        sample_per_split=sample_per_split,
        report=report,
    )
    return manifest, report
