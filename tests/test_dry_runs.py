"""``snakemake -n`` for every emotion dataset and source kind: the DAG resolves, or the run
stops before any job with an error saying what to place where.

The dry runs use a scratch copy of the workflow whose data/ holds empty files in the expected
places: planning checks that inputs exist, not what they contain.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FAIRFACE_FILES = (
    "fairface/fairface-img-margin025-trainval.zip",
    "fairface/fairface_label_train.csv",
    "fairface/fairface_label_val.csv",
)
FERPLUS_FILES = (
    "ferplus/FER2013Train/label.csv",
    "ferplus/FER2013Valid/label.csv",
    "ferplus/FER2013Test/label.csv",
    "ferplus/fer2013new.csv",
)


def touch(root: Path, *relative: str) -> None:
    for name in relative:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).touch()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("dry_runs")
    for name in ("workflow", "scripts", "config", "envs"):
        shutil.copytree(
            ROOT / name, workdir / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    touch(workdir / "data", *FAIRFACE_FILES, *FERPLUS_FILES)
    return workdir


def dry_run(
    workdir: Path, override: dict, *, check: bool = True, extra: tuple[str, ...] = ()
) -> tuple[dict, str]:
    """Planned jobs per rule (with their wildcards) and the whole output."""
    name = f"case{len(list((workdir / 'config').glob('case*.yaml')))}.yaml"
    (workdir / "config" / name).write_text(yaml.safe_dump(override))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1"]
        + ["--configfile", "config/config.yaml", f"config/{name}", *extra],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        raise AssertionError(f"dry run of {override} failed:\n{output[-6000:]}")
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", result.stdout):
        match = re.match(r"(?:local)?rule (\w+):", block)
        if match:
            wildcards = re.search(r"wildcards: (.*)", block)
            jobs.setdefault(match.group(1), []).append(wildcards.group(1) if wildcards else "")
    return jobs, output


def test_ferplus_png_folders_with_utkface_as_external_reference(workdir, tmp_path):
    override = {
        "race_matching": {"external_references": ["utkface"]},
        "datasets": {"utkface": {"path": str(tmp_path)}},
    }
    jobs, output = dry_run(workdir, override)
    assert {"ingest_ferplus", "ingest_utkface"} <= set(jobs) and "download_dataset" not in jobs
    assert "dataset=ferplus, shard=0" in jobs["align_faces"]
    assert {f"dataset=utkface, shard={k}" for k in range(4)} <= set(jobs["embed_faces"])
    assert "results/embeddings/utkface/shard-3.parquet" in output.split("rule group_labels:")[1]
    assert {"train_model", "compare_strategies"} <= set(jobs)


def test_ferplus_fer2013_csv_layout(workdir, tmp_path):
    touch(tmp_path, "fer2013.csv", "fer2013new.csv")
    jobs, _ = dry_run(
        workdir, {"datasets": {"ferplus": {"layout": "fer2013_csv", "path": str(tmp_path)}}}
    )
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    seeds = sum(
        len(config["models"][model].get("seeds") or config["training"]["seeds"])
        for model in config["training"]["models"]
    )
    assert "ingest_ferplus" in jobs
    trained = [s for s in config["training"]["strategies"] if not s.startswith("postprocess")]
    assert len(jobs["train_model"]) == len(trained) * seeds
    assert len(jobs["postprocess_predictions"]) == 2 * seeds


def test_cross_dataset_dynamic_weighting_aligns_and_embeds_the_second_dataset(workdir, tmp_path):
    touch(tmp_path, "EmoLabel/list_patition_label.txt")
    override = {
        "strategies": {"dynamic_weighting": {"second_dataset": "rafdb"}},
        "datasets": {"rafdb": {"path": str(tmp_path)}},
    }
    jobs, output = dry_run(workdir, override)
    assert {"ingest_ferplus", "ingest_rafdb"} <= set(jobs)
    assert "dataset=rafdb, shard=0" in jobs["embed_faces"]  # the embedding MLP reads them
    trainings = output.split("rule train_model:")[1:]
    second = [job for job in trainings if "results/manifests/rafdb.parquet" in job]
    assert second and all("strategy=dynamic_weighting" in job for job in second)


def test_rafdb_placed_by_hand(workdir, tmp_path):
    touch(tmp_path, "EmoLabel/list_patition_label.txt")
    jobs, _ = dry_run(
        workdir, {"emotion_dataset": "rafdb", "datasets": {"rafdb": {"path": str(tmp_path)}}}
    )
    assert "ingest_rafdb" in jobs and "ingest_ferplus" not in jobs
    assert "dataset=rafdb, shard=0" in jobs["embed_faces"]


def test_rafdb_from_kaggle_is_downloaded_by_a_local_rule(workdir):
    override = {
        "emotion_dataset": "rafdb",
        "datasets": {"rafdb": {"source": "kaggle://shuvoalok/raf-db-dataset", "path": "nowhere"}},
    }
    jobs, output = dry_run(workdir, override)
    assert jobs["download_dataset"] == ["dataset=rafdb"]
    assert "resources/datasets/rafdb" in output and "ingest_rafdb" in jobs


def test_generic_csv_dataset(workdir, tmp_path):
    touch(tmp_path, "labels.csv")
    override = {
        "emotion_dataset": "generic",
        "datasets": {"generic": {"path": str(tmp_path), "manifest_csv": "labels.csv"}},
    }
    jobs, _ = dry_run(workdir, override)
    assert "ingest_generic" in jobs and "augment_demographics" in jobs
    assert "dataset=generic, shard=1" in jobs["align_faces"]


def test_generic_folder_sets_from_an_http_archive(workdir):
    override = {
        "emotion_dataset": "generic",
        "datasets": {
            "generic": {
                "format": "folder_sets",
                "source": "https://example.org/faces.tar.gz",
                "sha256": "0" * 64,
                "archive_root": "faces",
            }
        },
    }
    jobs, _ = dry_run(workdir, override)
    assert jobs["download_dataset"] == ["dataset=generic"]


def test_missing_manual_dataset_says_what_to_place_where(workdir, tmp_path):
    (tmp_path / "raf").mkdir()
    override = {"emotion_dataset": "rafdb", "datasets": {"rafdb": {"path": str(tmp_path / "raf")}}}
    _, output = dry_run(workdir, override, check=False)
    for expected in (
        f"missing: {tmp_path}/raf/EmoLabel/list_patition_label.txt or",
        f"{tmp_path}/raf/train_labels.csv",
        "datasets.rafdb.path",
        "source: manual",
        "Image/aligned/*_aligned.jpg",
        "kaggle://shuvoalok/raf-db-dataset",
    ):
        assert expected in output
    assert "rule ingest_rafdb" not in output


def test_missing_local_archive_names_file_and_hash(workdir, tmp_path):
    archive = tmp_path / "generic.zip"
    override = {
        "emotion_dataset": "generic",
        "datasets": {"generic": {"source": str(archive), "sha256": "a" * 64}},
    }
    _, output = dry_run(workdir, override, check=False)
    assert f"{archive} (config key datasets.generic.source) does not exist" in output
    assert f"sha256 {'a' * 64}" in output and "columns path and emotion" in output


def test_class_folders_need_no_csv(workdir, tmp_path):
    (tmp_path / "happy").mkdir()
    override = {
        "emotion_dataset": "generic",
        "datasets": {"generic": {"path": str(tmp_path), "format": "class_folders"}},
    }
    jobs, _ = dry_run(workdir, override)
    assert "ingest_generic" in jobs


def test_training_strategies_select_what_trains(workdir):
    jobs, _ = dry_run(workdir, {"training": {"strategies": ["baseline", "reweighting"]}})
    strategies = {re.search(r"strategy=(\w+)", w).group(1) for w in jobs["train_model"]}
    assert strategies == {"baseline", "reweighting"}
    assert "augment_demographics" not in jobs


def test_typed_values_from_the_command_line(workdir):
    # Snakemake hands nested --config values over as strings; they are read as the schema's.
    jobs, output = dry_run(
        workdir,
        {},
        extra=("--config", "fairness={min_group_size: 12, uncertainty: {draws: 20}}"),
    )
    assert "fairness_tables" in jobs, output[-3000:]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            {"datasets": {"generic": {"formt": "csv"}}},
            ["Config key datasets.generic: unknown key 'formt' (did you mean 'format'?)"],
        ),
        (
            {"fairness": {"min_group_size": "ten"}},
            ["Config key fairness.min_group_size: found 'ten'", "integer"],
        ),
        (
            {"training": {"strategies": ["baseline", "fair_magic"]}},
            ["training.strategies names ['fair_magic']", "not defined under strategies"],
        ),
        (
            {"training": {"strategies": ["reweighting"]}},
            ["must include 'baseline'"],
        ),
        (
            {"fairness": {"attributes": ["race", "country"]}},
            ["['country']", "emotion_dataset ferplus provides only race, gender and age"],
        ),
    ],
)
def test_user_errors_are_one_paragraph(workdir, override, expected):
    _, output = dry_run(workdir, override, check=False)
    for text in expected:
        assert text in output
    # Not the whole schema: the message and Snakemake's two lines of context.
    assert len(output.splitlines()) < 15, output
    assert "additionalProperties" not in output and "rule ingest" not in output


def test_cross_dataset_evaluation_plans_tables_per_evaluation_dataset(workdir, tmp_path):
    touch(tmp_path, "raf/EmoLabel/list_patition_label.txt")
    override = {
        "datasets": {"rafdb": {"path": str(tmp_path / "raf")}},
        "evaluation": {"datasets": ["rafdb"]},
        "training": {"strategies": ["baseline", "reweighting"]},
    }
    jobs, _ = dry_run(workdir, override)
    assert "ingest_rafdb" in jobs and "dataset=rafdb, shard=0" in jobs["embed_faces"]
    evaluated = jobs["evaluate_model"]
    assert len(evaluated) == len(jobs["train_model"]) and all(
        "dataset=rafdb" in w for w in evaluated
    )
    assert len(jobs["evaluation_tables"]) == len(evaluated)
    assert jobs["evaluation_comparison"] == ["dataset=rafdb"]
    _, output = dry_run(workdir, {"evaluation": {"datasets": ["ferplus"]}}, check=False)
    assert "evaluation.datasets lists the emotion dataset ferplus" in output


def test_cremad_plans_every_modality_and_the_modality_comparison(workdir):
    touch(
        workdir / "data",
        "crema-d/VideoDemographics.csv",
        "crema-d/SentenceFilenames.csv",
        "crema-d/VideoFlash/1001_IEO_NEU_XX.flv",
    )
    overlay = yaml.safe_load((ROOT / "config" / "cremad.yaml").read_text())
    jobs, _ = dry_run(workdir, {**overlay, "training": {**overlay["training"], "seeds": [0]}})
    assert {"ingest_cremad", "audio_features", "clip_inputs", "fuse_predictions"} <= set(jobs)
    assert {"compare_modalities", "crowd_accuracy", "fairness_report"} <= set(jobs)
    # The frames are a dataset of their own: aligned and embedded per shard.
    assert any("dataset=cremad_frames" in w for w in jobs["align_faces"])
    trained = {w.split("model=")[1].split(",")[0] for w in jobs["train_model"]}
    assert trained == {"visual_mlp", "audio_cnn", "fusion_early"}
    assert {w.split("model=")[1].split(",")[0] for w in jobs["fuse_predictions"]} == {"fusion_late"}
    assert "gradcam_maps" not in jobs


def test_image_models_on_cremad_are_one_paragraph(workdir):
    _, output = dry_run(workdir, {"emotion_dataset": "cremad"}, check=False)
    assert "config key training.models names ['compact_cnn', 'embedding_mlp']" in output
    assert "Traceback" not in output


def test_strategies_fine_tune_the_baseline_with_init_baseline(workdir):
    override = {
        "training": {
            "init": "baseline",
            "finetune_epochs": 2,
            "strategies": ["baseline", "group_dro"],
        }
    }
    _, output = dry_run(workdir, override)
    blocks = [
        b
        for b in re.split(r"\n(?=(?:local)?rule \w+:)", output)
        if b.startswith("rule train_model") and "strategy=group_dro" in b
    ]
    assert blocks
    for block in blocks:
        model, seed = re.search(r"model=(\w+), strategy=group_dro, seed=(\d+)", block).groups()
        assert f"results/models/{model}/baseline/seed-{seed}/model.pt" in block
