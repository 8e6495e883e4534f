"""Train one strategy's emotion classifier on FER+ train, select on valid, predict test."""

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch

from fairfer.schemas import (
    ATTRIBUTES,
    EMOTIONS,
    MANIFEST,
    predictions_schema,
    read_checked,
    write_parquet,
)
from fairfer.training import (
    TrainingSettings,
    decode_grayscale,
    kamiran_calders_weights,
    predict_proba,
    train,
)

logger = logging.getLogger(__name__)

GROUP_COLUMNS = [
    column
    for attribute in ATTRIBUTES
    for column in (attribute, f"{attribute}_source", f"{attribute}_confidence")
]


def labelled_split(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    """Images of ``split`` that have a majority-vote emotion."""
    return manifest[(manifest["split"] == split) & (manifest["label_status"] == "ok")]


def dataset_classes(labelled: pd.DataFrame) -> list[str]:
    """The emotions the dataset uses, in the canonical FER+ order (RAF-DB lacks contempt)."""
    present = set(labelled["emotion"])
    return [emotion for emotion in EMOTIONS if emotion in present]


def encode_labels(emotions: pd.Series, classes: list[str]) -> torch.Tensor:
    index = {emotion: i for i, emotion in enumerate(classes)}
    return torch.as_tensor(emotions.map(index).to_numpy(), dtype=torch.long)


def group_key(frame: pd.DataFrame, attributes: list[str]) -> pd.Series:
    """Intersectional group label, null where any attribute is unknown."""
    key = frame[attributes].astype("string").fillna("").agg(" x ".join, axis=1)
    return key.where(frame[attributes].notna().all(axis=1))


def training_pool(
    strategy: str, train_rows: pd.DataFrame, augmented_path: Path | None, classes: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    if strategy == "augmentation":
        augmented = pq.read_table(augmented_path, columns=["emotion", "image"]).to_pandas()
        images, emotions = augmented["image"], augmented["emotion"]
    else:
        images, emotions = train_rows["image"], train_rows["emotion"]
    return decode_grayscale(images.tolist()), encode_labels(emotions, classes)


def run(
    manifest_path: Path,
    group_labels_path: Path,
    augmented_path: Path | None,
    *,
    strategy: str,
    strategy_params: dict,
    training: dict,
    seed: int,
    checkpoint_path: Path,
    history_path: Path,
    predictions_path: Path,
) -> None:
    manifest = read_checked(
        manifest_path, MANIFEST, ["image_id", "split", "emotion", "label_status", "image"]
    ).to_pandas()
    group_labels = pq.read_table(
        group_labels_path, columns=["image_id", *GROUP_COLUMNS]
    ).to_pandas()
    manifest = manifest.merge(group_labels, on="image_id", how="left", validate="one_to_one")
    train_rows, valid_rows, test_rows = (
        labelled_split(manifest, s) for s in ("train", "valid", "test")
    )
    logger.info(
        "%s: %d train, %d valid, %d test images",
        strategy,
        len(train_rows),
        len(valid_rows),
        len(test_rows),
    )

    classes = dataset_classes(train_rows)
    train_images, train_labels = training_pool(strategy, train_rows, augmented_path, classes)
    sample_weights = None
    if strategy == "reweighting":
        sample_weights = kamiran_calders_weights(
            group_key(train_rows, strategy_params["groups"]),
            train_rows["emotion"],
            max_weight=strategy_params["max_weight"],
        )
        logger.info(
            "reweighting: weights from %.3f to %.3f", sample_weights.min(), sample_weights.max()
        )
    settings = TrainingSettings.from_config(training)
    model, history = train(
        train_images,
        train_labels,
        decode_grayscale(valid_rows["image"].tolist()),
        encode_labels(valid_rows["emotion"], classes),
        n_classes=len(classes),
        settings=settings,
        seed=seed,
        sample_weights=sample_weights,
        epoch_size=len(train_rows),
    )
    probabilities = predict_proba(model, decode_grayscale(test_rows["image"].tolist()))
    predictions = test_rows[["image_id", *GROUP_COLUMNS]].copy()
    predictions["strategy"] = strategy
    predictions["y_true"] = test_rows["emotion"].to_numpy()
    predictions["y_pred"] = np.asarray(classes)[probabilities.argmax(axis=1)]
    predictions["probabilities"] = list(probabilities.astype(np.float32))
    write_parquet(predictions, predictions_path, predictions_schema(classes))
    logger.info(
        "%s: test accuracy %.4f", strategy, (predictions["y_true"] == predictions["y_pred"]).mean()
    )

    history.to_csv(history_path, index=False)
    partial = checkpoint_path.with_name(f".{checkpoint_path.name}.partial")
    torch.save(
        {
            "state_dict": model.state_dict(),
            "classes": classes,
            "strategy": strategy,
            "strategy_params": strategy_params,
            "training": training,
            "seed": seed,
        },
        partial,
    )
    os.replace(partial, checkpoint_path)


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    torch.set_num_threads(snakemake.threads)
    run(
        Path(snakemake.input.manifest),
        Path(snakemake.input.group_labels),
        Path(snakemake.input.augmented) if hasattr(snakemake.input, "augmented") else None,
        strategy=snakemake.wildcards.strategy,
        strategy_params=snakemake.params.strategy,
        training=snakemake.params.training,
        seed=snakemake.params.seed,
        checkpoint_path=Path(snakemake.output.checkpoint),
        history_path=Path(snakemake.output.history),
        predictions_path=Path(snakemake.output.predictions),
    )
