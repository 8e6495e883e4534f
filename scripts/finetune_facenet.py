"""Fine-tune FaceNet on FairFace train (race, gender and age heads on a shared trunk)."""

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch

from fairfer.faces.facenet import load_facenet, preprocessing_for
from fairfer.faces.finetune import (
    FineTuneSettings,
    MultiTaskFaceNet,
    build_multitask,
    cache_activations,
    class_indices,
    image_batches,
    labelled_crops,
    save_checkpoint,
    split_for_selection,
    train_multitask,
)
from fairfer.inference import resolve_device
from fairfer.schemas import ATTRIBUTE_CLASSES, FINETUNE_ROLES, write_parquet

logger = logging.getLogger(__name__)


def finetune(
    aligned: list[Path],
    manifest: Path,
    *,
    weights: str,
    weights_path: Path | None,
    settings: FineTuneSettings,
    seed: int,
) -> tuple[MultiTaskFaceNet, pd.DataFrame, pd.DataFrame, dict]:
    """Fine-tune on FairFace train; return the model, history, image roles and a report."""
    device = resolve_device(settings.device, key="finetune.device")
    train = labelled_crops(aligned, manifest, splits=["train"], attributes=list(ATTRIBUTE_CLASSES))
    held_out = split_for_selection(train, fraction=settings.holdout_fraction, seed=seed)
    roles = pd.DataFrame(
        {"image_id": train["image_id"], "role": ["selection" if h else "fit" for h in held_out]}
    )
    logger.info(
        "FairFace train: %d images fine-tune, %d held out for selection; device %s",
        (~held_out).sum(),
        held_out.sum(),
        device,
    )
    facenet, _ = load_facenet(weights, state_dict_path=weights_path, seed=seed)
    model = build_multitask(
        facenet,
        trainable_blocks=settings.trainable_blocks,
        attribute_classes=ATTRIBUTE_CLASSES,
        seed=seed,
    )
    preprocess = preprocessing_for(weights)

    def cache(crops: pd.Series, mirrored: bool):
        batches = image_batches(
            crops.tolist(), batch_size=settings.batch_size, preprocess=preprocess
        )
        return cache_activations(model.frozen, batches, mirrored=mirrored, device=device)

    start = time.perf_counter()
    fit_cache = cache(train.loc[~held_out, "crop"], settings.flip)
    selection_cache = cache(train.loc[held_out, "crop"], False)
    cache_seconds = time.perf_counter() - start
    logger.info(
        "cached the %d frozen blocks' activations %s in %.0f s",
        len(model.frozen),
        tuple(fit_cache.original.shape[1:]),
        cache_seconds,
    )
    start = time.perf_counter()
    history = train_multitask(
        model,
        fit_cache,
        class_indices(train[~held_out], ATTRIBUTE_CLASSES),
        selection_cache,
        class_indices(train[held_out], ATTRIBUTE_CLASSES),
        settings=settings,
        seed=seed,
        device=device,
    )
    selected = history.loc[history["selected"]].iloc[0]
    report = {
        "weights": weights,
        "settings": asdict(settings),
        "device": str(device),
        "n_fit": int((~held_out).sum()),
        "n_selection": int(held_out.sum()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "cache_seconds": cache_seconds,
        "train_seconds": time.perf_counter() - start,
        "epochs_run": len(history),
        "selected_epoch": int(selected["epoch"]),
        "selection": {
            name.removeprefix("selection_"): float(value)
            for name, value in selected.items()
            if name.startswith("selection_")
        },
    }
    return model.cpu().eval(), history, roles, report


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    torch.set_num_threads(snakemake.threads)
    weights_input = snakemake.input.get("weights")
    settings = FineTuneSettings.from_config(snakemake.params.finetune)
    model, history, roles, report = finetune(
        [Path(p) for p in snakemake.input.aligned],
        Path(snakemake.input.manifest),
        weights=snakemake.params.weights,
        weights_path=Path(weights_input) if weights_input else None,
        settings=settings,
        seed=snakemake.params.seed,
    )
    save_checkpoint(
        model,
        Path(snakemake.output.checkpoint),
        weights=snakemake.params.weights,
        attribute_classes=ATTRIBUTE_CLASSES,
        settings=settings,
    )
    history.to_csv(snakemake.output.history, index=False)
    write_parquet(roles, snakemake.output.roles, FINETUNE_ROLES)
    Path(snakemake.output.report).write_text(json.dumps(report, indent=2) + "\n")
