"""train_model.run on tiny files in the pipeline's schemas: pools, inputs, predictions."""

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from fairfer.rule_inputs import rule_script
from fairfer.schemas import (
    ATTRIBUTE_CLASSES,
    AUGMENTED,
    GROUP_LABELS,
    MANIFEST,
    embeddings_schema,
    write_parquet,
)

run = rule_script("train_model").run

EMOTIONS = ["neutral", "happiness"]
SPLITS = ["train"] * 40 + ["valid"] * 12 + ["test"] * 12
MODEL = {
    "architecture": "compact_cnn",
    "input": "gray48",
    "width": 4,
    "epochs": 1,
    "batch_size": 16,
    "learning_rate": 0.01,
}


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (48, 48), value).save(buffer, format="PNG")
    return buffer.getvalue()


def manifest(dataset: str, races: list | None) -> pd.DataFrame:
    n = len(SPLITS)
    emotions = [EMOTIONS[i % 2] for i in range(n)]
    return pd.DataFrame(
        {
            "image_id": [f"{dataset}/{i}" for i in range(n)],
            "dataset": dataset,
            "split": SPLITS,
            "source_path": "x.png",
            "emotion": emotions,
            "label_status": "ok",
            "emotion_votes": None,
            "race": races,
            "gender": None,
            "age": None,
            "subject_id": None,
            "image": [png(40 if e == "neutral" else 200) for e in emotions],
        }
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("train_model")
    primary = manifest("ferplus", None)
    write_parquet(primary, root / "ferplus.parquet", MANIFEST)
    races = ["Caucasian", "Asian"] * (len(SPLITS) // 2)
    write_parquet(manifest("rafdb", races), root / "rafdb.parquet", MANIFEST)
    labels = primary[["image_id", "dataset", "split"]].copy()
    for attribute, classes in ATTRIBUTE_CLASSES.items():
        labels[attribute] = [classes[i % 2] for i in range(len(labels))]
        labels[f"{attribute}_source"] = "inferred"
        labels[f"{attribute}_confidence"] = np.float32(0.9)
        labels[f"{attribute}_probabilities"] = [
            np.full(len(classes), 1 / len(classes), np.float32)
        ] * len(labels)
        labels[f"{attribute}_abstained"] = False
    write_parquet(labels, root / "labels.parquet", GROUP_LABELS)
    train = primary[primary["split"] == "train"]
    augmented = pd.DataFrame(
        {
            "sample_id": [*train["image_id"], *(f"{i}#aug0" for i in train["image_id"][:10])],
            "source_image_id": [*train["image_id"], *train["image_id"][:10]],
            "emotion": [*train["emotion"], *train["emotion"][:10]],
            "race": None,
            "is_augmented": [False] * len(train) + [True] * 10,
            "augmentation": "{}",
            "image": [*train["image"], *train["image"][:10]],
        }
    )
    write_parquet(augmented, root / "augmented.parquet", AUGMENTED)
    embeddings = primary[["image_id", "dataset", "split"]].assign(alignment_status="ok")
    embeddings["embedding"] = [
        np.full(128, 1.0 if e == "neutral" else -1.0, np.float32) for e in primary["emotion"]
    ]
    schema = embeddings_schema(128, weights="random", weights_sha256="-")
    write_parquet(embeddings.iloc[:-1], root / "embeddings.parquet", schema)
    return {
        "manifest": [root / "ferplus.parquet"],
        "group_labels": [root / "labels.parquet"],
        "augmented": [root / "augmented.parquet"],
        "second_manifest": [root / "rafdb.parquet"],
        "embeddings": [root / "embeddings.parquet"],
    }


def train_job(tmp_path, inputs, *, model=MODEL, strategy="baseline", params=None):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    out.mkdir(exist_ok=True)
    predictions = run(
        inputs,
        model="m",
        model_params=model,
        strategy=strategy,
        strategy_params=params or {},
        seed=3,
        runtime_params={"device": "cpu", "mixed_precision": False},
        checkpoint_path=out / "model.pt",
        history_path=out / "history.csv",
        predictions_path=out / "predictions.parquet",
    )
    assert (out / "model.pt").exists() and not (out / "resume.pt").exists()
    return predictions, pq.read_table(out / "predictions.parquet").to_pandas()


def test_augmentation_trains_on_the_augmented_pool_and_predicts_test(tmp_path, files, caplog):
    inputs = {k: files[k] for k in ("manifest", "group_labels", "augmented")}
    caplog.set_level("INFO")
    _, written = train_job(tmp_path, inputs, strategy="augmentation")
    assert "'train': 50" in caplog.text  # 40 originals + 10 copies
    assert len(written) == 12 and set(written["strategy"]) == {"augmentation"}
    assert set(written[["model", "seed"]].itertuples(index=False)) == {("m", 3)}
    assert written["race_source"].eq("inferred").all()


def test_cross_dataset_dynamic_weighting_pools_the_second_dataset(tmp_path, files, caplog):
    inputs = {k: files[k] for k in ("manifest", "group_labels", "second_manifest")}
    params = {
        "groups": ["race"],
        "step_size": 1.0,
        "max_weight": 5.0,
        "min_valid_count": 2,
        "second_dataset": "rafdb",
    }
    caplog.set_level("INFO")
    _, written = train_job(tmp_path, inputs, strategy="dynamic_weighting", params=params)
    assert "'second_train': 40" in caplog.text
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert "weight[rafdb x Asian]" in history.columns
    assert "weight[ferplus x White]" in history.columns
    # Only the primary dataset's test split is predicted.
    assert written["image_id"].str.startswith("ferplus/").all()


def test_embedding_model_leaves_out_images_without_an_embedding(tmp_path, files):
    inputs = {
        "manifest": files["manifest"],
        "group_labels": files["group_labels"],
        "model_inputs": files["embeddings"],
    }
    model = {
        "architecture": "embedding_mlp",
        "input": "embeddings",
        "hidden": 8,
        "epochs": 2,
        "batch_size": 8,
        "learning_rate": 0.01,
    }
    _, written = train_job(tmp_path, inputs, model=model)
    assert len(written) == 11
    assert (written["y_true"] == written["y_pred"]).mean() > 0.8


def test_a_strategy_can_start_from_the_trained_baseline(tmp_path, files, caplog):
    inputs = {k: files[k] for k in ("manifest", "group_labels")}
    train_job(tmp_path, inputs)
    baseline = tmp_path / "baseline.pt"
    (tmp_path / "run" / "model.pt").rename(baseline)
    caplog.set_level("INFO")
    out = tmp_path / "tuned"
    out.mkdir()
    run(
        {**inputs, "init": [baseline]},
        model="m",
        model_params=MODEL,
        strategy="reweighting",
        strategy_params={"groups": ["race"], "max_weight": 10.0},
        seed=3,
        runtime_params={"device": "cpu", "mixed_precision": False},
        checkpoint_path=out / "model.pt",
        history_path=out / "history.csv",
        predictions_path=out / "predictions.parquet",
        valid_predictions_path=out / "valid.parquet",
        finetune_epochs=1,
    )
    assert f"initialised from {baseline}" in caplog.text
    assert len(pd.read_csv(out / "history.csv")) == 1
    valid = pq.read_table(out / "valid.parquet").to_pandas()
    assert len(valid) > 0 and set(valid["strategy"]) == {"reweighting"}
