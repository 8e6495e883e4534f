"""Dataset adapters (RAF-DB, UTKFace, generic CSV / folder sets, FER2013 CSV) on tiny fixtures."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fairfer.datasets import fer2013, generic, rafdb, splits, utkface
from fairfer.schemas import FAIRFACE_RACES, MANIFEST, MANIFEST_COLUMNS, table_from_frame


def _image(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)


def _attributes(path: Path, gender: int, race: int, age: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    landmarks = "\n".join(f"{30 + i}.5\t{40 + i}.25" for i in range(5))
    path.write_text(f"{landmarks}\n{gender}\n{race}\n{age}\n")


def _assert_manifest(manifest: pd.DataFrame) -> None:
    """Columns as specified, ids unique, and convertible to the MANIFEST Parquet schema."""
    assert list(manifest.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert manifest["image_id"].is_unique
    assert set(manifest["split"]) <= {"train", "valid", "test"}
    with_image = manifest.assign(image=manifest.get("image", b"x"))
    assert table_from_frame(with_image, MANIFEST).num_rows == len(manifest)


# --- RAF-DB -------------------------------------------------------------------------------


@pytest.fixture
def rafdb_official(tmp_path: Path) -> Path:
    root = tmp_path / "basic"
    labels = {
        "train_00001": 5,
        "train_00002": 4,
        "train_00003": 7,
        "train_00004": 1,
        "test_0001": 6,
        "test_0002": 2,
    }
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel/list_patition_label.txt").write_text(
        "".join(f"{name}.jpg {code}\n" for name, code in labels.items())
    )
    for name in labels:
        if name != "train_00004":  # listed but absent from the image folder
            _image(root / f"Image/aligned/{name}_aligned.jpg")
            _image(root / f"Image/original/{name}.jpg")
    manual = root / "Annotation/manual"
    _attributes(manual / "train_00001_manu_attri.txt", gender=0, race=0, age=2)
    _attributes(manual / "train_00002_manu_attri.txt", gender=1, race=1, age=4)
    _attributes(manual / "test_0001_manu_attri.txt", gender=2, race=2, age=0)
    # train_00003 and test_0002 have no attribute file.
    return root


def test_rafdb_official_layout(rafdb_official: Path) -> None:
    manifest, report = rafdb.build_manifest(rafdb_official)
    _assert_manifest(manifest)
    assert report == {
        "layout": "official",
        "labelled_images_missing": 1,
        # The missing image (kept, for publish_manifest to reject) has no attribute file either.
        "images_without_attribute_file": 3,
        "gender_unsure": 1,
        "images": 6,
    }
    rows = manifest.set_index("image_id")
    assert rows.loc["train_00001", "source_path"] == "Image/aligned/train_00001_aligned.jpg"
    assert rows.loc["train_00001", ["emotion", "split"]].tolist() == ["sadness", "train"]
    assert rows.loc["test_0002", ["emotion", "split"]].tolist() == ["fear", "test"]
    assert rows.loc["train_00001", ["gender", "race", "age"]].tolist() == [
        "Male",
        "Caucasian",
        "20-39",
    ]
    assert rows.loc["train_00002", ["gender", "race", "age"]].tolist() == [
        "Female",
        "African-American",
        "70+",
    ]
    # "Unsure" gender is null; race and age of that image are kept.
    assert rows.loc["test_0001", "gender"] is None
    assert rows.loc["test_0001", ["race", "age"]].tolist() == ["Asian", "0-3"]
    assert rows.loc["train_00003", ["gender", "race", "age"]].isna().all()
    assert set(manifest["dataset"]) == {"rafdb"} and set(manifest["label_status"]) == {"ok"}
    assert (rafdb_official / rows.loc["test_0002", "source_path"]).is_file()


def test_rafdb_original_images_and_no_attribute_folder(rafdb_official: Path) -> None:
    for path in (rafdb_official / "Annotation/manual").iterdir():
        path.unlink()
    manifest, report = rafdb.build_manifest(
        rafdb_official, layout="official", image_variant="original"
    )
    assert set(manifest["source_path"].str.split("/").str[1]) == {"original"}
    assert report["images_without_attribute_file"] == len(manifest) == 6
    assert manifest[["race", "gender", "age"]].isna().all().all()


def test_rafdb_malformed_attribute_file_is_named(rafdb_official: Path) -> None:
    bad = rafdb_official / "Annotation/manual/train_00003_manu_attri.txt"
    bad.write_text("1 2\n3\n")
    with pytest.raises(ValueError, match="train_00003_manu_attri.txt.*five landmark lines"):
        rafdb.build_manifest(rafdb_official)
    _attributes(bad, gender=0, race=5, age=1)
    with pytest.raises(ValueError, match="race code 5"):
        rafdb.build_manifest(rafdb_official)


def test_rafdb_kaggle_layout(tmp_path: Path) -> None:
    rows = {"train": [("train_00001_aligned.jpg", 4), ("train_00002_aligned.jpg", 7)]}
    rows["test"] = [("test_0001_aligned.jpg", 3)]
    for split, entries in rows.items():
        pd.DataFrame(entries, columns=["image", "label"]).to_csv(
            tmp_path / f"{split}_labels.csv", index=False
        )
        for name, label in entries:
            _image(tmp_path / "DATASET" / split / str(label) / name)
    _attributes(tmp_path / "Annotation/manual/train_00002_manu_attri.txt", 1, 2, 3)

    assert rafdb.detect_layout(tmp_path) == "kaggle"
    manifest, report = rafdb.build_manifest(tmp_path)
    _assert_manifest(manifest)
    assert report["layout"] == "kaggle" and report["images"] == 3
    got = manifest.set_index("image_id")
    assert got.loc["train_00001", "source_path"] == "DATASET/train/4/train_00001_aligned.jpg"
    assert got.loc["test_0001", ["split", "emotion"]].tolist() == ["test", "disgust"]
    assert got.loc["train_00002", ["gender", "race", "age"]].tolist() == [
        "Female",
        "Asian",
        "40-69",
    ]


def test_rafdb_layout_detection_failure_names_both_layouts(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        rafdb.build_manifest(tmp_path)
    message = str(error.value)
    for expected in ("list_patition_label.txt", "train_labels.csv", "datasets.rafdb.path"):
        assert expected in message
    with pytest.raises(FileNotFoundError, match="test_labels.csv"):
        (tmp_path / "train_labels.csv").write_text("image,label\n")
        rafdb.build_manifest(tmp_path, layout="kaggle")


def test_rafdb_bad_label_line_is_located(rafdb_official: Path) -> None:
    (rafdb_official / "EmoLabel/list_patition_label.txt").write_text("train_00001.jpg 9\n")
    with pytest.raises(ValueError, match=r"list_patition_label.txt:1: emotion label '9'"):
        rafdb.build_manifest(rafdb_official)


def test_split_validation_is_stratified_seeded_and_order_free() -> None:
    manifest = pd.DataFrame(
        {
            "image_id": [f"train_{i:05d}" for i in range(30)] + ["test_0001"],
            "split": ["train"] * 30 + ["test"],
            "emotion": ["happiness"] * 20 + ["fear"] * 10 + ["anger"],
        }
    )
    carved = splits.split_validation(manifest, fraction=0.2, seed=3)
    valid = carved[carved["split"] == "valid"]
    assert valid["emotion"].value_counts().to_dict() == {"happiness": 4, "fear": 2}
    assert carved.loc[30, "split"] == "test"
    assert manifest["split"].eq("train").sum() == 30  # input left untouched
    shuffled = splits.split_validation(
        manifest.sample(frac=1, random_state=1), fraction=0.2, seed=3
    )
    assert set(shuffled.loc[shuffled["split"] == "valid", "image_id"]) == set(valid["image_id"])
    other_seed = splits.split_validation(manifest, fraction=0.2, seed=4)
    assert set(other_seed.loc[other_seed["split"] == "valid", "image_id"]) != set(valid["image_id"])
    with pytest.raises(ValueError, match="already has a 'valid' split"):
        splits.split_validation(carved, fraction=0.2, seed=3)
    with pytest.raises(ValueError, match="between 0 and 1"):
        splits.split_validation(manifest, fraction=1.0, seed=3)


def test_coarse_age_maps_both_vocabularies() -> None:
    assert [rafdb.coarse_age(a) for a in rafdb.AGE_CODES.values()] == [
        "0-19",
        "0-19",
        "20-39",
        "40-69",
        "70+",
    ]
    assert [rafdb.coarse_age(a) for a in ("0-2", "10-19", "30-39", "60-69", "more than 70")] == [
        "0-19",
        "0-19",
        "20-39",
        "40-69",
        "70+",
    ]
    assert rafdb.coarse_age(None) is None
    assert set(rafdb.AGE_TO_COARSE.values()) == set(rafdb.COARSE_AGES)
    with pytest.raises(ValueError, match="'25'"):
        rafdb.coarse_age("25")


# --- UTKFace ------------------------------------------------------------------------------


def test_utkface_labels_from_names_and_malformed_names_skipped(tmp_path: Path) -> None:
    good = {
        "25_0_0_20170116174525125.jpg.chip.jpg": ("Male", "White", "20-29"),
        "2_1_2_20161219203650636.jpg.chip.jpg": ("Female", "Asian", "0-2"),
        "70_1_3_20170109150557335.jpg.chip.jpg": ("Female", "Indian", "more than 70"),
        "9_0_4_20170103200814791.jpg.chip.jpg": ("Male", "Others", "3-9"),
        "45_0_1_20170117134713512.jpg": ("Male", "Black", "40-49"),
    }
    malformed = ["39_1_20170116174525125.jpg.chip.jpg", "61_3_1_20170109142408075.jpg"]
    for name in [*good, *malformed]:
        _image(tmp_path / "UTKFace" / name)
    manifest, report = utkface.build_manifest(tmp_path, seed=1)
    _assert_manifest(manifest)
    assert report == {"malformed_file_names": 2, "images": 5}
    got = manifest.set_index("image_id")
    for name, labels in good.items():
        image_id = "UTKFace/" + name.split(".")[0]
        assert tuple(got.loc[image_id, ["gender", "race", "age"]]) == labels
        assert got.loc[image_id, "source_path"] == f"UTKFace/{name}"
    assert manifest["emotion"].isna().all() and set(manifest["dataset"]) == {"utkface"}
    again, _ = utkface.build_manifest(tmp_path, seed=1)
    assert again["split"].tolist() == manifest["split"].tolist()


def test_utkface_age_bins_and_race_mapping() -> None:
    assert [utkface.fairface_age_bin(a) for a in (0, 2, 3, 9, 10, 19, 20, 69, 70, 116)] == [
        "0-2",
        "0-2",
        "3-9",
        "3-9",
        "10-19",
        "10-19",
        "20-29",
        "60-69",
        "more than 70",
        "more than 70",
    ]
    assert set(utkface.RACE_TO_FAIRFACE) == set(utkface.RACES.values())
    assert utkface.RACE_TO_FAIRFACE["Others"] == ("Latino_Hispanic", "Middle Eastern")
    merged = [race for races in utkface.RACE_TO_FAIRFACE.values() for race in races]
    assert sorted(merged) == sorted(FAIRFACE_RACES)


def test_utkface_without_images_names_config_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="datasets.utkface.path"):
        utkface.build_manifest(tmp_path)


# --- generic CSV manifest and folder sets -------------------------------------------------


def test_assign_splits_follows_fractions_and_groups() -> None:
    keys = [f"subject{i // 3}" for i in range(300)]
    splits = generic.assign_splits(keys, fractions={"train": 0.5, "test": 0.5}, seed=0)
    frame = pd.DataFrame({"key": keys, "split": splits})
    assert (frame.groupby("key")["split"].nunique() == 1).all()
    assert frame.drop_duplicates("key")["split"].value_counts().to_dict() == {
        "train": 50,
        "test": 50,
    }
    with pytest.raises(ValueError, match="sum to 1"):
        generic.assign_splits(keys, fractions={"train": 0.5}, seed=0)
    with pytest.raises(ValueError, match="unknown splits"):
        generic.assign_splits(keys, fractions={"train": 0.5, "val": 0.5}, seed=0)


def test_generic_csv_aliases_demographics_and_subject_split(tmp_path: Path) -> None:
    emotions = ["Happy", "angry", "sad", "surprised", "fearful", "disgusted", "neutral"]
    rows = []
    for index in range(40):
        path = f"faces/img{index:02d}.png"
        _image(tmp_path / path)
        rows.append(
            {
                "path": path,
                "emotion": emotions[index % len(emotions)],
                "subject_id": f"s{index // 4}" if index < 36 else "",
                "race": "Black" if index % 2 else "White",
                "gender": "Female",
                "age": "20-29",
            }
        )
    rows.append({**rows[0], "path": "faces/absent.png"})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)

    manifest, report = generic.build_manifest(tmp_path, dataset="mine", seed=2)
    _assert_manifest(manifest)
    assert report == {
        "splits_drawn_with_seed": 1,
        "subjects_in_several_splits": 0,
        "listed_images_missing": 1,
        # Kept: publish_manifest rejects it as missing_file, so rows_in counts every CSV row.
        "images": 41,
        "attributes": {name: {"binned": False, "mapped": 0} for name in ("race", "gender", "age")},
    }
    assert manifest["emotion"].head(7).tolist() == [
        "happiness",
        "anger",
        "sadness",
        "surprise",
        "fear",
        "disgust",
        "neutral",
    ]
    assert manifest.loc[0, ["image_id", "race", "gender"]].tolist() == [
        "faces/img00",
        "White",
        "Female",
    ]
    with_subject = manifest.dropna(subset=["subject_id"])
    assert (with_subject.groupby("subject_id")["split"].nunique() == 1).all()
    assert manifest.loc[36:39, "subject_id"].isna().all()
    assert set(manifest["dataset"]) == {"mine"}


def test_generic_csv_unknown_emotion_names_value_and_line(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("path,emotion\na.jpg,happy\nb.jpg,bored\n")
    with pytest.raises(ValueError, match=r"manifest.csv, line 3: emotion 'bored'"):
        generic.build_manifest(tmp_path)
    # The same name passes once the vocabulary or the aliases cover it.
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "b.jpg")
    manifest, _ = generic.build_manifest(
        tmp_path, emotion_aliases={"bored": "neutral", "happy": "happiness"}
    )
    assert manifest["emotion"].tolist() == ["happiness", "neutral"]
    manifest, _ = generic.build_manifest(
        tmp_path, emotion_vocabulary=("Happy", "Bored"), emotion_aliases={}
    )
    assert manifest["emotion"].tolist() == ["Happy", "Bored"]


def test_generic_csv_given_split_and_input_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="datasets.mine.path"):
        generic.build_manifest(tmp_path, dataset="mine")
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _image(tmp_path / name)
    csv = tmp_path / "manifest.csv"
    csv.write_text(
        "path,emotion,split,subject_id\na.jpg,happy,Train,x\nb.jpg,sad,val,x\nc.jpg,sad,test,\n"
    )
    manifest, report = generic.build_manifest(tmp_path)
    assert manifest["split"].tolist() == ["train", "valid", "test"]
    assert report["splits_drawn_with_seed"] == 0 and report["subjects_in_several_splits"] == 1
    csv.write_text("path,emotion,split\na.jpg,happy,holdout\n")
    with pytest.raises(ValueError, match="line 2: split 'holdout'"):
        generic.build_manifest(tmp_path)
    csv.write_text("file,emotion\na.jpg,happy\n")
    with pytest.raises(ValueError, match=r"lacks required columns \['path'\]"):
        generic.build_manifest(tmp_path)
    csv.write_text("path,emotion\nmissing.jpg,happy\n")
    with pytest.raises(FileNotFoundError, match="none of the 1 listed images"):
        generic.build_manifest(tmp_path)


def test_folder_sets_join_metadata_per_set(tmp_path: Path) -> None:
    for relative in ("s1/a.jpg", "s1/b.jpg", "s2/c.jpg", "s2/d.jpg", "s3/e.jpg"):
        _image(tmp_path / "images" / relative)
    pd.DataFrame(
        {
            "set_id": ["s1", "s2", "s4"],
            "emotion": ["happy", "Neutral", "sad"],
            "race": ["Indian", "White", "Black"],
            "age": ["30-39", None, "3-9"],
        }
    ).to_csv(tmp_path / "sets.csv", index=False)

    manifest, report = generic.from_folder_sets(tmp_path, "sets.csv", seed=5)
    _assert_manifest(manifest)
    assert report["images_without_metadata"] == 1 and report["sets_without_images"] == 1
    assert report["images"] == 4
    got = manifest.set_index("image_id")
    assert got.loc["images/s1/b", ["emotion", "race", "age"]].tolist() == [
        "happiness",
        "Indian",
        "30-39",
    ]
    assert got.loc["images/s2/c", ["emotion", "race"]].tolist() == ["neutral", "White"]
    assert got.loc["images/s2/c", "age"] is None
    assert got.loc["images/s2/d", "source_path"] == "images/s2/d.jpg"
    sets = manifest["image_id"].str.split("/").str[1]
    assert (manifest.groupby(sets)["split"].nunique() == 1).all()


def test_folder_sets_demographics_only_and_bad_metadata(tmp_path: Path) -> None:
    _image(tmp_path / "images/p1/x.jpg")
    (tmp_path / "sets.csv").write_text("person,gender\np1,Male\n")
    manifest, _ = generic.from_folder_sets(tmp_path, "sets.csv", set_column="person")
    assert manifest.loc[0, "emotion"] is None and manifest.loc[0, "gender"] == "Male"
    (tmp_path / "sets.csv").write_text("person,emotion\np1,happy\np1,sad\n")
    with pytest.raises(ValueError, match="repeated ids"):
        generic.from_folder_sets(tmp_path, "sets.csv", set_column="person")
    (tmp_path / "sets.csv").write_text("person,emotion\np1,jubilant\n")
    with pytest.raises(ValueError, match="line 2: emotion 'jubilant'"):
        generic.from_folder_sets(tmp_path, "sets.csv", set_column="person")
    (tmp_path / "sets.csv").write_text("person,emotion\np1,happy\n")
    with pytest.raises(FileNotFoundError, match="matches '\\*/\\*.png'"):
        generic.from_folder_sets(tmp_path, "sets.csv", set_column="person", image_glob="*/*.png")


# --- FER2013 CSV --------------------------------------------------------------------------


@pytest.fixture
def fer2013_root(tmp_path: Path) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 48 * 48), dtype=np.uint8)
    pd.DataFrame(
        {
            "emotion": [3, 0, 4, 6, 3],
            "pixels": [" ".join(map(str, row)) for row in pixels],
            "Usage": ["Training", "Training", "PublicTest", "PrivateTest", "PrivateTest"],
        }
    ).to_csv(tmp_path / "fer2013.csv", index=False)
    header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,"
    (tmp_path / "fer2013new.csv").write_text(
        header
        + "unknown,NF\n"
        + "Training,fer0000000.png,0,9,0,0,0,1,0,0,0,0\n"  # happiness
        + "Training,,0,0,0,0,0,0,0,0,0,10\n"  # not a face: no image name
        # As in the official file, names after a nameless row lag the row number.
        + "PublicTest,fer0000001.png,4,0,0,4,2,0,0,0,0,0\n"  # no majority
        + "PrivateTest,fer0000002.png,1,0,0,0,0,0,0,0,2,7\n"  # majority not face
        + "PrivateTest,fer0000003.png,3,0,0,0,6,1,0,0,0,0\n"  # anger
    )
    return tmp_path, pixels


def test_fer2013_pixels_round_trip_and_majority_labels(
    fer2013_root: tuple[Path, np.ndarray],
) -> None:
    root, pixels = fer2013_root
    manifest, report = fer2013.build_manifest(root)
    _assert_manifest(manifest)
    assert report == {
        "rows_without_face": 1,
        "duplicate_image_names": 0,
        "usage_disagreements": 0,
        "images": 4,
    }
    assert manifest["image_id"].tolist() == ["fer0000000", "fer0000001", "fer0000002", "fer0000003"]
    assert manifest["source_path"].tolist() == [f"fer2013.csv#{row}" for row in (0, 2, 3, 4)]
    assert manifest["split"].tolist() == ["train", "valid", "test", "test"]
    assert manifest["emotion"].tolist() == ["happiness", None, None, "anger"]
    assert manifest["label_status"].tolist() == ["ok", "no_majority", "majority_not_face", "ok"]
    assert manifest.loc[0, "emotion_votes"].tolist() == [0, 9, 0, 0, 0, 1, 0, 0, 0, 0]
    for image, row in zip(manifest["image"], (0, 2, 3, 4), strict=True):
        decoded = Image.open(io.BytesIO(image))
        assert decoded.format == "PNG" and decoded.mode == "L" and decoded.size == (48, 48)
        np.testing.assert_array_equal(np.asarray(decoded), pixels[row].reshape(48, 48))


def test_fer2013_input_errors(fer2013_root: tuple[Path, np.ndarray]) -> None:
    root, _ = fer2013_root
    with pytest.raises(ValueError, match="expected 2304 values in 0-255, found 3"):
        fer2013.pixels_to_png("1 2 3", where="row 7")
    with pytest.raises(ValueError, match="found 2304 in 0-256"):
        fer2013.pixels_to_png(" ".join(["256"] + ["0"] * 2303))
    labels = (root / "fer2013new.csv").read_text().splitlines()
    (root / "fer2013new.csv").write_text("\n".join(labels[:-1]) + "\n")
    with pytest.raises(ValueError, match="has 4 rows but .*fer2013.csv has 5"):
        fer2013.build_manifest(root)
    (root / "fer2013.csv").unlink()
    with pytest.raises(FileNotFoundError, match="fer2013.csv is missing.*datasets.ferplus.path"):
        fer2013.build_manifest(root)
