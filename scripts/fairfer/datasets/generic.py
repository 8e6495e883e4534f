"""Any emotion or face dataset: a CSV manifest, folders of image sets, or class folders.

A CSV manifest has one row per image: ``path`` (relative to the dataset root, or absolute) and
``emotion`` are required; ``race``, ``gender``, ``age``, ``subject_id``, ``split`` and any other
sensitive attribute a run analyses (``country``, ``skin_tone``, ...) are optional. A folder-sets
dataset keeps its images as ``images/<set_id>/*.jpg`` and describes each set (its subject's
demographics, and its emotion unless each image's file name is its emotion) in one metadata CSV
row keyed by set id. A class-folders dataset is ``<root>/[<split>/]<emotion>/*.png``, the layout
CK+48 and the Kaggle copies of FER2013 and AffectNet ship.

CSV files are read in the dialect they are written in (comma, semicolon, tab or pipe; with or
without a UTF-8 byte-order mark). A listed image whose file is missing stays in the manifest
table handed to :func:`fairfer.schemas.publish_manifest`, which rejects it with reason
``missing_file``, so that ``rows_in`` counts every listed row.

Emotion names are checked against a vocabulary (FER+'s by default) after common synonyms are
mapped (``"happy"`` to ``"happiness"``, ...). Without a ``split`` column the split is drawn with a
seed per subject when subjects are known, so no subject's images land in two splits.

The split helpers (:mod:`fairfer.datasets.splits`) are shared with the other
adapters whose datasets have no official split.
"""

from __future__ import annotations

import csv
import difflib
import io
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fairfer.datasets.attributes import normalize_attribute
from fairfer.datasets.splits import (
    DEFAULT_FRACTIONS,
    SPLIT_ALIASES,
    SPLITS,
    assign_splits,
    sample_splits,
)
from fairfer.errors import DatasetError, MissingDataError
from fairfer.schemas import EMOTIONS, MANIFEST_COLUMNS

logger = logging.getLogger(__name__)

#: Common emotion synonyms and the FER+ names they stand for.
EMOTION_ALIASES: dict[str, str] = {
    "happy": "happiness",
    "angry": "anger",
    "sad": "sadness",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
    "happiness": "happiness",
    "joy": "happiness",
    "sadness": "sadness",
    "anger": "anger",
    "afraid": "fear",
    "scared": "fear",
    "surprise": "surprise",
    "contemptuous": "contempt",
    "neutrality": "neutral",
}
#: File name extensions of images found by the folder layouts.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("race", "gender", "age", "subject_id", "split")
DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("race", "gender", "age")


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value) == ""


def _emotion_names(
    names: Sequence[str], *, vocabulary: Sequence[str], aliases: Mapping[str, str]
) -> dict[str, str]:
    """Those of ``names`` that are emotions (case-insensitively, after the aliases), with the
    vocabulary name each stands for."""
    canonical = {name.lower(): name for name in vocabulary}
    lowered = {alias.lower(): target.lower() for alias, target in aliases.items()}
    found = {}
    for name in names:
        key = lowered.get(name.strip().lower(), name.strip().lower())
        if key in canonical:
            found[name] = canonical[key]
    return found


def _normalize_emotions(
    values: pd.Series,
    *,
    vocabulary: Sequence[str],
    aliases: Mapping[str, str],
    source: Path,
) -> list[str]:
    """Vocabulary names of ``values``; errors name the CSV line (index + 2: header, 0-based)."""
    texts = ["" if _blank(value) else str(value) for value in values]
    known = _emotion_names(sorted(set(texts)), vocabulary=vocabulary, aliases=aliases)
    for index, value, text in zip(values.index, values, texts, strict=True):
        if text not in known:
            shown = "an empty value" if _blank(value) else repr(value)
            raise DatasetError(
                f"{source}, line {int(index) + 2}: emotion {shown} is not one of "
                f"{list(vocabulary)}. Correct the value, or map it with emotion_aliases "
                f"(known aliases: {sorted(aliases)})."
            )
    return [known[text] for text in texts]


def _normalize_split_column(values: pd.Series, *, source: Path) -> list[str]:
    names = []
    for index, value in values.items():
        key = "" if _blank(value) else str(value).strip().lower()
        key = SPLIT_ALIASES.get(key, key)
        if key not in SPLITS:
            raise DatasetError(
                f"{source}, line {int(index) + 2}: split {value!r} is not one of {list(SPLITS)} "
                f"(or {sorted(SPLIT_ALIASES)}). Fill in every row's split, or drop the column "
                "to have splits drawn with the seed."
            )
        names.append(key)
    return names


def sniff_csv(path: Path) -> pd.DataFrame:
    """A CSV as text columns, in its own dialect (comma, semicolon, tab, pipe; BOM or not).

    Only empty cells are missing: labels such as "NA" or "None" stay text.
    """
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    sample = text[:65536]
    try:
        delimiter = csv.Sniffer().sniff(sample.split("\n", 1)[0], delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    return pd.read_csv(
        io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""], sep=delimiter
    )


def missing_columns_hint(found: Sequence[str], missing: Sequence[str]) -> str:
    """Why ``missing`` columns are not among ``found``: the likely real cause, for the error."""
    if len(found) == 1 and re.search(r"[;,\t|]", str(found[0])):
        return (
            f" The header was read as one column {found[0]!r}: the file mixes separators or "
            "quotes its header; write it with one separator (comma, semicolon or tab)."
        )
    close = {
        name: difflib.get_close_matches(name, [str(f).lower() for f in found], n=1, cutoff=0.6)
        for name in missing
    }
    suggestions = [
        f"{found_name[0]!r} for {name!r}" for name, found_name in close.items() if found_name
    ]
    if suggestions:
        return f" Did you mean {', '.join(suggestions)}? Rename the column(s)."
    return " Rename its columns accordingly."


def _read_csv(path: Path, *, required: Sequence[str], dataset: str, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise MissingDataError(
            f"{dataset} {what} {path} is missing. Point config key datasets.{dataset}.path at "
            f"the dataset root and place there a CSV with columns {list(required)} (optional: "
            f"{list(OPTIONAL_COLUMNS)})."
        )
    frame = sniff_csv(path)
    # Column names are matched case-insensitively and without surrounding spaces.
    frame.columns = [str(column).strip() for column in frame.columns]
    lowered = {column.lower(): column for column in frame.columns}
    frame = frame.rename(
        columns={lowered[name]: name for name in [*required, *OPTIONAL_COLUMNS] if name in lowered}
    )
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path} lacks required columns {missing} (found {list(frame.columns)})."
            + missing_columns_hint(list(frame.columns), missing)
        )
    return frame


def read_attributes(
    frame: pd.DataFrame,
    *,
    extra: Sequence[str],
    binning: Mapping[str, Sequence[float]],
    value_aliases: Mapping[str, Mapping[str, str]],
    source: Path,
    report: dict,
) -> pd.DataFrame:
    """Race, gender and age (where given) and the ``extra`` attributes, normalised.

    Columns are matched case-insensitively; an ``extra`` attribute the file lacks is an error
    naming the columns found (other attributes are never invented), while race, gender and age
    are inferred downstream where absent.
    """
    lowered = {str(column).lower(): column for column in frame.columns}
    missing = [name for name in extra if name.lower() not in lowered]
    if missing:
        raise DatasetError(
            f"config key fairness.attributes (or a strategy's groups) names {missing}, but "
            f"{source} has no such column (its columns: {list(frame.columns)}). Only race, "
            "gender and age are inferred where a dataset lacks them; other attributes must be "
            "columns of the dataset. Add the column, or remove the attribute from the "
            "configuration."
        )
    result = pd.DataFrame(index=frame.index)
    normalised = {}
    for name in (*DEMOGRAPHIC_COLUMNS, *extra):
        if name.lower() not in lowered:
            result[name] = None
            continue
        result[name], normalised[name] = normalize_attribute(
            frame[lowered[name.lower()]].map(lambda v: None if _blank(v) else str(v).strip()),
            attribute=name,
            edges=binning.get(name),
            aliases=value_aliases.get(name),
            source=str(source),
        )
    report["attributes"] = normalised
    return result


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
    report: dict,
    extra: Sequence[str] = (),
) -> pd.DataFrame:
    """Manifest from ``table`` (``path``, ``split`` and label columns, one row per image)."""
    duplicated = table["image_id"][table["image_id"].duplicated()].unique()
    if len(duplicated):
        raise DatasetError(
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
        raise MissingDataError(
            f"{dataset}: none of the {len(table)} listed images exists under {root} (e.g. "
            f"{root / table['path'].iloc[0]}). Point config key datasets.{dataset}.path at the "
            "directory that the paths are relative to."
        )
    if report["listed_images_missing"]:
        # Kept: publish_manifest rejects them (reason missing_file), so rows_in counts them.
        logger.warning(
            "%s: %d listed images are missing (rejected as missing_file), e.g. %s",
            dataset,
            report["listed_images_missing"],
            list(table.loc[~present, "path"].head(3)),
        )
    table["source_path"] = table["path"]
    table["dataset"] = dataset
    table["label_status"] = "ok"
    table["emotion_votes"] = None
    table = sample_splits(table, sample_per_split, seed=seed)
    report["images"] = len(table)
    return table[[*MANIFEST_COLUMNS, *extra]]


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
    extra_attributes: Sequence[str] = (),
    binning: Mapping[str, Sequence[float]] | None = None,
    value_aliases: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[pd.DataFrame, dict]:
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
    extra_attributes
        Sensitive attributes other than race, gender and age that the run analyses; each must
        be a column of the CSV and becomes a manifest column of that name.
    binning, value_aliases
        Per attribute: bin edges for numeric values, and value synonyms
        (:func:`fairfer.datasets.attributes.normalize_attribute`).

    Returns
    -------
    manifest, report
        One row per listed image with :data:`MANIFEST_COLUMNS` plus ``extra_attributes``, and
        counts: ``images``, ``listed_images_missing`` (rejected downstream as
        ``missing_file``), ``splits_drawn_with_seed`` (0 or 1),
        ``subjects_in_several_splits`` (non-zero only with a given ``split`` column) and
        ``attributes`` (what normalisation did per attribute).
    """
    root = Path(root)
    csv_path = root / manifest_csv
    frame = _read_csv(csv_path, required=("path", "emotion"), dataset=dataset, what="manifest")
    if frame.empty:
        raise DatasetError(f"{csv_path} lists no images")
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
        raise DatasetError(f"{csv_path} lists these paths more than once: {sorted(duplicated)[:5]}")
    table["image_id"] = table["path"].map(_image_id)
    report: dict = {}
    attributes = read_attributes(
        frame,
        extra=extra_attributes,
        binning=binning or {},
        value_aliases=value_aliases or {},
        source=csv_path,
        report=report,
    )
    table = pd.concat([table, attributes], axis=1)
    table["subject_id"] = _text_or_none(frame["subject_id"]) if "subject_id" in frame else None
    table["split"] = (
        _normalize_split_column(frame["split"], source=csv_path) if "split" in frame else None
    )
    groups = table["subject_id"].where(table["subject_id"].notna(), "image:" + table["image_id"])
    manifest = _finish(
        table,
        root=root,
        dataset=dataset,
        split_groups=groups,
        fractions=fractions,
        seed=seed,
        sample_per_split=sample_per_split,
        report=report,
        extra=extra_attributes,
    )
    return manifest, report


def from_folder_sets(
    root: str | Path,
    metadata_csv: str | Path,
    *,
    image_glob: str = "images/*/*.jpg",
    set_column: str = "set_id",
    emotion_from: str = "metadata",
    dataset: str = "folder_sets",
    emotion_vocabulary: Sequence[str] = EMOTIONS,
    emotion_aliases: Mapping[str, str] = EMOTION_ALIASES,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    sample_per_split: Mapping[str, int] | None = None,
    extra_attributes: Sequence[str] = (),
    binning: Mapping[str, Sequence[float]] | None = None,
    value_aliases: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Manifest rows for images in per-set folders, labelled by a per-set metadata CSV.

    Parameters
    ----------
    root
        Dataset root that ``image_glob`` is matched under.
    metadata_csv
        CSV (relative to ``root`` or absolute) with one row per set: ``set_column`` is required;
        ``emotion``, ``race``, ``gender``, ``age``, ``subject_id``, ``split`` and the
        ``extra_attributes`` apply to every image of the set.
    image_glob
        Pattern of the images under ``root``; an image's set id is its folder's name.
    set_column
        Name of the set id column in ``metadata_csv``.
    emotion_from
        ``metadata``: the set's ``emotion`` column (absent: demographic-only data, emotion
        null); ``filename``: each image's file stem is its emotion
        (``images/<set_id>/Happy.jpg``), mapped through the aliases.
    dataset, emotion_vocabulary, emotion_aliases, fractions, seed, sample_per_split,
    extra_attributes, binning, value_aliases
        As in :func:`build_manifest`. Without a ``split`` column, splits are drawn per
        ``subject_id`` when given, else per set, so a set never straddles splits.

    Returns
    -------
    manifest, report
        As in :func:`build_manifest`, plus ``images_without_metadata`` (skipped: their set is
        not in the CSV) and ``sets_without_images``.
    """
    if emotion_from not in ("metadata", "filename"):
        raise DatasetError(
            f"config key datasets.{dataset}.emotion_from is {emotion_from!r}; allowed: "
            "'metadata' (the set's emotion column) or 'filename' (each image's file stem)."
        )
    root = Path(root)
    images = sorted(path.relative_to(root).as_posix() for path in root.glob(image_glob))
    if not images:
        raise MissingDataError(
            f"{dataset}: no image under {root} matches {image_glob!r}. Point config key "
            f"datasets.{dataset}.path at a directory holding images/<{set_column}>/<image>, or "
            "adjust image_glob."
        )
    sets = sorted({Path(path).parent.name for path in images})
    as_emotions = _emotion_names(sets, vocabulary=emotion_vocabulary, aliases=emotion_aliases)
    if len(sets) > 1 and len(as_emotions) == len(sets):
        raise DatasetError(
            f"{dataset}: the set folders under {root} are emotion names ({sets[:8]}): this is "
            "the class-folders layout (<root>/[<split>/]<emotion>/<image>), which folder_sets "
            f"would split by whole classes. Set config key datasets.{dataset}.format to "
            "class_folders."
        )
    csv_path = root / metadata_csv
    metadata = _read_csv(csv_path, required=(set_column,), dataset=dataset, what="set metadata")
    metadata[set_column] = _text_or_none(metadata[set_column])
    repeated = metadata[set_column][metadata[set_column].duplicated()].unique()
    if len(repeated) or metadata[set_column].isna().any():
        raise DatasetError(
            f"{csv_path}: every row needs its own {set_column!r}; empty or repeated ids: "
            f"{sorted(map(str, repeated))[:5]}"
        )
    report: dict = {}
    labels = pd.DataFrame({"set": metadata[set_column]})
    labels["emotion"] = (
        _normalize_emotions(
            metadata["emotion"],
            vocabulary=emotion_vocabulary,
            aliases=emotion_aliases,
            source=csv_path,
        )
        if "emotion" in metadata and emotion_from == "metadata"
        else None
    )
    attributes = read_attributes(
        metadata.drop(columns=[set_column]),
        extra=extra_attributes,
        binning=binning or {},
        value_aliases=value_aliases or {},
        source=csv_path,
        report=report,
    )
    labels = pd.concat([labels, attributes], axis=1)
    labels["subject_id"] = (
        _text_or_none(metadata["subject_id"]) if "subject_id" in metadata else None
    )
    labels["split"] = (
        _normalize_split_column(metadata["split"], source=csv_path) if "split" in metadata else None
    )

    table = pd.DataFrame({"path": images})
    table["set"] = [Path(path).parent.name for path in images]
    table = table.merge(labels, on="set", how="left", indicator=True)
    unmatched = table["_merge"] == "left_only"
    report.update(
        images_without_metadata=int(unmatched.sum()),
        sets_without_images=int((~labels["set"].isin(table["set"])).sum()),
    )
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
        raise DatasetError(
            f"{dataset}: no image folder under {root} matches a {set_column} of {csv_path}"
        )
    if emotion_from == "filename":
        stems = [Path(path).stem for path in table["path"]]
        known = _emotion_names(
            sorted(set(stems)), vocabulary=emotion_vocabulary, aliases=emotion_aliases
        )
        unknown = sorted(set(stems) - set(known))
        if unknown:
            raise DatasetError(
                f"{dataset}: datasets.{dataset}.emotion_from is filename, but the image names "
                f"{unknown[:8]} under {root} are not emotions of {list(emotion_vocabulary)}. "
                f"Map them with datasets.{dataset}.emotion_aliases (e.g. {{{unknown[0]!r}: "
                "neutral}), or move other files out of the image folders."
            )
        table["emotion"] = [known[stem] for stem in stems]
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
        extra=extra_attributes,
    )
    return manifest, report


def _split_name(name: str) -> str | None:
    key = name.strip().lower()
    key = SPLIT_ALIASES.get(key, key)
    return key if key in SPLITS else None


def from_class_folders(
    root: str | Path,
    *,
    split_level: str = "auto",
    subject_pattern: str | None = None,
    dataset: str = "class_folders",
    emotion_vocabulary: Sequence[str] = EMOTIONS,
    emotion_aliases: Mapping[str, str] = EMOTION_ALIASES,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    sample_per_split: Mapping[str, int] | None = None,
) -> tuple[pd.DataFrame, dict]:
    r"""Manifest rows for ``<root>/[<split>/]<emotion>/<image>`` (CK+48, Kaggle FER2013, ...).

    Parameters
    ----------
    root
        Dataset root.
    split_level
        ``auto``: the top folders are splits when every one of them is a split name (``train``,
        ``val``, ``validation``, ``test``, ``PublicTest``, ... as in a CSV's split column);
        ``yes``: they must be; ``no``: the top folders are the emotions and splits are drawn
        with the seed (per subject when ``subject_pattern`` finds one).
    subject_pattern
        Regular expression searched in each file name whose first group (or group
        ``subject``) is the subject id, e.g. ``^(S\d+)_`` for CK+; null: no subject ids.
        Names it does not match have no subject (counted in ``subject_pattern_unmatched``).
    dataset, emotion_vocabulary, emotion_aliases, fractions, seed, sample_per_split
        As in :func:`build_manifest`; the class folder names go through the aliases.

    Returns
    -------
    manifest, report
        As in :func:`build_manifest`, plus ``split_level`` (bool), ``images_per_class_folder``
        and ``files_outside_class_folders`` (ignored).
    """
    root = Path(root)
    if split_level not in ("auto", "yes", "no"):
        raise DatasetError(
            f"config key datasets.{dataset}.split_level is {split_level!r}; allowed: auto, yes, no."
        )
    top = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not top:
        raise MissingDataError(
            f"{dataset}: {root} has no folders; the class-folders layout is "
            "<root>/[<split>/]<emotion>/<image>. Point config key "
            f"datasets.{dataset}.path at that root."
        )
    as_splits = [_split_name(p.name) for p in top]
    has_splits = all(as_splits) if split_level == "auto" else split_level == "yes"
    if split_level == "yes" and not all(as_splits):
        raise DatasetError(
            f"{dataset}: datasets.{dataset}.split_level is yes, but the folders "
            f"{[p.name for p, s in zip(top, as_splits, strict=True) if not s]} under {root} "
            f"are not split names ({list(SPLITS)} or {sorted(SPLIT_ALIASES)}). Rename them, or "
            "set split_level to no."
        )
    containers = (
        [(p, s) for p, s in zip(top, as_splits, strict=True)] if has_splits else [(root, None)]
    )
    pattern = re.compile(subject_pattern) if subject_pattern else None
    rows, outside, per_folder = [], 0, {}
    for container, split in containers:
        folders = sorted(
            p for p in container.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        outside += sum(
            1 for p in container.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        emotions = _emotion_names(
            [p.name for p in folders], vocabulary=emotion_vocabulary, aliases=emotion_aliases
        )
        unknown = [p.name for p in folders if p.name not in emotions]
        if unknown:
            raise DatasetError(
                f"{dataset}: the folders {unknown[:8]} under {container} are not emotions of "
                f"{list(emotion_vocabulary)} (after the aliases). Map them with config key "
                f"datasets.{dataset}.emotion_aliases (e.g. {{{unknown[0]!r}: anger}}), or move "
                "them out of the dataset folder."
            )
        for folder in folders:
            images = sorted(
                path
                for path in folder.rglob("*")
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
            )
            per_folder[folder.relative_to(root).as_posix()] = len(images)
            for path in images:
                subject = None
                if pattern is not None:
                    match = pattern.search(path.name)
                    if match:
                        subject = (
                            match.group("subject")
                            if "subject" in pattern.groupindex
                            else match.group(1 if pattern.groups else 0)
                        )
                rows.append(
                    {
                        "path": path.relative_to(root).as_posix(),
                        "emotion": emotions[folder.name],
                        "split": split,
                        "subject_id": subject,
                    }
                )
    if not rows:
        raise MissingDataError(
            f"{dataset}: no image ({sorted(IMAGE_SUFFIXES)}) in the class folders under {root}."
        )
    table = pd.DataFrame(rows)
    for column in DEMOGRAPHIC_COLUMNS:
        table[column] = None
    table["image_id"] = table["path"].map(_image_id)
    report: dict = {
        "split_level": bool(has_splits),
        "images_per_class_folder": per_folder,
        "files_outside_class_folders": outside,
    }
    if outside:
        logger.warning(
            "%s: %d images lie outside the class folders under %s and are ignored",
            dataset,
            outside,
            root,
        )
    if pattern is not None:
        report["subject_pattern_unmatched"] = int(table["subject_id"].isna().sum())
        if report["subject_pattern_unmatched"]:
            logger.warning(
                "%s: subject_pattern %r matched no subject id in %d file names, e.g. %s",
                dataset,
                subject_pattern,
                report["subject_pattern_unmatched"],
                list(table.loc[table["subject_id"].isna(), "path"].head(3)),
            )
    groups = table["subject_id"].where(table["subject_id"].notna(), "image:" + table["image_id"])
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
