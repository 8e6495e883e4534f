"""Post-processing mitigation: per-group logit offsets fitted on the validation split of a
trained (or fused, or audited) model, applied to its test predictions; nothing is retrained
and the test split is never read before the offsets are fixed."""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from fairfer.fairness.metrics import as_columns, attribute_label, row_groups
from fairfer.schemas import extra_attributes_of, predictions_schema, schema_metadata, write_parquet
from fairfer.training.postprocessing import apply_offsets, fit_offsets, group_codes

logger = logging.getLogger(__name__)


def log_posteriors(predictions: pd.DataFrame) -> np.ndarray:
    probabilities = np.stack(predictions["probabilities"].to_numpy()).astype(np.float64)
    return np.log(np.clip(probabilities, 1e-12, None))


def run(
    valid_path: Path,
    test_path: Path,
    output: Path,
    report_path: Path,
    *,
    strategy: str,
    params: dict,
) -> pd.DataFrame:
    classes = json.loads(schema_metadata(test_path)["classes"])
    valid = pq.read_table(valid_path).to_pandas()
    attributes = params["groups"]
    valid_groups = row_groups(valid, attributes)
    names = sorted(valid_groups.dropna().unique())
    labels = pd.Categorical(valid["y_true"], categories=classes).codes
    fit = fit_offsets(
        log_posteriors(valid),
        labels,
        group_codes(valid_groups, names),
        group_names=names,
        objective=params["objective"],
        accuracy_budget=params["accuracy_budget"],
        offset_range=params["offset_range"],
        steps=params["steps"],
        passes=params["passes"],
    )
    # Only now is the test split read, and only to apply the fitted offsets.
    test = pq.read_table(test_path).to_pandas()
    adjusted = apply_offsets(
        log_posteriors(test), group_codes(row_groups(test, attributes), names), fit.offsets
    )
    predictions = test.assign(
        strategy=strategy,
        y_pred=np.asarray(classes)[adjusted.argmax(axis=1)],
        probabilities=list(adjusted.astype(np.float32)),
    )
    write_parquet(predictions, output, predictions_schema(classes, extra_attributes_of(test_path)))
    sources = sorted(set(valid[[f"{a}_source" for a in as_columns(attributes)]].stack()))
    report = {
        "base": params["base"],
        "groups": attribute_label(attributes),
        "group_labels": sources,
        "objective": params["objective"],
        "accuracy_budget": params["accuracy_budget"],
        "valid_before": fit.before,
        "valid_after": fit.after,
        "offsets": {
            group: dict(zip(classes, map(float, row), strict=True))
            for group, row in zip(fit.groups, fit.offsets, strict=True)
        },
        "test_accuracy": {
            "before": float((test["y_true"] == test["y_pred"]).mean()),
            "after": float((predictions["y_true"] == predictions["y_pred"]).mean()),
        },
    }
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    logger.info(
        "%s on %s (groups %s, %s labels): valid %s -> %s",
        strategy, params["base"], report["groups"], sources, fit.before, fit.after,
    )  # fmt: skip
    return predictions


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    run(
        Path(snakemake.input.valid),
        Path(snakemake.input.test),
        Path(snakemake.output.predictions),
        Path(snakemake.output.report),
        strategy=snakemake.wildcards.strategy,
        params=snakemake.params.strategy,
    )
