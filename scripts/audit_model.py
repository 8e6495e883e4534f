"""Score a model fairfer did not train (a predictions file, or a TorchScript / ONNX model run
on the dataset's images) on the emotion dataset's test split, and on valid where it can,
into the shared predictions schema: it then gets every table, comparison and report entry."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fairfer.audit import ModelRunner, model_posteriors, predictions_from_file, read_table
from fairfer.errors import UserError
from fairfer.schemas import extra_attributes_of, predictions_schema, write_parquet
from fairfer.training.data import (
    dataset_classes,
    emotion_rows,
    labelled_split,
    prediction_frame,
    read_aligned_crops,
)

logger = logging.getLogger(__name__)


def split_posteriors(
    rows: pd.DataFrame, classes: list[str], settings: dict, *, name: str, split: str,
    aligned: pd.Series | None,
) -> tuple[pd.DataFrame, np.ndarray] | None:  # fmt: skip
    """The rows scored and their posteriors; None when the model gives nothing for ``split``."""
    if "predictions" in settings and settings["predictions"]:
        key = "predictions" if split == "test" else "valid_predictions"
        if not settings.get(key):
            return None
        frame = read_table(Path(settings[key]), name=name, key=key)
        return rows, predictions_from_file(
            frame, rows, classes, settings, name=name, key=key, split=split
        )
    kind = "torchscript" if settings.get("torchscript") else "onnx"
    spec = settings["input"]
    if spec["source"] == "aligned":
        found = rows["image_id"].map(aligned)
        rows = rows[found.notna().to_numpy()]
        images = found.dropna().tolist()
    else:
        images = rows["image"].tolist()
    runner = ModelRunner(kind, Path(settings[kind]), name=name)
    return rows, model_posteriors(runner, images, spec, classes, name=name)


def run(
    manifest_path: Path,
    group_labels_path: Path,
    aligned_paths: list[Path],
    output: Path,
    valid_output: Path,
    report_path: Path,
    *,
    name: str,
    settings: dict,
    strategy: str,
) -> pd.DataFrame:
    sources = [k for k in ("predictions", "torchscript", "onnx") if settings.get(k)]
    if len(sources) != 1:
        raise UserError(
            f"config key audit.models.{name} gives {sources or 'none'} of predictions, "
            "torchscript and onnx; give exactly one."
        )
    if sources[0] != "predictions" and not settings.get("input"):
        raise UserError(
            f"config key audit.models.{name}.input is missing: a {sources[0]} model needs its "
            "input spec (size, grayscale, source, pixel_scale, mean, std, class_order, output, "
            "test_time_flip)."
        )
    rows = emotion_rows(manifest_path, group_labels_path)
    extra = extra_attributes_of(group_labels_path)
    classes = dataset_classes(labelled_split(rows, "train"))
    aligned = read_aligned_crops(aligned_paths) if aligned_paths else None
    report = {"model": name, "source": sources[0], "classes": classes}
    for split, path in (("test", output), ("valid", valid_output)):
        scored = split_posteriors(
            labelled_split(rows, split), classes, settings, name=name, split=split,
            aligned=aligned,
        )  # fmt: skip
        if scored is None:
            frame = prediction_frame(
                rows.iloc[:0], np.zeros((0, len(classes))), classes, extra_attributes=extra,
                strategy=strategy, model=name, seed=0,
            )  # fmt: skip
        else:
            kept, posteriors = scored
            frame = prediction_frame(
                kept, posteriors, classes, extra_attributes=extra, strategy=strategy,
                model=name, seed=0,
            )  # fmt: skip
        write_parquet(frame, path, predictions_schema(classes, extra))
        report[split] = {
            "images": len(frame),
            "accuracy": float((frame["y_true"] == frame["y_pred"]).mean()) if len(frame) else None,
        }
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("audited %s: %s", name, report)
    return pd.read_parquet(output)


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    run(
        Path(snakemake.input.manifest),
        Path(snakemake.input.group_labels),
        [Path(p) for p in snakemake.input.aligned],
        Path(snakemake.output.predictions),
        Path(snakemake.output.valid_predictions),
        Path(snakemake.output.report),
        name=snakemake.wildcards.model,
        settings=snakemake.params.settings,
        strategy=snakemake.wildcards.strategy,
    )
