"""Build small copies of datasets in their documented layouts from the real FER+ and FairFace.

UTKFace and RAF-DB are not in the shared data and a generic dataset is whatever a user brings,
so tests write those layouts around real faces: FairFace images renamed to UTKFace's
``[age]_[gender]_[race]_[date&time].jpg.chip.jpg`` names, or listed in a generic CSV with their
FairFace demographics. ``fer2013.csv`` is rebuilt from the FER+ PNGs, which are its pixels.
"""

import csv
import io
import os
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fairfer.schemas import EMOTIONS

ROOT = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path:
    """The shared real data: $FAIRFER_DATA, the checkout's data/, or ../shared/data."""
    candidates = [
        ROOT / "data",
        ROOT.parent / "shared" / "data",
        ROOT.parents[1] / "shared" / "data",
    ]
    if "FAIRFER_DATA" in os.environ:
        candidates.insert(0, Path(os.environ["FAIRFER_DATA"]))
    return next(
        (
            path
            for path in candidates
            if (path / "ferplus").is_dir() and (path / "fairface").is_dir()
        ),
        candidates[0],
    )


DATA = real_data_dir()
FAIRFACE_ZIP = "fairface-img-margin025-trainval.zip"
USAGE_FOLDERS = {
    "Training": "FER2013Train",
    "PublicTest": "FER2013Valid",
    "PrivateTest": "FER2013Test",
}
UTKFACE_RACES = {
    "White": 0,
    "Black": 1,
    "East Asian": 2,
    "Southeast Asian": 2,
    "Indian": 3,
    "Latino_Hispanic": 4,
    "Middle Eastern": 4,
}
#: An age in years inside each FairFace bin, and the bins' lower edges.
AGE_IN_BIN = {
    "0-2": 1,
    "3-9": 6,
    "10-19": 15,
    "20-29": 25,
    "30-39": 35,
    "40-49": 45,
    "50-59": 55,
    "60-69": 65,
    "more than 70": 80,
}


def build_fer2013_csv(ferplus: Path, destination: Path, *, rows: int) -> Path:
    """``fer2013.csv`` and ``fer2013new.csv`` for the first ``rows`` rows of the official file.

    Pixels come from the generated PNGs; rows without an image (not a face, or no PNG) get
    random pixels, as their content is never used. The FER2013 emotion column is not part of
    FER+ and is written as 0.
    """
    destination.mkdir(parents=True, exist_ok=True)
    official = pd.read_csv(ferplus / "fer2013new.csv", nrows=rows)
    official.to_csv(destination / "fer2013new.csv", index=False)
    rng = np.random.default_rng(0)
    with open(destination / "fer2013.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for usage, name in zip(official["Usage"], official["Image name"], strict=True):
            png = ferplus / USAGE_FOLDERS[usage] / str(name)
            if isinstance(name, str) and png.is_file():
                pixels = np.asarray(Image.open(png).convert("L")).reshape(-1)
            else:
                pixels = rng.integers(0, 256, 48 * 48)
            writer.writerow([0, " ".join(map(str, pixels)), usage])
    return destination


def _fairface_rows(fairface: Path, n: int, seed: int) -> pd.DataFrame:
    labels = pd.read_csv(fairface / "fairface_label_val.csv")
    return labels.sample(n=n, random_state=seed).reset_index(drop=True)


def build_utkface_folder(fairface: Path, destination: Path, *, n: int, seed: int = 0) -> Path:
    """``destination/UTKFace/<age>_<gender>_<race>_<stamp>.jpg.chip.jpg`` from FairFace val."""
    folder = destination / "UTKFace"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(fairface / FAIRFACE_ZIP) as archive:
        for index, row in _fairface_rows(fairface, n, seed).iterrows():
            gender = 0 if row.gender == "Male" else 1
            name = f"{AGE_IN_BIN[row.age]}_{gender}_{UTKFACE_RACES[row.race]}_2017011{index:08d}"
            image = Image.open(io.BytesIO(archive.read(row.file))).convert("RGB").resize((200, 200))
            image.save(folder / f"{name}.jpg.chip.jpg")
    return destination


def build_generic_csv(
    fairface: Path, destination: Path, *, n: int, seed: int = 0, with_age: bool = False
) -> pd.DataFrame:
    """A generic CSV dataset: FairFace val faces with their race and gender (and age when
    ``with_age``), random emotions spelled as a user might (``happy``, ``Neutral``), no split.
    """
    rng = random.Random(seed)
    spellings = ["happy", "Neutral", "sad", "angry", "surprised", "fearful", "disgust"]
    (destination / "faces").mkdir(parents=True, exist_ok=True)
    rows = []
    with zipfile.ZipFile(fairface / FAIRFACE_ZIP) as archive:
        for index, row in _fairface_rows(fairface, n, seed).iterrows():
            path = f"faces/{index:05d}.jpg"
            (destination / path).write_bytes(archive.read(row.file))
            entry = {"path": path, "emotion": rng.choice(spellings), "race": row.race}
            entry["gender"] = row.gender
            if with_age:
                entry["age"] = row.age
            rows.append(entry)
    table = pd.DataFrame(rows)
    table.to_csv(destination / "manifest.csv", index=False)
    return table


FERPLUS_SPLIT_FOLDERS = {"train": "FER2013Train", "val": "FER2013Valid", "test": "FER2013Test"}
#: Folder names as the Kaggle FER2013 / CK+48 copies spell the classes.
CLASS_FOLDER_NAMES = {
    "neutral": "neutral",
    "happiness": "happy",
    "surprise": "surprise",
    "sadness": "sad",
    "anger": "angry",
    "disgust": "disgust",
    "fear": "fear",
    "contempt": "contempt",
}


def _ferplus_majority(ferplus: Path, folder: str) -> pd.DataFrame:
    """FER+ images of one split folder with a strict majority emotion (from label.csv)."""
    votes = pd.read_csv(ferplus / folder / "label.csv", header=None)
    counts = votes.iloc[:, 2 : 2 + len(EMOTIONS)].to_numpy()
    top = counts.argmax(axis=1)
    majority = counts.max(axis=1) * 2 > votes.iloc[:, 2:].to_numpy().sum(axis=1)
    table = pd.DataFrame({"file": votes[0], "emotion": np.asarray(EMOTIONS)[top]})
    return table[majority].reset_index(drop=True)


def build_class_folders(
    ferplus: Path,
    destination: Path,
    *,
    per_split: dict[str, int],
    split_level: bool,
    seed: int = 0,
    contempt_only_in: str | None = None,
) -> pd.DataFrame:
    """``destination/[<split>/]<emotion>/S<subject>_<seq>_<frame>.png`` from real FER+ faces.

    Folder names are the Kaggle copies' (``happy``, ``sad``, ``angry``, ...), file names CK+'s
    (``S005_001_00000011.png``, five images per subject). Contempt is left out, except one
    image placed in the split ``contempt_only_in`` (a class absent from train).
    """
    rows = []
    subject = 0
    for split, count in per_split.items():
        table = _ferplus_majority(ferplus, FERPLUS_SPLIT_FOLDERS[split])
        table = table[table["emotion"] != "contempt"].sample(n=count, random_state=seed)
        if contempt_only_in == split:
            contempt = _ferplus_majority(ferplus, FERPLUS_SPLIT_FOLDERS[split])
            table = pd.concat([table, contempt[contempt["emotion"] == "contempt"].head(1)])
        for index, row in enumerate(table.itertuples(index=False)):
            if index % 5 == 0:
                subject += 1
            name = f"S{subject:03d}_{index % 5 + 1:03d}_{index:08d}.png"
            folder = destination / (split if split_level else "") / CLASS_FOLDER_NAMES[row.emotion]
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ferplus / FERPLUS_SPLIT_FOLDERS[split] / row.file, folder / name)
            rows.append(
                {"path": (folder / name).relative_to(destination).as_posix(), "split": split}
                | {"emotion": row.emotion, "subject": f"S{subject:03d}"}
            )
    return pd.DataFrame(rows)


#: File stems of the emotion-in-file-name layout, spelled as that project spells them.
FILENAME_EMOTIONS = ("Happy", "Sad", "Angry", "Neutral", "Surprised", "Fear", "Disgust")
COUNTRIES = ("Spain", "Japan", "Nigeria", "Brazil")


def build_emotion_named_sets(
    fairface: Path, destination: Path, *, n_sets: int, seed: int = 0, separator: str = ","
) -> pd.DataFrame:
    """``destination/images/<set_id>/<Emotion>.jpg`` and ``emotions.csv`` (``set_id, gender,
    age, country``), the layout of a published bias-aware FER project, from real faces.

    Each set takes FairFace val faces of one gender and age group (a set stands for one
    person); gender is written as ``FEMALE`` / ``MALE``, age in years, country drawn with the
    seed. Returns the metadata table.
    """
    rng = random.Random(seed)
    labels = pd.read_csv(fairface / "fairface_label_val.csv")
    groups = [g for _, g in labels.groupby(["gender", "age"]) if len(g) >= len(FILENAME_EMOTIONS)]
    rows = []
    with zipfile.ZipFile(fairface / FAIRFACE_ZIP) as archive:
        for index in range(n_sets):
            group = groups[index % len(groups)]
            faces = group.sample(n=len(FILENAME_EMOTIONS), random_state=seed + index)
            set_id = f"{index + 1:04d}"
            folder = destination / "images" / set_id
            folder.mkdir(parents=True, exist_ok=True)
            for emotion, face in zip(FILENAME_EMOTIONS, faces.itertuples(), strict=True):
                (folder / f"{emotion}.jpg").write_bytes(archive.read(face.file))
            first = faces.iloc[0]
            rows.append(
                {
                    "set_id": set_id,
                    "gender": first.gender.upper(),
                    "age": AGE_IN_BIN[first.age] + rng.randint(-1, 1),
                    "country": COUNTRIES[rng.randrange(len(COUNTRIES))],
                }
            )
    table = pd.DataFrame(rows)
    table.to_csv(destination / "emotions.csv", index=False, sep=separator)
    return table
