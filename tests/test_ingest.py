"""FER+ and FairFace adapters on tiny layouts built by the tests."""

import csv
import io

import pandas as pd
import pytest
from PIL import Image

from fairfer.datasets import fairface, ferplus
from fairfer.schemas import FERPLUS_VOTE_COLUMNS, MANIFEST, read_checked, write_parquet


@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        ([10, 0, 0, 0, 0, 0, 0, 0, 0, 0], ("neutral", "ok")),
        ([6, 0, 0, 1, 3, 0, 0, 0, 0, 0], ("neutral", "ok")),  # the lone sadness vote is dropped
        ([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], (None, "no_majority")),
        ([4, 4, 0, 0, 0, 0, 0, 0, 2, 0], (None, "no_majority")),
        ([0, 0, 0, 0, 0, 0, 0, 0, 8, 2], (None, "majority_unknown")),
        ([1, 0, 0, 0, 0, 0, 0, 0, 0, 9], (None, "majority_not_face")),
        ([0] * 10, (None, "no_majority")),
        ([0, 0, 0, 0, 0, 0, 0, 6, 0, 1], ("contempt", "ok")),
    ],
)
def test_majority_label_follows_the_ferplus_rules(votes, expected):
    assert ferplus.majority_label(votes) == expected


def test_vote_distribution_drops_unknown_and_not_face():
    distribution = ferplus.vote_distribution([5, 5, 0, 0, 0, 0, 0, 0, 3, 2])
    assert distribution[:2].tolist() == [0.5, 0.5]
    assert distribution.sum() == pytest.approx(1.0)


def png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (48, 48), value).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def ferplus_root(tmp_path):
    official = [["Usage", "Image name", *FERPLUS_VOTE_COLUMNS[:-1], "NF"]]
    for split, folder in ferplus.SPLIT_FOLDERS.items():
        usage = {v: k for k, v in ferplus.USAGE_SPLITS.items()}[split]
        (tmp_path / folder).mkdir()
        rows = []
        for index in range(3):
            name = f"fer{split}{index}.png"
            (tmp_path / folder / name).write_bytes(png_bytes(index * 40))
            votes = [10 - index * 5, index * 5, 0, 0, 0, 0, 0, 0, 0, 0]
            rows.append([name, "(0, 0, 48, 48)", *votes])
            official.append([usage, name, *votes])
        with open(tmp_path / folder / "label.csv", "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
    official.append(["Training", "", *[0] * 9, 10])  # a row that is not in FER+
    with open(tmp_path / "fer2013new.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(official)
    return tmp_path


def test_ferplus_manifest_from_the_generated_layout(ferplus_root):
    manifest, report = ferplus.build_manifest(ferplus_root)
    assert len(manifest) == 9
    assert set(manifest["split"]) == {"train", "valid", "test"}
    assert report["rows_with_disagreeing_votes"] == 0
    # 10/0 -> neutral, 5/5 -> no majority, 0/10 -> happiness
    assert manifest.groupby("label_status").size().to_dict() == {"no_majority": 3, "ok": 6}
    manifest["image"] = [(ferplus_root / p).read_bytes() for p in manifest["source_path"]]
    assert write_parquet(manifest, ferplus_root / "m.parquet", MANIFEST).exists()
    assert read_checked(ferplus_root / "m.parquet", MANIFEST).num_rows == 9


def test_ferplus_sampling_is_seeded(ferplus_root):
    first, _ = ferplus.build_manifest(ferplus_root, sample_per_split={"train": 2}, seed=3)
    second, _ = ferplus.build_manifest(ferplus_root, sample_per_split={"train": 2}, seed=3)
    assert (first["split"] == "train").sum() == 2
    assert first["image_id"].tolist() == second["image_id"].tolist()


def test_ferplus_missing_directory_names_the_config_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="datasets.ferplus.path"):
        ferplus.build_manifest(tmp_path / "absent")


def test_ferplus_label_file_with_wrong_columns_names_the_line(tmp_path):
    (tmp_path / "label.csv").write_text("a.png,box,1,2\n")
    with pytest.raises(ValueError, match=r"label.csv:1"):
        ferplus.read_label_csv(tmp_path / "label.csv")


def test_fairface_manifest_counts_missing_images(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "1.jpg").write_bytes(b"jpeg")
    labels = tmp_path / "train.csv"
    pd.DataFrame(
        {
            "file": ["train/1.jpg", "train/2.jpg"],
            "age": ["20-29", "0-2"],
            "gender": ["Male", "Female"],
            "race": ["Black", "Indian"],
            "service_test": ["TRUE", "FALSE"],
        }
    ).to_csv(labels, index=False)
    manifest, report = fairface.build_manifest(tmp_path, {"train": labels})
    # Both kept: publish_manifest rejects the missing one as missing_file.
    assert manifest["image_id"].tolist() == ["train/1", "train/2"]
    assert report == {"labelled_images_missing_from_archive": 1}


def test_fairface_rejects_unknown_vocabulary(tmp_path):
    labels = tmp_path / "val.csv"
    labels.write_text("file,age,gender,race,service_test\nval/1.jpg,20-29,Male,Martian,TRUE\n")
    with pytest.raises(ValueError, match="Martian"):
        fairface.read_labels(labels, split="val")


def test_ferplus_votes_come_from_the_official_file_unless_asked_otherwise(ferplus_root):
    official = ferplus_root / "fer2013new.csv"
    lines = official.read_text().splitlines()
    # The first training image: the official file now says happiness, the folder neutral.
    fields = lines[1].split(",")
    lines[1] = ",".join([*fields[:2], "0", "10", *fields[4:]])
    # A duplicated name: the later row describes the PNG on disk.
    lines.append(",".join([*fields[:2], "0", "0", "10", *fields[5:]]))
    official.write_text("\n".join(lines) + "\n")
    by_official, report = ferplus.build_manifest(ferplus_root)
    by_folder, _ = ferplus.build_manifest(ferplus_root, vote_source="folder")
    name = fields[1].removesuffix(".png")
    assert by_official.set_index("image_id").loc[name, "emotion"] == "surprise"
    assert by_folder.set_index("image_id").loc[name, "emotion"] == "neutral"
    assert report["rows_with_disagreeing_votes"] == 1
    assert by_official["image_id"].is_unique
