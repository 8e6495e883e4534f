"""Bringing your own dataset: layouts, attributes, CSV dialects, split checks, user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from fairfer.config_checks import attribute_names, coerce_strings, config_error
from fairfer.datasets import generic
from fairfer.datasets.attributes import bin_labels, normalize_attribute
from fairfer.datasets.checks import ABSENT_FROM_TRAIN, check_splits
from fairfer.errors import DatasetError, UserError
from fairfer.schemas import ATTRIBUTE_CLASSES, extra_attributes_of, publish_manifest

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def _image(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value, value, value)).save(path)


# --- attributes ---------------------------------------------------------------------------


def test_ages_in_years_are_binned_at_fairface_groups():
    values = pd.Series(["1", "9", "10", "35", "70", "88", None, "-1"])
    binned, report = normalize_attribute(
        values, attribute="age", edges=[0, 3, 10, 20, 30, 40, 50, 60, 70]
    )
    assert binned.tolist() == ["0-2", "3-9", "10-19", "30-39", "more than 70", "more than 70"] + [
        None,
        None,
    ]
    assert report["binned"] and report["below_first_edge"] == 1
    assert bin_labels([0, 18, 65], attribute="age") == ["0-17", "18-64", ">=65"]
    assert bin_labels([0, 0.5], attribute="score") == ["0-0.5", ">=0.5"]


def test_given_labels_join_fairface_vocabulary_and_user_aliases():
    gender, report = normalize_attribute(
        pd.Series(["FEMALE", "male", "f", "M", "woman", None]), attribute="gender"
    )
    assert gender.tolist() == ["Female", "Male", "Female", "Male", "Female", None]
    assert report["mapped"] == 5
    race, report = normalize_attribute(
        pd.Series(["east_asian", "Hispanic", "Martian"]),
        attribute="race",
        aliases={"martian": "Middle Eastern"},
    )
    assert race.tolist() == ["East Asian", "Latino_Hispanic", "Middle Eastern"]
    country, report = normalize_attribute(
        pd.Series(["ES", "JP"]), attribute="country", aliases={"ES": "Spain"}
    )
    assert country.tolist() == ["Spain", "JP"] and "outside_vocabulary" not in report
    # Numbers without bin edges stay values (with a warning when they are many).
    years, report = normalize_attribute(pd.Series([str(a) for a in range(20)]), attribute="year")
    assert report["unbinned_numeric_values"] == 20 and years.iloc[3] == "3"


def test_attribute_names_flatten_intersections():
    assert attribute_names(["race", ["race", "country"], "age"]) == ["race", "country", "age"]


# --- layouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("with_splits", [True, False])
def test_class_folders(tmp_path, with_splits):
    names = {"happy": "happiness", "Surprised": "surprise", "sad": "sadness"}
    splits = ["train", "val", "test"] if with_splits else [""]
    for split in splits:
        for folder in names:
            for subject in range(4):
                _image(tmp_path / split / folder / f"S{subject:03d}_001_{folder}.png")
    _image(tmp_path / (splits[0] or ".") / "stray.png")
    manifest, report = generic.from_class_folders(tmp_path, subject_pattern=r"^(S\d+)_", seed=1)
    assert report["split_level"] is with_splits
    assert len(manifest) == len(splits) * 12 and report["files_outside_class_folders"] == 1
    assert set(manifest["emotion"]) == set(names.values())
    assert set(manifest["subject_id"]) == {"S000", "S001", "S002", "S003"}
    if with_splits:
        assert (
            manifest["split"]
            == manifest["source_path"].str.split("/").str[0].replace({"val": "valid"})
        ).all()
    else:
        # Drawn per subject: a subject's images never straddle splits.
        assert (manifest.groupby("subject_id")["split"].nunique() == 1).all()


def test_class_folders_errors_name_the_fix(tmp_path):
    _image(tmp_path / "train" / "joyful" / "a.png")
    with pytest.raises(DatasetError, match=r"\['joyful'\].*emotion_aliases"):
        generic.from_class_folders(tmp_path)
    manifest, _ = generic.from_class_folders(tmp_path, emotion_aliases={"joyful": "happiness"})
    assert manifest["emotion"].tolist() == ["happiness"]
    with pytest.raises(DatasetError, match="split_level is yes.*not split names"):
        generic.from_class_folders(tmp_path / "train", split_level="yes")
    # A custom vocabulary: the dataset's own classes.
    _image(tmp_path / "train" / "calm" / "b.png")
    manifest, _ = generic.from_class_folders(
        tmp_path, emotion_vocabulary=("calm", "happiness"), emotion_aliases={"joyful": "happiness"}
    )
    assert sorted(manifest["emotion"]) == ["calm", "happiness"]


def test_folder_sets_with_emotions_in_file_names_and_a_country(tmp_path):
    for set_id in ("0001", "0002"):
        for emotion in ("Happy", "Sad", "Surprised"):
            _image(tmp_path / "images" / set_id / f"{emotion}.jpg")
    (tmp_path / "emotions.csv").write_text(
        "\ufeffset_id;gender;age;country\n0001;FEMALE;34;Spain\n0002;MALE;71;Japan\n"
    )
    manifest, report = generic.from_folder_sets(
        tmp_path,
        "emotions.csv",
        emotion_from="filename",
        extra_attributes=["country"],
        binning={"age": [0, 3, 10, 20, 30, 40, 50, 60, 70]},
    )
    rows = manifest.set_index("image_id")
    assert rows.loc["images/0001/Surprised", "emotion"] == "surprise"
    assert rows.loc["images/0001/Happy", ["gender", "age", "country"]].tolist() == [
        "Female",
        "30-39",
        "Spain",
    ]
    assert rows.loc["images/0002/Sad", "age"] == "more than 70"
    assert list(manifest.columns[-1:]) == ["country"]
    with pytest.raises(DatasetError, match=r"names \['skin_tone'\].*its columns"):
        generic.from_folder_sets(
            tmp_path, "emotions.csv", emotion_from="filename", extra_attributes=["skin_tone"]
        )
    _image(tmp_path / "images" / "0001" / "notes.jpg")
    with pytest.raises(DatasetError, match=r"\['notes'\].*emotion_aliases"):
        generic.from_folder_sets(tmp_path, "emotions.csv", emotion_from="filename")


def test_folder_sets_pointed_at_class_folders_names_the_layout(tmp_path):
    for emotion in ("happy", "sad", "angry"):
        _image(tmp_path / "images" / emotion / "1.jpg")
    with pytest.raises(DatasetError, match="class-folders layout.*format to class_folders"):
        generic.from_folder_sets(tmp_path, "metadata.csv")


@pytest.mark.parametrize("separator", [",", ";", "\t"])
@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_csv_dialects_are_sniffed(tmp_path, separator, bom):
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "b.jpg")
    rows = [["path", "emotion", "gender"], ["a.jpg", "happy", "f"], ["b.jpg", "sad", "m"]]
    (tmp_path / "manifest.csv").write_text(bom + "\n".join(separator.join(r) for r in rows))
    manifest, _ = generic.build_manifest(tmp_path)
    assert manifest["emotion"].tolist() == ["happiness", "sadness"]
    assert manifest["gender"].tolist() == ["Female", "Male"]


def test_column_hints_name_the_real_cause(tmp_path):
    (tmp_path / "manifest.csv").write_text('"path;emotion"\n"a.jpg;happy"\n')
    with pytest.raises(DatasetError, match="read as one column"):
        generic.build_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("paths,emotion\na.jpg,happy\n")
    with pytest.raises(DatasetError, match="Did you mean 'paths' for 'path'"):
        generic.build_manifest(tmp_path)


def test_missing_files_are_rejects_and_rows_reconcile(tmp_path):
    _image(tmp_path / "a.jpg")
    (tmp_path / "manifest.csv").write_text(
        "path,emotion,country\na.jpg,happy,Spain\ngone.jpg,sad,Japan\n"
    )
    manifest, report = generic.build_manifest(tmp_path, extra_attributes=["country"])
    out = tmp_path / "out"
    published = publish_manifest(
        manifest,
        tmp_path,
        out / "m.parquet",
        report,
        out / "r.json",
        rejects_path=out / "rejects.parquet",
        extra_attributes=["country"],
    )
    assert published["rows_in"] == 2 and published["rows"] == 1
    assert published["rejected"] == {"missing_file": 1}
    assert extra_attributes_of(out / "m.parquet") == ["country"]
    assert pd.read_parquet(out / "m.parquet")["country"].tolist() == ["Spain"]


# --- split checks -------------------------------------------------------------------------


def _manifest(rows):
    return pd.DataFrame(rows, columns=["image_id", "split", "emotion", "country"]).assign(
        label_status="ok"
    )


def test_a_class_absent_from_train_is_dropped_or_fails():
    rows = [(f"t{i}", "train", "happiness", "Spain") for i in range(3)]
    rows += [("v0", "valid", "contempt", "Spain"), ("v1", "valid", "happiness", "Japan")]
    rows += [("x0", "test", "happiness", "Spain")]
    manifest, report = check_splits(
        _manifest(rows), dataset="mine", attributes=["country"], min_group_size=2
    )
    assert report["classes_absent_from_train"] == ["contempt"] and report["rows_dropped"] == 1
    assert manifest.set_index("image_id").loc["v0", "label_status"] == ABSENT_FROM_TRAIN
    # Spain's only valid image was the dropped contempt one.
    assert report["groups_absent_from_split"] == {
        "country": {"Japan": ["train", "test"], "Spain": ["valid"]}
    }
    assert report["small_test_groups"] == {"country": {"Japan": 0, "Spain": 1}}
    assert report["classes_absent_from_test"] == []
    with pytest.raises(DatasetError, match=r"\['contempt'\].*class_absent_from_train to drop"):
        check_splits(_manifest(rows), dataset="mine", class_absent_from_train="fail")


# --- configuration ------------------------------------------------------------------------


def test_strings_from_the_command_line_take_the_schema_types():
    config = {
        "fairness": {"min_group_size": "12", "uncertainty": {"draws": "20", "level": "0.9"}},
        "training": {"seeds": ["0", "1"], "mixed_precision": "false"},
        "datasets": {"generic": {"subject_pattern": "null", "path": "123"}},
    }
    coerced = coerce_strings(config, SCHEMA)
    assert coerced["fairness"] == {"min_group_size": 12, "uncertainty": {"draws": 20, "level": 0.9}}
    assert coerced["training"] == {"seeds": [0, 1], "mixed_precision": False}
    # Where a string is allowed it stays one.
    assert coerced["datasets"]["generic"] == {"subject_pattern": "null", "path": "123"}


def test_config_errors_are_one_paragraph():
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    assert config_error(config, SCHEMA, where="schema.yaml") is None
    config["fairness"]["min_group_size"] = 0
    message = config_error(config, SCHEMA, where="schema.yaml")
    assert message.startswith("Config key fairness.min_group_size: found 0; allowed: a number >=")
    assert "\n" not in message and len(message) < 600
    config["fairness"]["min_group_size"] = 30
    config["datasets"]["generic"]["formt"] = "csv"
    message = config_error(config, SCHEMA, where="schema.yaml")
    assert "unknown key 'formt' (did you mean 'format'?)" in message


def test_user_errors_print_one_paragraph_and_log_their_traceback(tmp_path):
    log = tmp_path / "rule.log"
    script = (
        "from fairfer.logs import configure_logging\n"
        "from fairfer.errors import DatasetError\n"
        f"configure_logging({str(log)!r})\n"
        "raise DatasetError('data/x.csv: column emotion is missing. Add it.')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == "fairfer: data/x.csv: column emotion is missing. Add it."
    assert "Traceback" in log.read_text()
    assert issubclass(DatasetError, UserError) and issubclass(UserError, ValueError)


def test_group_labels_schema_carries_dataset_attributes():
    from fairfer.schemas import group_labels_schema, predictions_schema

    schema = group_labels_schema(["country"])
    assert {"country", "country_source"} <= set(schema.names)
    assert "country_probabilities" not in schema.names
    assert json.loads(schema.metadata[b"extra_attributes"]) == ["country"]
    assert "country" in predictions_schema(extra_attributes=["country"]).names
    assert set(ATTRIBUTE_CLASSES) <= set(schema.names)
