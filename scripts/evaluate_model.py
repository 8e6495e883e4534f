"""Predict another emotion dataset's test split with a trained model (cross-dataset evaluation).

The protocol of earlier FER bias-mitigation work: train on one dataset (FER+), test on another
(RAF-DB, whose demographics are ground truth). The evaluation dataset's emotions are mapped onto
the model's classes by name; its images of a class the model never learnt are left out (and
counted in the log), and with ``restrict_to_shared_classes`` the model's answer is taken among
the classes both share (its posterior renormalised over them), so that a class the evaluation
dataset cannot have does not count as an error by construction.
"""

import logging
from pathlib import Path

import torch

from fairfer.config_checks import VECTOR_INPUTS
from fairfer.inference import resolve_device
from fairfer.schemas import extra_attributes_of, predictions_schema, write_parquet
from fairfer.training.data import (
    emotion_rows,
    input_lookup,
    labelled_split,
    model_inputs,
    prediction_frame,
)
from fairfer.training.models import ModelSpec, build_network
from fairfer.training.trainer import Runtime, predict_proba

logger = logging.getLogger(__name__)


def run(
    checkpoint_path: Path,
    manifest_path: Path,
    group_labels_path: Path,
    model_input_paths: list[Path],
    predictions_path: Path,
    *,
    dataset: str,
    runtime_params: dict,
    restrict_to_shared_classes: bool,
) -> dict:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    classes = list(checkpoint["classes"])
    # The trained weights are loaded below: nothing pretrained is fetched again.
    spec = ModelSpec.from_config({**checkpoint["model_params"], "pretrained": None})
    rows = emotion_rows(manifest_path, group_labels_path)
    rows["input_id"] = rows["image_id"]
    test = labelled_split(rows, "test")
    unknown = sorted(set(test["emotion"]) - set(classes))
    counts = {
        "test_images": len(test),
        "classes_not_in_model": {c: int((test["emotion"] == c).sum()) for c in unknown},
    }
    test = test[test["emotion"].isin(classes)]
    present = set(test["emotion"])
    shared = [c for c in classes if c in present] if restrict_to_shared_classes else classes
    x, kept = model_inputs(
        test, source=spec.input, lookup=input_lookup(spec, model_input_paths), size=spec.side
    )
    counts["without_model_input"] = len(test) - len(kept)
    counts["predicted"] = len(kept)
    logger.info("%s on %s test: %s; classes %s", checkpoint_path, dataset, counts, shared)
    network = build_network(
        spec,
        n_classes=len(classes),
        embedding_dim=x.shape[1] if spec.input in VECTOR_INPUTS else 128,
    )
    network.load_state_dict(checkpoint["network"])
    runtime = Runtime(
        device=resolve_device(runtime_params["device"], key="training.device"),
        mixed_precision=runtime_params["mixed_precision"],
    )
    probabilities = predict_proba(network, x, runtime=runtime)
    columns = [classes.index(c) for c in shared]
    probabilities = probabilities[:, columns]
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    extra = extra_attributes_of(group_labels_path)
    predictions = prediction_frame(
        kept,
        probabilities,
        shared,
        extra_attributes=extra,
        strategy=checkpoint["strategy"],
        model=checkpoint["model"],
        seed=checkpoint["seed"],
    )
    write_parquet(predictions, predictions_path, predictions_schema(shared, extra))
    counts["accuracy"] = float((predictions["y_true"] == predictions["y_pred"]).mean())
    logger.info("%s accuracy on %s test: %.4f", checkpoint_path, dataset, counts["accuracy"])
    return counts


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    torch.set_num_threads(snakemake.threads)
    run(
        Path(snakemake.input.checkpoint),
        Path(snakemake.input.manifest),
        Path(snakemake.input.group_labels),
        [Path(p) for p in snakemake.input.model_inputs],
        Path(snakemake.output.predictions),
        dataset=snakemake.wildcards.dataset,
        runtime_params=snakemake.params.runtime,
        restrict_to_shared_classes=snakemake.params.restrict_to_shared_classes,
    )
