"""Every strategy against the baseline (paired bootstrap), over seeds; metrics JSON for DVC."""

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from fairfer.fairness.metrics import RUN_KEYS, as_columns, attribute_label, write_table
from fairfer.fairness.tables import HEADLINE_METRICS, compare_runs, with_interval_text
from fairfer.fairness.uncertainty import interval_inputs, label_accuracies
from fairfer.group_labels.correction import label_errors, used_evaluation
from fairfer.schemas import schema_metadata

logger = logging.getLogger(__name__)


def headline_metrics(comparison: pd.DataFrame) -> dict:
    """Nested {[model:] strategy: {attribute: {figure: value}}} of the figures worth tracking.

    Per headline metric: its value (mean over seeds), bootstrap interval, change against the
    baseline and that change's paired interval; NaN becomes null.
    """
    keys = [k for k in RUN_KEYS if k in comparison.columns and k != "seed"]
    metrics: dict = {}
    rows = comparison[comparison["metric"].isin(HEADLINE_METRICS)]
    for row in rows.to_dict("records"):
        node = metrics
        for key in keys:
            node = node.setdefault(str(row[key]), {})
        figures = node.setdefault(row["attribute"], {})
        for column, suffix in (
            ("estimate", ""),
            ("estimate_ci_low", "_ci_low"),
            ("estimate_ci_high", "_ci_high"),
            ("delta", "_delta"),
            ("delta_ci_low", "_delta_ci_low"),
            ("delta_ci_high", "_delta_ci_high"),
        ):
            value = row[column]
            figures[f"{row['metric']}{suffix}"] = None if pd.isna(value) else round(float(value), 6)
    return metrics


def compare(
    prediction_paths: list[Path],
    group_labels_path: Path,
    classifier_report: dict,
    *,
    attributes: list,
    uncertainty: dict,
    seed: int,
    baseline: str,
    correction: dict,
    min_group_size: int,
    postprocess: dict | None = None,
) -> dict[str, pd.DataFrame]:
    predictions = pd.concat(
        [pq.read_table(path).to_pandas() for path in prediction_paths], ignore_index=True
    )
    notes = strategy_notes(predictions, postprocess or {})
    classes = json.loads(schema_metadata(prediction_paths[0])["classes"])
    _, posteriors = interval_inputs(uncertainty, group_labels_path, attributes)
    tables = compare_runs(
        predictions,
        attributes=attributes,
        classes=classes,
        # The paired intervals are the point of this table, even with method "none".
        draws=uncertainty["draws"],
        level=uncertainty["level"],
        seed=seed,
        posteriors=posteriors,
        baseline=baseline,
        label_accuracy=label_accuracies(classifier_report),
        corrections=label_errors(classifier_report, **correction),
        min_group_size=min_group_size,
    )
    for table in tables.values():
        table["strategy_note"] = table["strategy"].map(notes)
    return tables


def strategy_notes(predictions: pd.DataFrame, postprocess: dict) -> dict[str, str]:
    """What a post-processing strategy did, for the tables: whose predictions, which groups it
    read at prediction time and where those labels come from (inferred labels carry noise)."""
    notes = {}
    for strategy, params in postprocess.items():
        columns = as_columns(params["groups"])
        rows = predictions[predictions["strategy"] == strategy]
        sources = sorted(set(rows[[f"{c}_source" for c in columns]].stack())) if len(rows) else []
        notes[strategy] = (
            f"post-processed {params['base']} ({params['objective']}, fitted on valid): groups "
            f"{attribute_label(params['groups'])} at prediction time are "
            f"{'/'.join(sources) or 'unknown'} labels"
            + (
                "; inferred labels are noisy, so the adjustment is too"
                if "inferred" in sources
                else ""
            )
        )
    return notes


def label_metrics(classifier_report: dict) -> dict:
    """The inferred labels' accuracy where used (``in_domain``) and on clean FairFace val,
    per attribute: ``{"attributes": {"race": {"in_domain": {"accuracy": ...}, ...}}}``."""
    figures = ("accuracy", "balanced_accuracy", "expected_calibration_error")
    attributes = {}
    for attribute, result in classifier_report.get("attributes", {}).items():
        attributes[attribute] = {
            name: {key: round(float(result[name][key]), 6) for key in figures}
            for name in ("in_domain", "clean")
            if result.get(name)
        }
        attributes[attribute]["used"] = {
            key: round(float(used_evaluation(result)[key]), 6) for key in figures
        }
    return {"fit_on": classifier_report.get("fit_on"), "attributes": attributes}


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    result = compare(
        [Path(p) for p in snakemake.input.predictions],
        Path(snakemake.input.group_labels),
        json.loads(Path(snakemake.input.classifier_report).read_text()),
        attributes=snakemake.params.attributes,
        uncertainty=snakemake.params.uncertainty,
        seed=snakemake.params.seed,
        baseline=snakemake.params.baseline,
        correction=snakemake.params.correction,
        min_group_size=snakemake.params.min_group_size,
        postprocess=snakemake.params.postprocess,
    )
    for name, output in (("over_seeds", "table"), ("by_seed", "by_seed")):
        stem = Path(snakemake.output[output][0]).with_suffix("")
        write_table(result[name], stem, markdown=with_interval_text(result[name]))
    metrics = headline_metrics(result["over_seeds"])
    # Beside the models: no model is named group_labels (config check in common.smk).
    metrics["group_labels"] = label_metrics(
        json.loads(Path(snakemake.input.classifier_report).read_text())
    )
    Path(snakemake.output.metrics).write_text(json.dumps(metrics, indent=2) + "\n")
