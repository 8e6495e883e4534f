"""Ingest rule scripts on datasets built in their documented layouts (partly from real data)."""

import io
import zipfile

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from dataset_fixtures import (
    DATA,
    FAIRFACE_ZIP,
    ROOT,
    build_fer2013_csv,
    build_generic_csv,
    build_utkface_folder,
)
from PIL import Image

from fairfer.datasets import ferplus
from fairfer.group_labels.classifiers import prefer_ground_truth
from fairfer.rule_inputs import rule_script
from fairfer.schemas import FERPLUS_VOTE_COLUMNS, MANIFEST, read_checked

download_fairface = rule_script("download_fairface").download
ingest_fairface = rule_script("ingest_fairface").ingest
ingest_ferplus = rule_script("ingest_ferplus").ingest
ingest_generic = rule_script("ingest_generic").ingest
ingest_utkface = rule_script("ingest_utkface").ingest

CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
needs_real_data = pytest.mark.skipif(
    not (DATA / "ferplus").is_dir() or not (DATA / "fairface").is_dir(),
    reason=f"real FER+ / FairFace not found at {DATA}",
)


def read_manifest(path) -> pd.DataFrame:
    return read_checked(path, MANIFEST).to_pandas()


@pytest.fixture(scope="module")
def fer2013_copy(tmp_path_factory):
    return build_fer2013_csv(DATA / "ferplus", tmp_path_factory.mktemp("fer2013"), rows=300)


@needs_real_data
def test_ferplus_fer2013_csv_layout_matches_the_png_folders(fer2013_copy, tmp_path):
    report = ingest_ferplus(
        fer2013_copy,
        tmp_path / "ferplus.parquet",
        tmp_path / "report.json",
        tmp_path / "rejects.parquet",
        layout="fer2013_csv",
        sample=None,
        seed=0,
        vote_source="official",
    )
    from_csv = read_manifest(tmp_path / "ferplus.parquet")
    assert report["layout"] == "fer2013_csv" and report["rows"] == len(from_csv) > 250
    from_pngs, _ = ferplus.build_manifest(DATA / "ferplus")
    from_pngs = from_pngs.set_index("image_id").loc[from_csv["image_id"]]
    # The 300 rows hold a few official names without a PNG; the rest must agree exactly.
    columns = ["split", "emotion", "label_status"]
    pd.testing.assert_frame_equal(
        from_csv.set_index("image_id")[columns], from_pngs[columns], check_names=False
    )
    # Both layouts keep the majority label and the full vote distribution.
    for frame in (from_csv, from_pngs):
        votes = np.stack(frame["emotion_votes"].to_numpy())
        assert votes.shape == (len(from_csv), len(FERPLUS_VOTE_COLUMNS))
    np.testing.assert_array_equal(
        np.stack(from_csv["emotion_votes"]), np.stack(from_pngs["emotion_votes"])
    )
    assert set(from_csv.loc[from_csv["label_status"] == "ok", "emotion"]) <= set(ferplus.EMOTIONS)
    for row in from_csv.sample(n=20, random_state=0).itertuples():
        decoded = np.asarray(Image.open(io.BytesIO(row.image)))
        original = np.asarray(
            Image.open(DATA / "ferplus" / from_pngs.at[row.image_id, "source_path"])
        )
        np.testing.assert_array_equal(decoded, original)


@needs_real_data
def test_fer2013_votes_csv_can_live_elsewhere(fer2013_copy, tmp_path):
    pixels_only = tmp_path / "kaggle"
    pixels_only.mkdir()
    (pixels_only / "fer2013.csv").symlink_to(fer2013_copy / "fer2013.csv")
    with pytest.raises(FileNotFoundError, match="datasets.ferplus.votes_csv"):
        ingest_ferplus(
            pixels_only,
            tmp_path / "m.parquet",
            tmp_path / "r.json",
            tmp_path / "rejects.parquet",
            layout="fer2013_csv",
            sample={"train": 10},
            seed=0,
            vote_source="official",
        )
    ingest_ferplus(
        pixels_only,
        tmp_path / "m.parquet",
        tmp_path / "r.json",
        tmp_path / "rejects.parquet",
        layout="fer2013_csv",
        sample={"train": 10},
        seed=0,
        vote_source="official",
        votes_csv=fer2013_copy / "fer2013new.csv",
    )
    assert (read_manifest(tmp_path / "m.parquet")["split"] == "train").sum() == 10


@needs_real_data
def test_generic_csv_ingest_keeps_its_demographics_as_ground_truth(tmp_path):
    build_generic_csv(DATA / "fairface", tmp_path / "generic", n=60)
    settings = {**CONFIG["datasets"]["generic"], "emotion_aliases": {"fearful": "fear"}}
    report = ingest_generic(
        tmp_path / "generic",
        tmp_path / "generic.parquet",
        tmp_path / "r.json",
        tmp_path / "rejects.parquet",
        settings=settings,
        seed=0,
    )
    manifest = read_manifest(tmp_path / "generic.parquet")
    assert report["rows"] == 60 and set(manifest["split"]) == {"train", "valid", "test"}
    assert set(manifest["emotion"]) <= {
        "happiness",
        "neutral",
        "sadness",
        "anger",
        "surprise",
        "fear",
        "disgust",
    }
    assert manifest["race"].notna().all() and manifest["age"].isna().all()
    truth = pd.read_csv(tmp_path / "generic" / "manifest.csv").set_index("path")
    assert (manifest.set_index("source_path")["race"] == truth["race"]).all()
    inferred = manifest[["image_id"]].assign(
        **{
            f"{a}_{c}": v
            for a in ("race", "gender", "age")
            for c, v in (("source", "inferred"), ("confidence", 0.9), ("abstained", False))
        },
        race="White",
        gender="Male",
        age="20-29",
    )
    labels, used = prefer_ground_truth(inferred, manifest, ["race", "gender", "age"])
    assert used == ["race", "gender"]
    assert set(labels["race_source"]) == {"ground_truth"} and set(labels["age_source"]) == {
        "inferred"
    }
    assert (labels.set_index("image_id")["race"] == manifest.set_index("image_id")["race"]).all()


def test_generic_folder_sets_with_given_splits_carve_validation(tmp_path):
    for set_id in ("s1", "s2", "s3", "s4"):
        for index in range(10):
            path = tmp_path / "images" / set_id / f"{index}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (64, 64), (index * 20, 30, 30)).save(path)
    pd.DataFrame(
        {
            "set_id": ["s1", "s2", "s3", "s4"],
            "emotion": ["happy", "sad", "happy", "surprised"],
            "gender": ["Female", "Male", "Male", "Female"],
            "split": ["train", "train", "test", "train"],
        }
    ).to_csv(tmp_path / "metadata.csv", index=False)
    settings = {**CONFIG["datasets"]["generic"], "format": "folder_sets", "valid_fraction": 0.2}
    report = ingest_generic(
        tmp_path,
        tmp_path / "g.parquet",
        tmp_path / "r.json",
        tmp_path / "rejects.parquet",
        settings=settings,
        seed=1,
    )
    manifest = read_manifest(tmp_path / "g.parquet")
    assert report["valid_split_carved_from_train"] == 1
    assert manifest["split"].value_counts().to_dict() == {"train": 24, "test": 10, "valid": 6}
    assert set(manifest.loc[manifest["image_id"].str.startswith("images/s3"), "split"]) == {"test"}
    pd.DataFrame({"set_id": ["s1"], "emotion": ["happy"], "split": ["train"]}).to_csv(
        tmp_path / "metadata.csv", index=False
    )
    with pytest.raises(ValueError, match=r"no \['test'\] images"):
        ingest_generic(
            tmp_path,
            tmp_path / "g.parquet",
            tmp_path / "r.json",
            tmp_path / "rejects.parquet",
            settings=settings,
            seed=1,
        )


@needs_real_data
def test_utkface_ingest_reads_labels_from_renamed_fairface_faces(tmp_path):
    build_utkface_folder(DATA / "fairface", tmp_path / "utk", n=40)
    (tmp_path / "utk" / "UTKFace" / "61_3_20170109142408075.jpg.chip.jpg").write_bytes(b"x")
    report = ingest_utkface(
        tmp_path / "utk",
        tmp_path / "utkface.parquet",
        tmp_path / "r.json",
        tmp_path / "rejects.parquet",
        image_glob=CONFIG["datasets"]["utkface"]["image_glob"],
        sample=None,
        seed=0,
    )
    manifest = read_manifest(tmp_path / "utkface.parquet")
    assert report["malformed_file_names"] == 1 and len(manifest) == 40
    assert set(manifest["split"]) == {"test"}  # an evaluation-only reference
    assert set(manifest["race"]) <= {"White", "Black", "Asian", "Indian", "Others"}
    fairface = pd.read_csv(DATA / "fairface" / "fairface_label_val.csv").sample(
        n=40, random_state=0
    )
    # Ages chosen inside each FairFace bin come back as that bin.
    assert sorted(manifest["age"]) == sorted(fairface["age"])
    assert sorted(manifest["gender"]) == sorted(fairface["gender"])


@needs_real_data
def test_fairface_margin125_archive_is_accepted(tmp_path):
    """The 1.25-margin release has the same train/ and val/ layout and the same label files."""
    labels = {
        split: pd.read_csv(DATA / "fairface" / f"fairface_label_{split}.csv").head(6)
        for split in ("train", "val")
    }
    archive = tmp_path / "fairface-img-margin125-trainval.zip"
    with (
        zipfile.ZipFile(DATA / "fairface" / FAIRFACE_ZIP) as source,
        zipfile.ZipFile(archive, "w") as margin125,
    ):
        for frame in labels.values():
            for name in frame["file"]:
                # Margin 1.25 images are 448x448: the same face with more background.
                image = Image.open(io.BytesIO(source.read(name))).resize((448, 448))
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG")
                margin125.writestr(name, buffer.getvalue())
    label_paths = {}
    for split, frame in labels.items():
        label_paths[split] = tmp_path / f"fairface_label_{split}.csv"
        frame.to_csv(label_paths[split], index=False)

    download_fairface(str(archive), None, tmp_path / "fairface.zip", tmp_path / "images")
    ingest_fairface(
        tmp_path / "images",
        label_paths,
        tmp_path / "fairface.parquet",
        tmp_path / "r.json",
        tmp_path / "rejects.parquet",
        sample=None,
        seed=0,
    )
    manifest = read_manifest(tmp_path / "fairface.parquet")
    assert len(manifest) == 12 and set(manifest["split"]) == {"train", "valid"}
    assert Image.open(io.BytesIO(manifest["image"].iloc[0])).size == (448, 448)
    assert pq.read_schema(tmp_path / "fairface.parquet").names == MANIFEST.names
