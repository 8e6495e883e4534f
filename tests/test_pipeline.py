"""End-to-end run of the whole DAG on a small real sample (``pytest -m pipeline``).

The run uses ``config/ci.yaml`` (a seeded sample of ``../shared/data``) in a scratch copy of
the workflow, then checks properties of every stage's output, the dry-run after completion,
the targeted rerun after a strategy parameter changes, and the errors for bad input.
"""

import io
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from dataset_fixtures import COUNTRIES
from PIL import Image
from pipeline_support import (
    DATA,
    SNAKEMAKE,
    comparable_bytes,
    reuse_fairface,
    scratch_workflow,
    snakemake,
)

from fairfer.config_checks import POSTPROCESS_STRATEGIES
from fairfer.schemas import ATTRIBUTE_CLASSES

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
    # FER+'s own files, and FairFace rendered like FER+ (this dataset is rendered its own way).
    for pattern in ("ferplus*", "fairface_domain*"):
        for stale in (workdir / "results/manifests").glob(pattern):
            stale.unlink()
    # One seed: the FER+ run already covers the aggregation over seeds.
    (workdir / "config" / "rafdb.yaml").write_text(
        "emotion_dataset: rafdb\ntraining:\n  seeds: [0]\n"
    )
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
    # FER+'s own files, and FairFace rendered like FER+ (this dataset is rendered its own way).
    for pattern in ("ferplus*", "fairface_domain*"):
        for stale in (workdir / "results/manifests").glob(pattern):
            stale.unlink()
    # Embeddings are recomputed (not reused): this run's classifiers read pooled, flip-averaged
    # features, which the FER+ run's embeddings files do not carry.
    shutil.rmtree(workdir / "results/embeddings")
    (workdir / "config" / "generic.yaml").write_text(
        "emotion_dataset: generic\nrace_matching:\n  external_references: [utkface]\n"
        "  features: pooled\n  flip_average: true\n"
    )
    snakemake(workdir, "--configfile", "config/ci.yaml", "config/generic.yaml")
    return workdir


#: A user's own dataset in the layout of a published bias-aware FER project: emotions in the
#: file names, a semicolon-separated emotions.csv with gender (FEMALE/MALE), age in years and
#: country; two strategies chosen by an overlay, one balancing the dataset's own attribute.
BYO_CONFIG = """emotion_dataset: generic
dataset_name: Emotion sets (fixture)
datasets:
  generic:
    format: folder_sets
    metadata_csv: emotions.csv
    emotion_from: filename
training:
  models: [embedding_mlp]
  strategies: [baseline, reweighting]
strategies:
  reweighting:
    groups: [country]
fairness:
  attributes: [race, gender, age, country, [gender, country]]
  min_group_size: 10
"""


@pytest.fixture(scope="module")
def byo_run(tmp_path_factory, run) -> Path:
    """The DAG on images/<set_id>/<Emotion>.jpg + emotions.csv (set_id, gender, age, country)
    built from FairFace val faces, with one corrupt image and one set without images."""
    from dataset_fixtures import build_emotion_named_sets

    workdir = scratch_workflow(tmp_path_factory.mktemp("pipeline_byo"))
    root = workdir / "data" / "generic"
    build_emotion_named_sets(DATA / "fairface", root, n_sets=90, seed=3, separator=";")
    (root / "images/0005/Sad.jpg").write_bytes(b"not a jpeg")
    with open(root / "emotions.csv", "a") as handle:
        handle.write("9999;MALE;40;Spain\n")
    reuse_fairface(run, workdir)
    (workdir / "config" / "byo.yaml").write_text(BYO_CONFIG)
    snakemake(workdir, "--configfile", "config/ci.yaml", "config/byo.yaml")
    return workdir


@pytest.fixture(scope="module")
def class_folders_run(tmp_path_factory, run, byo_run) -> Path:
    """train/val/test/<emotion>/S<subject>_... (CK+ names, Kaggle folder names) from real
    FER+ faces, one contempt image only in val; run through the fairness tables, and
    evaluated on FER+ test as a second dataset (cross-dataset evaluation)."""
    from dataset_fixtures import build_class_folders

    workdir = scratch_workflow(tmp_path_factory.mktemp("pipeline_class_folders"))
    build_class_folders(
        DATA / "ferplus",
        workdir / "data" / "generic",
        per_split={"train": 280, "val": 60, "test": 80},
        split_level=True,
        seed=4,
        contempt_only_in="val",
    )
    reuse_fairface(byo_run, workdir, rendered=True)
    # FER+ (the evaluation dataset) as the FER+ run ingested, aligned and embedded it.
    for relative in ("results/aligned/ferplus", "results/embeddings/ferplus"):
        shutil.copytree(run / relative, workdir / relative)
    for manifest in (run / "results/manifests").glob("ferplus*"):
        shutil.copy2(manifest, workdir / "results/manifests" / manifest.name)
    (workdir / "config" / "class_folders.yaml").write_text(
        "emotion_dataset: generic\ndatasets:\n  generic:\n    format: class_folders\n"
        '    subject_pattern: "^(S\\\\d+)_"\ntraining:\n  models: [embedding_mlp]\n'
        "  strategies: [baseline, group_dro]\nevaluation:\n  datasets: [ferplus]\n"
    )
    snakemake(
        workdir,
        "--configfile",
        "config/ci.yaml",
        "config/class_folders.yaml",
        # A flag between: --configfile would take the target for one more file.
        "--printshellcmds",
        "results/fairness/comparison.parquet",
        "results/evaluation/ferplus/comparison.parquet",
        "results/evaluation/ferplus/fairness/embedding_mlp/group_dro/seed-0/summary.parquet",
    )
    return workdir


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    """Snakemake in its own process group, so the test can kill it with all its jobs."""
    return subprocess.Popen(
        [*SNAKEMAKE, "--cores", "2", "--configfile", "config/ci.yaml", *args],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def survivors(workdir: Path, grace: float = 30.0) -> list[list[str]]:
    """Live processes working in ``workdir`` after ``grace`` seconds (zombies are dead)."""
    deadline = time.monotonic() + grace
    while True:
        alive = [
            p.info["cmdline"]
            for p in psutil.process_iter(["cmdline", "cwd", "status"])
            if p.info["status"] != psutil.STATUS_ZOMBIE
            and p.info["cwd"]
            and Path(p.info["cwd"]).is_relative_to(workdir)
        ]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def kill_when_running(
    workdir: Path, process: subprocess.Popen, job_logs: list[Path], sig: int
) -> Path:
    """Send ``sig`` to the whole process group as soon as one of ``job_logs`` exists.

    A rule script opens its log first thing, so the job is running when the signal lands. The
    signal goes at once: on a fast CI machine a CI-sized training job finished within 1.2 s
    of its log appearing, and a later kill missed it. Returns the log that appeared; fails if
    the run ends before any job of them starts.
    """
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        started = [log for log in job_logs if log.exists()]
        if started:
            os.killpg(process.pid, sig)
            process.wait(timeout=300)
            assert survivors(workdir) == [], "processes of the killed run survived"
            return started[0]
        assert process.poll() is None, f"the run ended (rc {process.returncode}) before {job_logs}"
        time.sleep(0.05)
    raise AssertionError(f"none of {job_logs} started in time")


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory, run) -> tuple[Path, dict[str, bool]]:
    """The FER+ side of ``run`` recomputed, killed during alignment and during training.

    FairFace's download, manifest, alignment and embeddings are copied from ``run`` with their
    timestamps (their code is the same as FER+'s; recomputing them would double the test's
    time). Snakemake is stopped with SIGTERM while a FER+ alignment job runs, restarted, then
    killed with SIGKILL (as by the out-of-memory killer) while a training job runs; after
    ``--unlock`` a run with ``--rerun-incomplete`` finishes. Returns the workdir and whether
    each kill left the interrupted job's output missing (that is, the job really was cut).
    """
    workdir = scratch_workflow(tmp_path_factory.mktemp("pipeline_interrupted"))
    for reused in ("resources", "results/aligned/fairface", "results/embeddings/fairface"):
        shutil.copytree(run / reused, workdir / reused)
    (workdir / "results/manifests").mkdir(parents=True)
    for manifest in (run / "results/manifests").glob("fairface*"):
        shutil.copy2(manifest, workdir / "results/manifests" / manifest.name)

    align_logs = [workdir / f"logs/align_faces/ferplus/shard-{s}.log" for s in range(2)]
    started = kill_when_running(workdir, start_snakemake(workdir), align_logs, signal.SIGTERM)
    shard = started.stem
    cut = {"align_faces": not (workdir / f"results/aligned/ferplus/{shard}.parquet").exists()}

    snakemake(workdir, "--unlock")
    strategies = yaml.safe_load((workdir / "config/config.yaml").read_text())["strategies"]
    train_logs = [
        workdir / f"logs/train_model/compact_cnn/{strategy}/seed-{seed}.log"
        for strategy in strategies
        for seed in (0, 1)
    ]
    started = kill_when_running(
        workdir, start_snakemake(workdir, "--rerun-incomplete"), train_logs, signal.SIGKILL
    )
    job = started.relative_to(workdir / "logs/train_model").with_suffix("")
    cut["train_model"] = not (workdir / "results/models" / job / "model.pt").exists()

    snakemake(workdir, "--unlock")
    snakemake(workdir, "--rerun-incomplete")
    return workdir, cut


def same_content(first: Path, second: Path) -> bool:
    """Byte equality; checkpoints compare by tensors (torch.save writes a random record id),
    training histories without their timing columns."""
    if first.suffix != ".pt":
        return comparable_bytes(first) == comparable_bytes(second)
    a, b = (torch.load(path, weights_only=False) for path in (first, second))
    tensors = a.pop("network"), b.pop("network")
    return (
        a == b
        and tensors[0].keys() == tensors[1].keys()
        and all(torch.equal(tensors[0][key], tensors[1][key]) for key in tensors[0])
    )


def read(workdir: Path, relative: str) -> pd.DataFrame:
    return pq.read_table(workdir / relative).to_pandas()


def test_every_stage_reconciles_with_the_manifests(run):
    config = yaml.safe_load((run / "config" / "ci.yaml").read_text())
    for dataset in ("ferplus", "fairface"):
        manifest = read(run, f"results/manifests/{dataset}.parquet")
        rejects = read(run, f"results/manifests/{dataset}_rejects.parquet")
        report = json.loads((run / f"results/manifests/{dataset}_report.json").read_text())
        expected = sum(config["datasets"][dataset]["sample"].values())
        assert report["rows_in"] == expected == len(manifest) + len(rejects)
        assert report["rows"] == len(manifest)
        assert sum(report["rejected"].values()) == len(rejects)
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

    # FairFace rendered like FER+ (48x48 grayscale): every image (train too, since fit_on is
    # both by default), through the same alignment and embedding.
    fairface = read(run, "results/manifests/fairface.parquet")
    rendered = read(run, "results/manifests/fairface_domain.parquet")
    assert sorted(rendered["image_id"]) == sorted(fairface["image_id"])
    races = fairface.set_index("image_id")["race"]
    assert (rendered["race"].to_numpy() == races.reindex(rendered["image_id"]).to_numpy()).all()
    aligned = pd.concat(
        [read(run, f"results/aligned/fairface_domain/shard-{s}.parquet") for s in range(2)]
    )
    assert sorted(aligned["image_id"]) == sorted(rendered["image_id"])
    embedded = pd.concat(
        [read(run, f"results/embeddings/fairface_domain/shard-{s}.parquet") for s in range(2)]
    )
    assert len(embedded) == len(rendered) - (aligned["status"] == "rejected").sum()
    first = Image.open(io.BytesIO(rendered["image"].iloc[0]))
    assert first.size == (48, 48) and first.mode == "L"

    report = pd.read_csv(run / "results/faces/alignment_report.csv").set_index("dataset")
    assert report.loc["fairface", "detected_rate"] > 0.85
    assert "fairface_domain" in report.index
    assert (report["images"] == report[["detected", "fallback", "rejected"]].sum(axis=1)).all()


def test_race_matching_is_evaluated_and_labels_every_image(run):
    report = json.loads((run / "results/group_labels/classifier_report.json").read_text())
    assert report["random_weights"] is False
    race = report["attributes"]["race"]
    # Far above the 7-class majority rate (~0.2): the pretrained embeddings carry race signal.
    assert race["clean"]["accuracy"] > 0.35
    # In the FER+ domain (48x48 grayscale), measured on every rendered val image.
    assert race["in_domain"]["accuracy"] > 0.25
    assert race["in_domain"]["n_evaluated"] == report["evaluations"]["in_domain"]["n_evaluated"]
    assert np.asarray(race["in_domain"]["confusion_matrix"]).shape == (7, 7)
    for evaluation in ("clean", "in_domain"):
        assert 0 <= race[evaluation]["expected_calibration_error"] <= 1
    assert report["attributes"]["gender"]["clean"]["accuracy"] > 0.65
    assert report["attributes"]["gender"]["in_domain"]["accuracy"] > 0.55
    assert report["fit_on"] == "both" and report["domain_render"]["size"] == 48
    assert 0.95 * 2 * 500 <= report["n_train"] <= 2 * 500  # clean and rendered train
    per_class = pd.read_csv(run / "results/group_labels/classifier_per_class.csv")
    assert set(per_class["evaluated_on"]) == {"fairface_valid", "fairface_valid_rendered"}

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
    strategies = list(config["training"]["strategies"])
    assert len(strategies) == 10 and set(strategies) == set(config["strategies"])
    corrected_any = False
    comparison = read(run, "results/fairness/comparison.parquet")
    assert sorted(comparison["strategy"].unique()) == sorted(strategies)
    assert set(comparison["model"]) == {"compact_cnn", "embedding_mlp"}
    seeds = comparison.groupby("model")["n_seeds"].unique()
    assert seeds["compact_cnn"].tolist() == [2] and seeds["embedding_mlp"].tolist() == [1]
    mlp = read(run, "results/predictions/embedding_mlp/baseline/seed-0.parquet")
    # Test images whose face alignment was rejected have no embedding, so no MLP prediction.
    assert 0.9 * labelled_test <= len(mlp) <= labelled_test
    for strategy in strategies:
        for seed in (0, 1):
            run_path = f"compact_cnn/{strategy}/seed-{seed}"
            predictions = read(run, f"results/predictions/{run_path}.parquet")
            assert len(predictions) == labelled_test
            assert predictions["image_id"].is_unique
            assert set(predictions[["strategy", "model", "seed"]].itertuples(index=False)) == {
                (strategy, "compact_cnn", seed)
            }
            if strategy in POSTPROCESS_STRATEGIES:
                # Nothing trained: the base strategy's predictions adjusted.
                assert (run / f"results/models/{run_path}/postprocess.json").is_file()
                continue
            history = pd.read_csv(run / f"results/models/{run_path}/history.csv")
            assert history["selected"].sum() == 1
            assert not (run / f"results/models/{run_path}/resume.pt").exists()
        tables = f"results/fairness/compact_cnn/{strategy}/seed-0"
        groups = read(run, f"{tables}/group_metrics.parquet")
        race_groups = groups[(groups["attribute"] == "race") & groups["known"]]
        assert len(race_groups) >= 3
        assert race_groups["count"].sum() == labelled_test
        assert groups["accuracy"].between(0, 1).all()
        assert groups["small_group"].any()  # a 150-image test set has small groups: flagged
        per_class = read(run, f"{tables}/group_class_metrics.parquet")
        n_known_groups = groups[groups["known"]].groupby("attribute")["group"].nunique().sum()
        assert len(per_class) == n_known_groups * 8  # every known group x the 8 FER+ classes
        disparities = read(run, f"{tables}/class_disparities.parquet")
        assert len(disparities[disparities["attribute"] == "race"]) == 8
        assert disparities["dp_difference"].dropna().between(0, 1).all()
        summary = read(run, f"{tables}/summary.parquet")
        for suffix in (".csv", ".md"):
            assert (run / f"{tables}/summary{suffix}").stat().st_size > 0
        for table in (groups, per_class, disparities, summary):
            for method in ("ci", "mi"):
                lows = [c for c in table.columns if c.endswith(f"_{method}_low")]
                assert lows
                for low in lows:
                    bounds = table[[low, low.replace("_low", "_high")]].dropna()
                    assert (bounds.iloc[:, 0] <= bounds.iloc[:, 1]).all(), low
        assert summary["overall_accuracy_ci_low"].notna().all()
        assert summary["accuracy_gap_mi_low"].notna().all()  # FER+ labels are inferred
        # Corrected for misclassified groups where the in-domain matrix allows it; flagged
        # (not printed) where CI's small rendered val leaves it ill-conditioned.
        status = summary.set_index("attribute")["correction"]
        assert status["race x gender"] == "not corrected: intersection"
        for attribute in ("race", "gender", "age"):
            assert status[attribute] == "corrected" or status[attribute].startswith(
                "not corrected: "
            ), status[attribute]
        for column in ("accuracy_corrected", "count_corrected", "accuracy_imputed"):
            assert column in groups.columns
        for attribute in ("race", "gender", "age"):
            rows = groups[(groups["attribute"] == attribute) & groups["known"]]
            if status[attribute] == "corrected":
                corrected_any = True
                assert rows["accuracy_corrected"].dropna().between(0, 1).all()
                assert rows["count_corrected"].sum() == pytest.approx(rows["count"].sum(), rel=0.2)
            else:
                assert rows["accuracy_corrected"].isna().all()
        assert per_class["tpr_corrected"].dropna().between(0, 1).all()
        assert summary.set_index("attribute").loc["race", "accuracy_gap_imputed"] >= 0
        gaps = summary["accuracy_gap_corrected"].dropna()
        assert gaps.between(0, 1).all()
    # 2x2 gender confusion from 200 rendered val faces is well conditioned: some table of
    # some strategy is corrected.
    assert corrected_any
    assert comparison["estimate"].dropna().between(0, 1).all()
    # Two strategies from one seed must not be the same model.
    first = read(run, "results/predictions/compact_cnn/baseline/seed-0.parquet")
    other = read(run, "results/predictions/compact_cnn/group_dro/seed-0.parquet")
    assert not np.array_equal(np.stack(first["probabilities"]), np.stack(other["probabilities"]))
    assert set(comparison["attribute"]) == {"race", "gender", "age", "race x gender"}
    assert set(comparison["verdict"]) <= {"baseline", "better", "worse", "no clear change", None}
    baseline = comparison[comparison["strategy"] == "baseline"]
    assert (baseline["delta"].dropna() == 0).all()
    by_seed = read(run, "results/fairness/comparison_by_seed.parquet")
    assert len(by_seed) == (comparison["n_seeds"]).sum()
    corrected = comparison[comparison["metric"] == "accuracy_gap_corrected"]
    assert set(corrected["attribute"]) == {"race", "gender", "age"}
    metrics = json.loads((run / "results/metrics.json").read_text())
    assert set(metrics) == {"compact_cnn", "embedding_mlp", "group_labels"}
    labels = metrics.pop("group_labels")["attributes"]
    assert labels["race"]["used"] == labels["race"]["in_domain"]
    assert 0 < labels["race"]["in_domain"]["accuracy"] <= labels["race"]["clean"]["accuracy"] + 0.1
    assert "accuracy_gap" in metrics["compact_cnn"]["baseline"]["gender"]
    assert set(metrics["compact_cnn"]) == set(metrics["embedding_mlp"]) == set(strategies)
    assert 0 <= metrics["compact_cnn"]["reweighting"]["race"]["overall_accuracy"] <= 1
    assert metrics["compact_cnn"]["baseline"]["race"]["accuracy_gap_delta"] == 0


def test_report_is_one_offline_page(run, tmp_path):
    from browser import CHROMIUM, render

    from fairfer.report.html import external_references

    strategies = [
        s
        for s in yaml.safe_load((run / "config/config.yaml").read_text())["strategies"]
        if s not in POSTPROCESS_STRATEGIES
    ]
    page = run / "results/report/fairness_report.html"
    html = page.read_text()
    assert external_references(html) == []
    assert html.count("<img src='data:image/png;base64,") >= 12
    for strategy in ("baseline", "reweighting", "augmentation"):
        gradcam = run / f"results/report/gradcam/compact_cnn/{strategy}/seed-0.png"
        assert gradcam.stat().st_size > 10_000
    maps = run / "results/report/gradcam"
    gradcams = {path.relative_to(maps) for path in maps.rglob("*.png")}
    # Every strategy of the image model at its first seed; the MLP has no feature map.
    assert gradcams == {Path(f"compact_cnn/{s}/seed-0.png") for s in strategies}
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    rendered = render(page, tmp_path)
    assert rendered.decoded == rendered.images >= 12
    assert [r for r in rendered.resources if not r.startswith("data:")] == []


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
    for upstream in ("align_faces", "embed_faces", "group_labels", "augment_demographics"):
        assert f"rule {upstream}:" not in planned


def test_adding_a_seed_trains_only_the_new_seed(run):
    seeds = run / "config" / "seeds.yaml"
    seeds.write_text("training:\n  seeds: [0, 1, 2]\n")
    planned = snakemake(run, "-n", "--configfile", "config/ci.yaml", "config/seeds.yaml").stdout
    assert "seed=2" in planned
    assert "seed=0" not in planned and "seed=1" not in planned
    assert "rule compare_strategies:" in planned


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory) -> Path:
    """A scratch copy of the workflow that is never run (for dry runs of bad configs)."""
    return scratch_workflow(tmp_path_factory.mktemp("dry_run"))


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("models:\n  compact_cnn:\n    epochs: -1\n", "models.compact_cnn.epochs: found -1"),
        ("models:\n  compact_cnn:\n    epochs: five\n", "models.compact_cnn.epochs: found 'five'"),
        ("training:\n  models: [vgg_nowhere]\n", "vgg_nowhere"),
        ("strategies:\n  unknown_strategy: {}\n", "unknown_strategy"),
        ("strategies:\n  baseline: null\n", "strategies.baseline: found None"),
        ("alignment:\n  common:\n    max_detector_side: -5\n", "max_detector_side"),
    ],
)
def test_invalid_config_fails_before_any_job_naming_the_key(workflow_copy, override, named):
    bad = workflow_copy / "config" / "bad.yaml"
    bad.write_text(override)
    result = snakemake(
        workflow_copy, "-n", "--configfile", "config/ci.yaml", "config/bad.yaml", check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert named in output
    assert "Job stats" not in output and not (workflow_copy / "results").exists()


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
    summary = read(rafdb_run, "results/fairness/compact_cnn/baseline/seed-0/summary.parquet")
    assert (summary["label_source"] == "ground_truth").all()
    assert summary["inferred_label_accuracy"].isna().all()
    # Ground-truth labels are never imputed: no label-noise interval, no correction.
    assert summary["accuracy_gap_mi_low"].isna().all()
    assert (summary["correction"] == "not corrected: intersection").sum() == 1
    assert set(summary["correction"]) <= {
        "not needed: ground-truth labels",
        "not corrected: intersection",
    }
    rendered = read(rafdb_run, "results/manifests/fairface_domain.parquet")
    first = Image.open(io.BytesIO(rendered["image"].iloc[0]))
    assert first.size == (100, 100) and first.mode == "RGB"
    assert summary["accuracy_gap_ci_low"].notna().all()
    assert summary.set_index("attribute").loc["race", "n_groups"] == 3


def test_generic_dataset_with_utkface_as_external_reference(generic_run):
    import json

    report = json.loads((generic_run / "results/group_labels/classifier_report.json").read_text())
    assert report["features"] == "pooled+flip"
    shard = pq.read_table(generic_run / "results/embeddings/generic/shard-0.parquet")
    assert shard.schema.field("label_features").type.list_size == 1792

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
    baseline = read(generic_run, "results/predictions/compact_cnn/baseline/seed-0.parquet")
    assert len(baseline) == test_rows

    report = json.loads((generic_run / "results/group_labels/classifier_report.json").read_text())
    utkface = report["external_evaluation"]["utkface"]
    assert utkface["n_images"] == 120 and utkface["n_embedded"] == 120
    race = utkface["attributes"]["race"]
    assert race["taxonomy"]["classes"] == ["White", "Black", "Asian", "Indian", "Others"]
    # Well above the 5-class majority rate: the FairFace classifier transfers.
    assert race["accuracy"] > 0.4 and 0 <= race["expected_calibration_error"] <= 1
    assert utkface["attributes"]["gender"]["accuracy"] > 0.65
    per_class = pd.read_csv(generic_run / "results/group_labels/classifier_per_class.csv")
    assert set(per_class["evaluated_on"]) == {
        "fairface_valid",
        "fairface_valid_rendered",
        "utkface",
    }
    alignment = pd.read_csv(generic_run / "results/faces/alignment_report.csv")
    assert {"generic", "fairface", "utkface"} <= set(alignment["dataset"])


def test_interrupted_runs_finish_with_the_same_tables_bit_for_bit(run, interrupted_run):
    """Kill and restart change nothing, and a second run with the same seed gives the same
    bytes: the manifest, alignment, embeddings, labels, models, predictions and tables (the
    training histories up to their per-epoch timings)."""
    workdir, cut = interrupted_run
    assert cut == {"align_faces": True, "train_model": True}
    results = sorted(p.relative_to(run) for p in (run / "results").rglob("*") if p.is_file())
    again = sorted(p.relative_to(workdir) for p in (workdir / "results").rglob("*") if p.is_file())
    assert again == results
    differing = [str(path) for path in results if not same_content(run / path, workdir / path)]
    assert differing == []
    recomputed = [p for p in results if "fairface" not in str(p)]
    assert len(recomputed) > 30


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
    configs = ["config/ci.yaml", "config/finetuned.yaml"]
    snakemake(workdir, "--configfile", *configs, "--", "group_labels")
    return workdir


def test_finetuned_embeddings_feed_the_group_labels(finetuned_run):
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
    # The held-out images, clean and rendered like FER+ (fit_on: both).
    assert report["n_train"] == 2 * (roles["role"] == "selection").sum()
    assert report["attributes"]["race"]["clean"]["accuracy"] > 0.25
    assert report["attributes"]["race"]["in_domain"]["accuracy"] > 0.2
    labels = read(workdir, "results/group_labels/ferplus.parquet")
    assert labels["race"].notna().all()


def test_own_dataset_with_emotions_in_file_names_and_a_country_attribute(byo_run):
    report = json.loads((byo_run / "results/manifests/generic_report.json").read_text())
    # Every image found is a row or a reject: 90 sets x 7 emotions, one corrupt.
    assert report["rows_in"] == 630 and report["rows"] == 629
    assert report["rejected"] == {"undecodable_image": 1}
    assert report["sets_without_images"] == 1
    assert report["attributes"]["age"]["binned"] and report["attributes"]["gender"]["mapped"]
    assert set(report["checks"]["classes"]) == {
        "anger",
        "disgust",
        "fear",
        "happiness",
        "neutral",
        "sadness",
        "surprise",
    }
    labels = read(byo_run, "results/group_labels/generic.parquet")
    assert set(labels["gender"].dropna()) <= {"Female", "Male"}
    assert set(labels["age"].dropna()) <= set(ATTRIBUTE_CLASSES["age"])
    assert (
        set(labels["country"]) == set(COUNTRIES)
        and (labels["country_source"] == "ground_truth").all()
    )
    assert (labels["race_source"] == "inferred").all()
    assert (labels["gender_source"] == "ground_truth").all()
    # Only the chosen strategies trained.
    assert sorted(p.name for p in (byo_run / "results/predictions/embedding_mlp").iterdir()) == [
        "baseline",
        "reweighting",
    ]
    predictions = read(byo_run, "results/predictions/embedding_mlp/reweighting/seed-0.parquet")
    assert "contempt" not in set(predictions["y_true"]) and predictions["country"].notna().all()
    summary = read(byo_run, "results/fairness/embedding_mlp/baseline/seed-0/summary.parquet")
    assert {"country", "gender x country"} <= set(summary["attribute"])
    country = summary.set_index("attribute").loc["country"]
    assert country["label_source"] == "ground_truth"
    comparison = read(byo_run, "results/fairness/comparison.parquet")
    assert "country" in set(comparison["attribute"])
    metrics = json.loads((byo_run / "results/metrics.json").read_text())
    assert "country" in metrics["embedding_mlp"]["reweighting"]
    html = (byo_run / "results/report/fairness_report.html").read_text()
    assert "Emotion sets (fixture)" in html and ">country" in html
    assert html.count("Spain") >= 2


def test_class_folders_with_splits_subjects_and_a_class_absent_from_train(class_folders_run):
    report = json.loads((class_folders_run / "results/manifests/generic_report.json").read_text())
    assert report["split_level"] and report["subject_pattern_unmatched"] == 0
    assert report["checks"]["classes_absent_from_train"] == ["contempt"]
    assert report["checks"]["rows_dropped"] == 1
    assert report["rows_in"] == 421 == report["rows"] + sum(report["rejected"].values())
    manifest = read(class_folders_run, "results/manifests/generic.parquet")
    assert manifest["subject_id"].str.fullmatch(r"S\d{3}").all()
    assert (manifest["label_status"] == "class_absent_from_train").sum() == 1
    assert manifest.groupby("split").size().to_dict() == {"test": 80, "train": 280, "valid": 61}
    predictions = read(
        class_folders_run, "results/predictions/embedding_mlp/group_dro/seed-0.parquet"
    )
    assert "contempt" not in set(predictions["y_true"]) and len(predictions) <= 80
    comparison = read(class_folders_run, "results/fairness/comparison.parquet")
    assert set(comparison["strategy"]) == {"baseline", "group_dro"}


def test_models_are_evaluated_on_a_second_dataset_with_its_own_tables(class_folders_run):
    evaluated = read(
        class_folders_run,
        "results/evaluation/ferplus/predictions/embedding_mlp/baseline/seed-0.parquet",
    )
    manifest = read(class_folders_run, "results/manifests/ferplus.parquet")
    test = manifest[(manifest["split"] == "test") & (manifest["label_status"] == "ok")]
    # FER+ contempt is a class the model never learnt: left out; every other test image in.
    assert set(evaluated["y_true"]) <= set(test["emotion"]) - {"contempt"}
    embedded = pq.read_table(
        class_folders_run / "results/embeddings/ferplus/shard-0.parquet", columns=["image_id"]
    )
    assert len(evaluated) <= (test["emotion"] != "contempt").sum()
    assert len(evaluated) > 0.8 * (test["emotion"] != "contempt").sum() and embedded.num_rows
    assert set(evaluated["y_pred"]) <= set(evaluated["y_true"]) | set(test["emotion"])
    assert (evaluated["race_source"] == "inferred").all()
    comparison = read(class_folders_run, "results/evaluation/ferplus/comparison.parquet")
    assert set(comparison["strategy"]) == {"baseline", "group_dro"}
    assert {"race", "gender", "age"} <= set(comparison["attribute"])
    summary = read(
        class_folders_run,
        "results/evaluation/ferplus/fairness/embedding_mlp/group_dro/seed-0/summary.parquet",
    )
    assert summary["n"].iloc[0] == len(evaluated)
    assert json.loads((class_folders_run / "results/evaluation/ferplus/metrics.json").read_text())
