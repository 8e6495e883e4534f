"""Train one model under one strategy with one seed: select on valid, predict test.

Every strategy x model x seed runs this script. The emotion dataset's train split (or a
strategy's augmented version of it, plus a second dataset's for cross-dataset dynamic
weighting) is the training pool, its valid split the only model-selection data, and its test
split is predicted once, at the end, into the shared predictions schema.
"""

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import pandas as pd
import torch

from fairfer.config_checks import VECTOR_INPUTS
from fairfer.inference import resolve_device
from fairfer.schemas import (
    ATTRIBUTES,
    AUGMENTED,
    extra_attributes_of,
    predictions_schema,
    read_checked,
    write_parquet,
)
from fairfer.training.data import (
    Encoding,
    Split,
    clip_input_dims,
    dataset_classes,
    emotion_rows,
    input_lookup,
    labelled_split,
    model_inputs,
    prediction_frame,
)
from fairfer.training.models import ModelSpec, build_network
from fairfer.training.strategies import AUGMENTATION_STRATEGIES, build_strategy
from fairfer.training.trainer import (
    Runtime,
    make_deterministic,
    predict_proba,
    seed_everything,
    train,
)

logger = logging.getLogger(__name__)


def augmented_pool(augmented_path: Path, rows: pd.DataFrame, attributes: list[str]) -> pd.DataFrame:
    """The augmented training set with every copy's demographics taken from its source."""
    augmented = read_checked(
        augmented_path, AUGMENTED, ["sample_id", "source_image_id", "emotion", "image"]
    ).to_pandas()
    demographics = rows.set_index("image_id")[[*attributes, "dataset"]]
    return augmented.join(demographics, on="source_image_id").assign(
        image_id=augmented["sample_id"], input_id=augmented["source_image_id"]
    )


def network_dims(spec: ModelSpec, inputs: dict[str, list[Path]], train_split: Split) -> dict:
    """The input sizes build_network needs: a vector's length, fusion_net's two parts."""
    if spec.input == "audiovisual":
        visual_dim, audio_shape = clip_input_dims(inputs["model_inputs"][0])
        return {"embedding_dim": visual_dim, "audio_shape": audio_shape}
    if spec.input in VECTOR_INPUTS:
        return {"embedding_dim": train_split.inputs.shape[1]}
    return {}


def start_from(
    network: torch.nn.Module, spec: ModelSpec, path: Path, classes: list[str], *, epochs: int | None
) -> ModelSpec:
    """Load the baseline's trained weights (training.init: baseline) into ``network``; the
    spec with the fine-tuning epochs (warm-up at most half of them)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if list(checkpoint["classes"]) != list(classes):
        raise ValueError(f"{path} was trained on classes {checkpoint['classes']}, not {classes}")
    network.load_state_dict(checkpoint["network"])
    logger.info("initialised from %s", path)
    if epochs is None:
        return spec
    return dataclasses.replace(
        spec, epochs=epochs, warmup_epochs=min(spec.warmup_epochs, epochs / 2)
    )


def fingerprint(*parts, paths: list[Path]) -> str:
    """Identity of a job's settings and inputs: a resume file from other ones is ignored."""
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    text = json.dumps([parts, stats], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def run(
    inputs: dict[str, list[Path]],
    *,
    model: str,
    model_params: dict,
    strategy: str,
    strategy_params: dict,
    seed: int,
    runtime_params: dict,
    checkpoint_path: Path,
    history_path: Path,
    predictions_path: Path,
    valid_predictions_path: Path | None = None,
    finetune_epochs: int | None = None,
) -> pd.DataFrame:
    """Train, select on valid, write the test predictions (and the valid split's, which
    late fusion and post-processing fit on without touching test)."""
    spec = ModelSpec.from_config(model_params)
    rows = emotion_rows(inputs["manifest"][0], inputs["group_labels"][0])
    extra = extra_attributes_of(inputs["group_labels"][0])
    lookup = input_lookup(spec, inputs.get("model_inputs", []))
    rows["input_id"] = rows["image_id"]
    train_rows, valid_rows, test_rows = (
        labelled_split(rows, s) for s in ("train", "valid", "test")
    )
    classes = dataset_classes(train_rows)
    pool_rows = (
        augmented_pool(inputs["augmented"][0], train_rows, [*ATTRIBUTES, *extra])
        if strategy in AUGMENTATION_STRATEGIES
        else train_rows
    )
    lookups = {"primary": lookup}
    parts = {"train": pool_rows, "valid": valid_rows, "test": test_rows}
    attributes = [*ATTRIBUTES, *extra]
    if strategy_params.get("second_dataset"):
        attributes.append("dataset")
        second = emotion_rows(inputs["second_manifest"][0], None)
        # The second dataset lacks the first one's own attributes: its images' are unknown.
        second = second.assign(**{attribute: None for attribute in extra})
        second = second[second["emotion"].isin(classes)].assign(input_id=second["image_id"])
        lookups["second"] = input_lookup(spec, inputs.get("second_model_inputs", []))
        parts["second_train"] = labelled_split(second, "train")
        parts["second_valid"] = labelled_split(second, "valid")
    logger.info(
        "%s/%s/seed-%d: %s rows; classes %s",
        model,
        strategy,
        seed,
        {name: len(frame) for name, frame in parts.items()},
        classes,
    )
    decoded = {}
    for name, frame in parts.items():
        source_lookup = lookups["second" if name.startswith("second") else "primary"]
        x, kept = model_inputs(frame, source=spec.input, lookup=source_lookup, size=spec.side)
        if len(kept) < len(frame):
            logger.warning(
                "%s: %d of %d rows have no %s input and are left out",
                name,
                len(frame) - len(kept),
                len(frame),
                spec.input,
            )
        decoded[name] = (x, kept)
    encoding = Encoding.from_frames([kept for _, kept in decoded.values()], classes, attributes)
    splits = {name: Split.from_frame(kept, x, encoding) for name, (x, kept) in decoded.items()}
    train_split, valid_split = splits["train"], splits["valid"]
    if "second_train" in splits:
        train_split = train_split.concat(splits["second_train"])
        valid_split = valid_split.concat(splits["second_valid"])

    runtime = Runtime(
        device=resolve_device(runtime_params["device"], key="training.device"),
        mixed_precision=runtime_params["mixed_precision"],
        progress=True,
        description=f"{model}/{strategy}/seed-{seed}",
    )
    make_deterministic(runtime.device)
    seed_everything(seed)
    network = build_network(spec, n_classes=len(classes), **network_dims(spec, inputs, train_split))
    if inputs.get("init"):
        spec = start_from(network, spec, inputs["init"][0], classes, epochs=finetune_epochs)
    objective = build_strategy(
        strategy,
        strategy_params,
        encoding=encoding,
        train=train_split,
        representation_dim=network.representation_dim,
        label_smoothing=spec.label_smoothing,
    )
    resume_path = checkpoint_path.with_name("resume.pt")
    network, history = train(
        network,
        objective,
        train_split,
        valid_split,
        spec=spec,
        seed=seed,
        epoch_size=len(train_rows),
        runtime=runtime,
        resume_path=resume_path,
        fingerprint=fingerprint(
            model_params,
            strategy,
            strategy_params,
            seed,
            finetune_epochs,
            paths=[p for paths in inputs.values() for p in paths],
        ),
    )

    test_x, test_frame = decoded["test"]
    probabilities = predict_proba(network, test_x, runtime=runtime)
    predictions = prediction_frame(
        test_frame,
        probabilities,
        classes,
        extra_attributes=extra,
        strategy=strategy,
        model=model,
        seed=seed,
    )
    write_parquet(predictions, predictions_path, predictions_schema(classes, extra))
    if valid_predictions_path is not None:
        valid_x, valid_frame = decoded["valid"]
        write_parquet(
            prediction_frame(
                valid_frame,
                predict_proba(network, valid_x, runtime=runtime),
                classes,
                extra_attributes=extra,
                strategy=strategy,
                model=model,
                seed=seed,
            ),
            valid_predictions_path,
            predictions_schema(classes, extra),
        )
    accuracy = float((predictions["y_true"] == predictions["y_pred"]).mean())
    logger.info("%s: test accuracy %.4f", runtime.description, accuracy)

    history.to_csv(history_path, index=False)
    partial = checkpoint_path.with_name(f".{checkpoint_path.name}.partial")
    torch.save(
        {
            "network": network.state_dict(),
            "classes": classes,
            "attributes": encoding.attributes,
            "model": model,
            "model_params": model_params,
            "strategy": strategy,
            "strategy_params": strategy_params,
            "seed": seed,
        },
        partial,
    )
    os.replace(partial, checkpoint_path)
    resume_path.unlink(missing_ok=True)
    return predictions


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    torch.set_num_threads(snakemake.threads)
    run(
        {
            name: [Path(p) for p in ([paths] if isinstance(paths, str) else paths)]
            for name, paths in snakemake.input.items()
        },
        model=snakemake.wildcards.model,
        model_params=snakemake.params.model,
        strategy=snakemake.wildcards.strategy,
        strategy_params=snakemake.params.strategy,
        seed=int(snakemake.wildcards.seed),
        runtime_params=snakemake.params.runtime,
        checkpoint_path=Path(snakemake.output.checkpoint),
        history_path=Path(snakemake.output.history),
        predictions_path=Path(snakemake.output.predictions),
        valid_predictions_path=Path(snakemake.output.valid_predictions),
        finetune_epochs=snakemake.params.finetune_epochs,
    )
