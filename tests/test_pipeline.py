"""End-to-end run of the whole DAG on a small real sample (``pytest -m pipeline``).

The run uses ``config/ci.yaml`` (a seeded sample of ``../shared/data``) in a scratch copy of
the workflow, then checks properties of every stage's output, the dry-run after completion,
the targeted rerun after a strategy parameter changes, and the errors for bad input.
"""

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from pipeline_support import DATA, scratch_workflow, snakemake

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}"),
]


@pytest.fixture(scope="module")
def run(ci_run) -> Path:
    """A finished small FER+ run in a scratch copy of the workflow (shared by the session)."""
    return ci_run


@pytest.fixture(scope="module")
def rafdb_run(tmp_path_factory, run) -> Path:
    """The same DAG with RAF-DB (official layout, with attribute files) as emotion dataset.

    FairFace's alignment and embeddings are reused from the FER+ run (copied with their
    timestamps), so only the RAF-DB side and everything downstream is computed.
    """
    from rafdb_layout import build_rafdb_layout

    workdir = scratch_workflow(tmp_path_factory.mktemp("pipeline_rafdb"))
    build_rafdb_layout(DATA / "fairface", workdir / "data" / "rafdb", n_train=220, n_test=80)
    for reused in (
        "resources",
        "results/manifests",
        "results/aligned/fairface",
        "results/embeddings/fairface",
    ):
        shutil.copytree(run / reused, workdir / reused, dirs_exist_ok=True)
    for stale in (workdir / "results/manifests").glob("ferplus*"):
        stale.unlink()
    (workdir / "config" / "rafdb.yaml").write_text("emotion_dataset: rafdb\n")
    snakemake(workdir, "--configfile", "config/ci.yaml", "config/rafdb.yaml")
    return workdir


@pytest.fixture(scope="module")
def generic_run(tmp_path_factory, run) -> Path:
    """The DAG on a generic CSV dataset, with UTKFace as external reference.

    Both are built from FairFace val faces: the CSV gives race and gender (not age) and random
    emotions; UTKFace's layout renames faces to its [age]_[gender]_[race]_[date] names.
    FairFace's side is reused from the FER+ run, as for RAF-DB.
    """
    from dataset_fixtures import build_generic_csv, build_utkface_folder

    workdir = scratch_workflow(tmp_path_factory.mktemp("pipeline_generic"))
    build_generic_csv(DATA / "fairface", workdir / "data" / "generic", n=240, seed=1)
    build_utkface_folder(DATA / "fairface", workdir / "data" / "utkface", n=120, seed=2)
    for reused in (
        "resources",
        "results/manifests",
        "results/aligned/fairface",
        "results/embeddings/fairface",
    ):
        shutil.copytree(run / reused, workdir / reused, dirs_exist_ok=True)
    for stale in (workdir / "results/manifests").glob("ferplus*"):
        stale.unlink()
    (workdir / "config" / "generic.yaml").write_text(
        "emotion_dataset: generic\nrace_matching:\n  external_references: [utkface]\n"
    )
    snakemake(workdir, "--configfile", "config/ci.yaml", "config/generic.yaml")
    return workdir


def read(workdir: Path, relative: str) -> pd.DataFrame:
    return pq.read_table(workdir / relative).to_pandas()


def test_every_stage_reconciles_with_the_manifests(run):
    config = yaml.safe_load((run / "config" / "ci.yaml").read_text())
    for dataset in ("ferplus", "fairface"):
        manifest = read(run, f"results/manifests/{dataset}.parquet")
        expected = sum(config["datasets"][dataset]["sample"].values())
        assert len(manifest) == expected
        assert manifest["image_id"].is_unique
        aligned = pd.concat(
            [read(run, f"results/aligned/{dataset}/shard-{s}.parquet") for s in range(2)]
        )
        assert sorted(aligned["image_id"]) == sorted(manifest["image_id"])
        embedded = pd.concat(
            [read(run, f"results/embeddings/{dataset}/shard-{s}.parquet") for s in range(2)]
        )
        rejected = (aligned["status"] == "rejected").sum()
        assert len(embedded) == len(manifest) - rejected
        assert len(embedded["embedding"].iloc[0]) == 128

    report = pd.read_csv(run / "results/faces/alignment_report.csv").set_index("dataset")
    assert report.loc["fairface", "detected_rate"] > 0.85
    assert (report["images"] == report[["detected", "fallback", "rejected"]].sum(axis=1)).all()


def test_race_matching_is_evaluated_and_labels_every_image(run):
    import json

    report = json.loads((run / "results/group_labels/classifier_report.json").read_text())
    assert report["random_weights"] is False
    race = report["attributes"]["race"]
    # Far above the 7-class majority rate (~0.2): the pretrained embeddings carry race signal.
    assert race["accuracy"] > 0.35
    assert 0 <= race["expected_calibration_error"] <= 1
    assert report["attributes"]["gender"]["accuracy"] > 0.65

    labels = read(run, "results/group_labels/ferplus.parquet")
    manifest = read(run, "results/manifests/ferplus.parquet")
    assert len(labels) == len(manifest)
    assert labels["race"].notna().all()
    assert set(labels["race_source"]) == {"inferred"}
    assert labels["race_confidence"].between(0, 1).all()


def test_predictions_and_fairness_tables(run):
    manifest = read(run, "results/manifests/ferplus.parquet")
    labelled_test = ((manifest["split"] == "test") & (manifest["label_status"] == "ok")).sum()
    comparison = read(run, "results/fairness/comparison.parquet")
    strategies = ["baseline", "reweighting", "augmentation"]
    assert sorted(comparison["strategy"].unique()) == sorted(strategies)
    for strategy in strategies:
        predictions = read(run, f"results/predictions/{strategy}.parquet")
        assert len(predictions) == labelled_test
        assert predictions["image_id"].is_unique
        groups = read(run, f"results/fairness/{strategy}/group_metrics.parquet")
        race_groups = groups[(groups["attribute"] == "race") & groups["known"]]
        assert len(race_groups) >= 3
        assert race_groups["count"].sum() == labelled_test
        assert groups["accuracy"].between(0, 1).all()
        disparities = read(run, f"results/fairness/{strategy}/class_disparities.parquet")
        assert len(disparities[disparities["attribute"] == "race"]) == 8
        assert disparities["demographic_parity_difference"].dropna().between(0, 1).all()
        for suffix in (".csv", ".md"):
            assert (run / f"results/fairness/{strategy}/summary{suffix}").stat().st_size > 0
        intervals = read(run, f"results/fairness/{strategy}/intervals.parquet")
        for method in ("bootstrap", "multiple_imputation"):
            bounds = intervals[[f"{method}_low", f"{method}_high"]].dropna()
            assert len(bounds) > 0
            assert (bounds[f"{method}_low"] <= bounds[f"{method}_high"]).all()
    assert comparison["overall_accuracy"].between(0, 1).all()
    assert set(comparison["attribute"]) == {"race", "gender", "age", "race x gender"}
    assert (comparison["label_source"] == "inferred").all()
    baseline = comparison[comparison["strategy"] == "baseline"]
    assert (baseline["overall_accuracy_delta"] == 0).all()


def test_complete_run_plans_nothing(run):
    result = snakemake(run, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_one_strategy_reruns_only_that_strategy(run):
    changed = run / "config" / "changed.yaml"
    changed.write_text("strategies:\n  reweighting:\n    groups: [race]\n    max_weight: 5.0\n")
    result = snakemake(run, "-n", "--configfile", "config/ci.yaml", "config/changed.yaml")
    planned = result.stdout
    assert "rule train_model:" in planned
    assert "wildcards: strategy=reweighting" in planned
    assert "strategy=baseline" not in planned
    assert "strategy=augmentation" not in planned
    for upstream in ("align_faces", "embed_faces", "match_race_labels", "augment_demographics"):
        assert f"rule {upstream}:" not in planned


def test_invalid_config_fails_before_any_job_naming_the_key(run):
    bad = run / "config" / "bad.yaml"
    bad.write_text("training:\n  epochs: -1\n")
    result = snakemake(run, "-n", "--configfile", "config/ci.yaml", "config/bad.yaml", check=False)
    assert result.returncode != 0
    assert "epochs" in result.stderr + result.stdout


def test_missing_dataset_names_the_path_and_the_fix(tmp_path, run):
    missing = run / "config" / "missing.yaml"
    missing.write_text(f"datasets:\n  ferplus:\n    path: {tmp_path}/nowhere\n")
    result = snakemake(
        run, "-n", "--configfile", "config/ci.yaml", "config/missing.yaml", check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{tmp_path}/nowhere" in output
    assert "datasets.ferplus.path" in output


def test_rafdb_is_a_first_class_emotion_dataset(rafdb_run):
    planned = snakemake(rafdb_run, "-n", "--configfile", "config/ci.yaml", "config/rafdb.yaml")
    assert "Nothing to be done" in planned.stdout + planned.stderr
    manifest = read(rafdb_run, "results/manifests/rafdb.parquet")
    assert set(manifest["split"]) == {"train", "valid", "test"}
    labels = read(rafdb_run, "results/group_labels/rafdb.parquet")
    assert len(labels) == len(manifest)
    assert set(labels["race_source"]) == {"ground_truth"}
    assert set(labels["race"]) == {"Caucasian", "African-American", "Asian"}
    test_rows = (manifest["split"] == "test").sum()
    for strategy in ("baseline", "reweighting", "augmentation"):
        predictions = read(rafdb_run, f"results/predictions/{strategy}.parquet")
        assert len(predictions) == test_rows
        assert "contempt" not in set(predictions["y_pred"])
    comparison = read(rafdb_run, "results/fairness/comparison.parquet")
    assert (comparison["label_source"] == "ground_truth").all()
    assert comparison["inferred_label_accuracy"].isna().all()
    race = comparison[(comparison["attribute"] == "race") & (comparison["strategy"] == "baseline")]
    assert race["n_groups"].item() == 3


def test_generic_dataset_with_utkface_as_external_reference(generic_run):
    import json

    manifest = read(generic_run, "results/manifests/generic.parquet")
    assert len(manifest) == 240 and set(manifest["split"]) == {"train", "valid", "test"}
    labels = read(generic_run, "results/group_labels/generic.parquet")
    # The CSV's race and gender are ground truth; its missing age is inferred.
    assert set(labels["race_source"]) == set(labels["gender_source"]) == {"ground_truth"}
    assert set(labels["age_source"]) == {"inferred"}
    comparison = read(generic_run, "results/fairness/comparison.parquet").set_index("attribute")
    assert set(comparison.loc["race", "label_source"]) == {"ground_truth"}
    assert set(comparison.loc["age", "label_source"]) == {"inferred"}
    test_rows = ((manifest["split"] == "test") & (manifest["label_status"] == "ok")).sum()
    assert len(read(generic_run, "results/predictions/baseline.parquet")) == test_rows

    report = json.loads((generic_run / "results/group_labels/classifier_report.json").read_text())
    utkface = report["external_evaluation"]["utkface"]
    assert utkface["n_images"] == 120 and utkface["n_embedded"] == 120
    race = utkface["attributes"]["race"]
    assert race["taxonomy"]["classes"] == ["White", "Black", "Asian", "Indian", "Others"]
    # Well above the 5-class majority rate: the FairFace classifier transfers.
    assert race["accuracy"] > 0.4 and 0 <= race["expected_calibration_error"] <= 1
    assert utkface["attributes"]["gender"]["accuracy"] > 0.65
    per_class = pd.read_csv(generic_run / "results/group_labels/classifier_per_class.csv")
    assert set(per_class["evaluated_on"]) == {"fairface_valid", "utkface"}
    alignment = pd.read_csv(generic_run / "results/faces/alignment_report.csv")
    assert {"generic", "fairface", "utkface"} <= set(alignment["dataset"])
