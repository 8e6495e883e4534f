"""Late fusion of two trained models (e.g. visual and audio) of the same strategy and seed:
their posteriors averaged with the weight that is most accurate on the validation split."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from fairfer.audiovisual.fusion import fuse
from fairfer.schemas import extra_attributes_of, predictions_schema, schema_metadata, write_parquet
from fairfer.training.models import ModelSpec

logger = logging.getLogger(__name__)


def run(
    valid_paths: list[Path],
    test_paths: list[Path],
    output: Path,
    valid_output: Path,
    report_path: Path,
    *,
    model: str,
    model_params: dict,
) -> pd.DataFrame:
    spec = ModelSpec.from_config(model_params)
    classes = json.loads(schema_metadata(test_paths[0])["classes"])
    for path in [*valid_paths, *test_paths]:
        if json.loads(schema_metadata(path)["classes"]) != classes:
            raise ValueError(f"{path} has other classes than {test_paths[0]}: cannot fuse")
    valid = [pq.read_table(p).to_pandas() for p in valid_paths]
    test = [pq.read_table(p).to_pandas() for p in test_paths]
    fused_valid, fused, weight, grid = fuse(valid, test, classes, step=spec.weight_step)
    extra = extra_attributes_of(test_paths[0])
    # The fused valid posteriors too: post-processing strategies fit on them.
    for frame, posteriors, path in (
        (valid[0], fused_valid, valid_output),
        (test[0], fused, output),
    ):
        fused_frame = frame.assign(
            model=model,
            y_pred=np.asarray(classes)[posteriors.argmax(axis=1)],
            probabilities=list(posteriors.astype(np.float32)),
        )
        write_parquet(fused_frame, path, predictions_schema(classes, extra))
    predictions = pq.read_table(output).to_pandas()
    accuracy = {
        name: float((frame["y_true"] == frame["y_pred"]).mean())
        for name, frame in zip(spec.components, test, strict=True)
    }
    report = {
        "components": list(spec.components),
        "weight_of_first": weight,
        "valid_accuracy_by_weight": grid.to_dict("records"),
        "test_accuracy": {
            **accuracy,
            model: float((predictions["y_true"] == predictions["y_pred"]).mean()),
        },
    }
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    logger.info("%s: weight %.2f on %s; test accuracy %s", model, weight, spec.components[0],
                report["test_accuracy"])  # fmt: skip
    return predictions


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    run(
        [Path(p) for p in snakemake.input.valid],
        [Path(p) for p in snakemake.input.test],
        Path(snakemake.output.predictions),
        Path(snakemake.output.valid_predictions),
        Path(snakemake.output.report),
        model=snakemake.wildcards.model,
        model_params=snakemake.params.model,
    )
