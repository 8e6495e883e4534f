"""Build a small RAF-DB basic-subset folder in the official layout from real FairFace faces.

RAF-DB itself needs a signed agreement, so the end-to-end test writes its documented layout
(EmoLabel/list_patition_label.txt, Image/aligned/*_aligned.jpg, Annotation/manual/*.txt)
around FairFace images, with FairFace's demographics translated into RAF-DB's codes. Emotion
labels are drawn at random: the test proves the data path, not the accuracy.
"""

import io
import random
import zipfile
from pathlib import Path

import pandas as pd
from PIL import Image

RACE_CODES = {"White": 0, "Black": 1, "East Asian": 2, "Southeast Asian": 2}
AGE_CODES = {
    "0-2": 0,
    "3-9": 1,
    "10-19": 1,
    "20-29": 2,
    "30-39": 2,
    "40-49": 3,
    "50-59": 3,
    "60-69": 3,
    "more than 70": 4,
}


def build_rafdb_layout(fairface: Path, destination: Path, *, n_train: int, n_test: int) -> Path:
    labels = pd.read_csv(fairface / "fairface_label_val.csv")
    labels = labels[labels["race"].isin(RACE_CODES)].sample(n=n_train + n_test, random_state=0)
    rng = random.Random(0)
    (destination / "EmoLabel").mkdir(parents=True)
    (destination / "Image" / "aligned").mkdir(parents=True)
    (destination / "Annotation" / "manual").mkdir(parents=True)
    lines = []
    with zipfile.ZipFile(fairface / "fairface-img-margin025-trainval.zip") as archive:
        for index, row in enumerate(labels.itertuples()):
            split = "train" if index < n_train else "test"
            number = index + 1 if split == "train" else index - n_train + 1
            name = f"{split}_{number:05d}" if split == "train" else f"test_{number:04d}"
            image = Image.open(io.BytesIO(archive.read(row.file))).convert("RGB")
            image.resize((100, 100)).save(destination / "Image" / "aligned" / f"{name}_aligned.jpg")
            lines.append(f"{name}.jpg {rng.randint(1, 7)}")
            gender = 0 if row.gender == "Male" else 1
            attributes = ["50 50"] * 5 + [
                str(gender),
                str(RACE_CODES[row.race]),
                str(AGE_CODES[row.age]),
            ]
            (destination / "Annotation" / "manual" / f"{name}_manu_attri.txt").write_text(
                "\n".join(attributes) + "\n"
            )
    (destination / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return destination
