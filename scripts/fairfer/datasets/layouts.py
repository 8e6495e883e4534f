"""What each dataset's folder must hold, and the errors that name what to place where.

The workflow checks these at planning (``common.smk``), before any job starts, so a missing or
misplaced copy is one paragraph naming the config key, the path and the expected layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

#: What each dataset must look like (key: dataset, or dataset/layout), for the errors that a
# missing or misplaced copy raises.
EXPECTED_LAYOUTS = {
    "ferplus/png_folders": "FER2013Train/, FER2013Valid/, FER2013Test/ (PNGs + label.csv) and "
    "fer2013new.csv, as written by Microsoft's FERPlus generate_training_data.py",
    "ferplus/fer2013_csv": "fer2013.csv (the ICML 2013 challenge file, columns emotion, pixels, "
    "Usage) and fer2013new.csv (the FER+ votes from github.com/microsoft/FERPlus), whose rows "
    "correspond one to one",
    "rafdb": "RAF-DB's basic/ folder: EmoLabel/list_patition_label.txt, "
    "Image/aligned/*_aligned.jpg and, if you have them, Annotation/manual/*_manu_attri.txt "
    "(or the Kaggle layout: train_labels.csv, test_labels.csv, DATASET/{train,test}/<1..7>/)",
    "generic/csv": "a CSV (datasets.generic.manifest_csv) with columns path and emotion "
    "(optional: race, gender, age, subject_id, split) and the images at those paths, relative "
    "to the folder",
    "generic/folder_sets": "images/<set_id>/*.jpg (datasets.generic.image_glob) and a CSV "
    "(datasets.generic.metadata_csv) with one row per set: set_id and optional emotion, race, "
    "gender, age, subject_id, split",
    "generic/class_folders": "one folder per emotion, <emotion>/<image> (e.g. happy/0001.png), "
    "optionally under split folders train/, val/, test/",
    "utkface": "UTKFace images named [age]_[gender]_[race]_[date&time].jpg (or .jpg.chip.jpg), "
    "e.g. the folder UTKFace/ of the aligned-and-cropped release",
    "cremad": "the CREMA-D release folder: VideoDemographics.csv, SentenceFilenames.csv, "
    "processedResults/summaryTable.csv, VideoFlash/<clip>.flv and AudioWAV/<clip>.wav",
    "fairface": "the official FairFace zip (fairface-img-margin025-trainval.zip or "
    "fairface-img-margin125-trainval.zip, both with train/ and val/ at the top)",
    "fairface_labels": "the official fairface_label_train.csv / fairface_label_val.csv",
}
#: Where a copy can be obtained, for the same errors.
OBTAIN = {
    "ferplus": "FER2013 from the ICML 2013 challenge (Kaggle), votes from "
    "github.com/microsoft/FERPlus",
    "rafdb": "RAF-DB is released on request by its authors (whdeng.cn/raf); the Kaggle "
    "re-packaging kaggle://shuvoalok/raf-db-dataset also works as a source",
    "cremad": "github.com/CheyneyComputerScience/CREMA-D (git lfs clone; or the GitLab mirror "
    "gitlab.com/cs-cooper-lab/crema-d-mirror)",
    "utkface": "susanqq.github.io/UTKFace (UTKFace.tar.gz), or Kaggle copies such as "
    "kaggle://jangedoo/utkface-new with archive_root UTKFace",
}


def obtain(dataset: str) -> str:
    return f" Obtain it from: {OBTAIN[dataset]}." if dataset in OBTAIN else ""


def layout_key(config: Mapping, dataset: str) -> str:
    settings = config["datasets"][dataset]
    if dataset == "ferplus":
        return f"ferplus/{settings['layout']}"
    if dataset == "generic":
        return f"generic/{settings['format']}"
    return dataset


def expected_layout(config: Mapping, dataset: str) -> str:
    """What ``dataset``'s folder must hold, in words, for its configured layout."""
    return EXPECTED_LAYOUTS[layout_key(config, dataset)]


def required_files(config: Mapping, dataset: str) -> list[tuple[str, ...]]:
    """Files a dataset folder must hold, each as alternatives (any one of them will do)."""
    settings = config["datasets"][dataset]
    if dataset == "ferplus":
        votes = [] if settings["votes_csv"] else [("fer2013new.csv",)]
        if settings["layout"] == "fer2013_csv":
            return [("fer2013.csv",), *votes]
        splits = ("FER2013Train", "FER2013Valid", "FER2013Test")
        return [(f"{split}/label.csv",) for split in splits] + votes
    if dataset == "rafdb":
        official = ("EmoLabel/list_patition_label.txt", "EmoLabel/list_partition_label.txt")
        kaggle = ("train_labels.csv",)
        layouts = {"official": official, "kaggle": kaggle, "auto": official + kaggle}
        return [layouts[settings["layout"]]]
    if dataset == "generic":
        if settings["format"] == "class_folders":
            return []
        key = "manifest_csv" if settings["format"] == "csv" else "metadata_csv"
        return [(settings[key],)]
    if dataset == "cremad":
        return [("VideoDemographics.csv",), ("SentenceFilenames.csv",), ("VideoFlash",)]
    return []


def missing_dataset_error(config: Mapping, dataset: str) -> str | None:
    """Why a manually placed dataset is unusable, with what to place where; None if fine."""
    settings = config["datasets"][dataset]
    root = Path(settings["path"])
    missing = [
        " or ".join(str(root / name) for name in alternatives)
        for alternatives in required_files(config, dataset)
        if not any((root / name).exists() for name in alternatives)
    ]
    votes_csv = settings.get("votes_csv")
    if votes_csv and not Path(votes_csv).is_file():
        missing.append(f"{votes_csv} (config key datasets.{dataset}.votes_csv)")
    if root.is_dir() and not missing:
        return None
    what = f"{root} does not exist" if not root.is_dir() else "missing: " + "; ".join(missing)
    expected = EXPECTED_LAYOUTS[layout_key(config, dataset)]
    return (
        f"Dataset {dataset} (config key datasets.{dataset}.path, source: manual, so you place "
        f"its files yourself): {what}. Place in {root} {expected}."
        f"{obtain(dataset)} Or set datasets.{dataset}.path to your copy, or "
        f"datasets.{dataset}.source to an archive the pipeline fetches (local path, http(s):// "
        "or kaggle://owner/dataset; docs/datasets.md)."
    )


def dataset_path_errors(config: Mapping, datasets: Sequence[str]) -> str | None:
    """Why the datasets a run needs are not where configured (one paragraph each), or None."""
    errors = []
    for dataset in datasets:
        settings = config["datasets"][dataset]
        if settings["source"] == "manual":
            errors.append(missing_dataset_error(config, dataset))
        elif "://" not in settings["source"] and not Path(settings["source"]).is_file():
            sha256 = settings["sha256"]
            errors.append(
                f"{settings['source']} (config key datasets.{dataset}.source) does not exist. "
                f"Place there the archive of {dataset}"
                + (f" (sha256 {sha256})" if sha256 else "")
                + f" holding {EXPECTED_LAYOUTS[layout_key(config, dataset)]}"
                + (f" under {settings['archive_root']}/" if settings["archive_root"] else "")
                + f".{obtain(dataset)}"
            )
    fairface = config["datasets"]["fairface"]
    for split, path in fairface["labels"].items():
        if not Path(path).is_file():
            errors.append(
                f"{path} (config key datasets.fairface.labels.{split}) does not exist. Place "
                f"there {EXPECTED_LAYOUTS['fairface_labels']}."
            )
    archive = fairface["archive"]
    if "://" not in archive["url"] and not Path(archive["url"]).is_file():
        sha256 = f" (sha256 {archive['sha256']})" if archive["sha256"] else ""
        errors.append(
            f"{archive['url']} (config key datasets.fairface.archive.url) does not exist. "
            f"Place there {EXPECTED_LAYOUTS['fairface']}{sha256}."
        )
    errors = [error for error in errors if error]
    if not errors:
        return None
    return "\n".join(errors) + (
        "\nSet keys with --config or an extra --configfile (docs/datasets.md)."
    )
