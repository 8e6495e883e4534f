"""Figures and the self-contained HTML report of the fairness results."""

import json
import logging
from pathlib import Path

import pandas as pd

from fairfer.fairness.metrics import RUN_KEYS
from fairfer.fairness.tables import confusion_by_group
from fairfer.report.html import (
    Figure,
    ReportInputs,
    build_report,
    external_references,
    method_notes,
)
from fairfer.report.plots import (
    plot_equalized_odds_heatmaps,
    plot_group_accuracy,
    plot_group_confusions,
    plot_tradeoff,
)

logger = logging.getLogger(__name__)


def with_run_label(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``run``: the strategy, prefixed by model and suffixed by seed where present."""
    parts = [table[k].astype(str) for k in RUN_KEYS if k in table.columns]
    if "seed" in table.columns:
        parts[-1] = "seed " + parts[-1]
    label = parts[0]
    for part in parts[1:]:
        label = label + " / " + part
    return table.assign(run=label)


def first_seed(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of each model's first seed: per-run figures and tables show one seed per model,
    the comparison table the mean over all of them."""
    if "seed" not in table.columns:
        return table
    keys = [k for k in ("model",) if k in table.columns]
    first = table.groupby(keys)["seed"].transform("min") if keys else table["seed"].min()
    return table[table["seed"] == first]


def label_quality(classifier_report: dict, summary: pd.DataFrame) -> pd.DataFrame:
    """Accuracy, balanced accuracy and calibration error of the inferred attributes in use,
    in the emotion dataset's domain (rendered FairFace val) and on clean FairFace val."""
    inferred = set(summary.loc[summary["label_source"] != "ground_truth", "attribute"])
    rows = []
    for attribute, result in classifier_report.get("attributes", {}).items():
        if attribute not in inferred:
            continue
        row = {"attribute": attribute}
        for name, label in (("in_domain", "in-domain"), ("clean", "clean")):
            evaluation = result.get(name) or {}
            row[f"{label} accuracy"] = evaluation.get("accuracy")
            row[f"{label} balanced accuracy"] = evaluation.get("balanced_accuracy")
            row[f"{label} ECE"] = evaluation.get("expected_calibration_error")
        rows.append(row)
    return pd.DataFrame(rows)


def figures(
    predictions: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    classes: list[str],
    attributes: list,
    directory: Path,
) -> dict:
    """Write every figure of the report under ``directory``; return them by report section."""
    directory.mkdir(parents=True, exist_ok=True)
    summary, groups = tables["summary"], tables["group_metrics"]
    found: dict = {
        "headline": [
            Figure(
                plot_tradeoff(summary, directory / "tradeoff.png", run="run"),
                "Overall accuracy against the max-min accuracy gap, per strategy and attribute.",
            )
        ],
        "disparities": [
            Figure(
                plot_equalized_odds_heatmaps(
                    tables["class_disparities"], directory / "equalized_odds.png", run="run"
                ),
                "One-vs-rest equalized-odds difference per attribute and class; grey: "
                "undefined (a group has no image of the class).",
            )
        ],
        "attributes": {},
        "confusions": {},
    }
    for position, attribute in enumerate(dict.fromkeys(summary["attribute"])):
        path = plot_group_accuracy(
            groups[groups["attribute"] == attribute],
            directory / f"group_accuracy_{position}.png",
            run="run",
        )
        found["attributes"][attribute] = [
            Figure(path, f"Accuracy per {attribute} group with 95% bootstrap intervals.")
        ]
    labelled = with_run_label(predictions)
    for position, sensitive in enumerate(attributes):
        confusions = confusion_by_group(predictions, sensitive=sensitive, classes=classes)
        confusions = with_run_label(confusions)
        attribute = confusions["attribute"].iloc[0]
        found["confusions"][attribute] = [
            Figure(
                plot_group_confusions(
                    confusions[confusions["run"] == run],
                    directory / f"confusion_{position}_{index}.png",
                    classes=classes,
                    title=f"{run}: confusion matrices per {attribute} group",
                ),
                f"{run}: row-normalised confusion matrix of each {attribute} group.",
            )
            for index, run in enumerate(dict.fromkeys(labelled["run"]))
        ]
    return found


def report(
    predictions: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    comparison: pd.DataFrame,
    classifier_report: dict,
    *,
    classes: list[str],
    attributes: list,
    figure_directory: Path,
    composition_plot: Path,
    gradcam_plots: list[Path],
    settings: dict,
    audit: pd.DataFrame | None = None,
    audit_plot: Path | None = None,
    modality_comparison: pd.DataFrame | None = None,
    crowd_accuracy: pd.DataFrame | None = None,
) -> str:
    all_runs = list(dict.fromkeys(with_run_label(predictions)["run"]))
    predictions = first_seed(predictions)
    tables = {name: with_run_label(first_seed(table)) for name, table in tables.items()}
    found = figures(predictions, tables, classes, attributes, figure_directory)
    uncertainty = settings["uncertainty"]
    runs = list(dict.fromkeys(with_run_label(predictions)["run"]))
    summary = tables["summary"]
    inputs = ReportInputs(
        title=f"Fairness of facial emotion recognition on {settings['dataset']}",
        overview={
            "test images": f"{summary['n'].iloc[0]:,}",
            "runs": f"{len(all_runs)} (strategy comparison: mean over every seed)",
            "per-run figures and tables": ", ".join(runs),
            "baseline": settings["baseline"],
            "attributes": ", ".join(dict.fromkeys(summary["attribute"])),
            "intervals": f"{uncertainty['level']:.0%} percentile bootstrap, "
            f"{uncertainty['draws']} draws ({uncertainty['method']})",
            "small group": f"fewer than {settings['min_group_size']} test images",
        },
        comparison=comparison,
        summary=summary,
        group_metrics=tables["group_metrics"],
        class_disparities=tables["class_disparities"],
        headline_figures=found["headline"],
        attribute_figures=found["attributes"],
        disparity_figures=found["disparities"],
        confusion_figures=found["confusions"],
        gradcam_figures=[
            Figure(
                path,
                f"Grad-CAM maps of {'/'.join(path.with_suffix('').parts[-3:])}: where the model "
                "looked for its answer.",
            )
            for path in gradcam_plots
        ],
        composition_figures=[
            Figure(
                composition_plot,
                "Share of each group in the dataset (hatched: abstained; diamonds: the "
                "estimated true share, corrected for misclassified labels).",
            )
        ],
        label_quality=label_quality(classifier_report, summary),
        audit=audit,
        audit_figures=[
            Figure(
                audit_plot,
                "Normalised pointwise mutual information of each group and emotion in the "
                "dataset (red: more often together than independence predicts; blue: less).",
            )
        ]
        if audit_plot is not None
        else [],
        methods=method_notes(
            draws=uncertainty["draws"],
            level=uncertainty["level"],
            method=uncertainty["method"],
            min_group_size=settings["min_group_size"],
        ),
        run_column="run",
        modality_comparison=modality_comparison,
        crowd_accuracy=crowd_accuracy,
    )
    page = build_report(inputs)
    leaks = external_references(page)
    if leaks:
        raise ValueError(f"the report would load external resources: {leaks[:5]}")
    return page


if __name__ == "__main__":
    from fairfer.logs import configure_logging
    from fairfer.schemas import schema_metadata

    configure_logging(snakemake.log[0])
    prediction_paths = [Path(p) for p in snakemake.input.predictions]
    tables = {
        name: pd.concat([pd.read_parquet(p) for p in getattr(snakemake.input, name)])
        for name in ("group_metrics", "class_disparities", "summary")
    }
    page = report(
        pd.concat([pd.read_parquet(p) for p in prediction_paths], ignore_index=True),
        tables,
        pd.read_parquet(snakemake.input.comparison),
        json.loads(Path(snakemake.input.classifier_report).read_text()),
        classes=json.loads(schema_metadata(prediction_paths[0])["classes"]),
        attributes=snakemake.params.attributes,
        figure_directory=Path(snakemake.output.figures),
        composition_plot=Path(snakemake.input.composition_plot),
        gradcam_plots=[Path(p) for p in snakemake.input.gradcam],
        settings=snakemake.params.settings,
        audit=pd.read_csv(snakemake.input.audit),
        audit_plot=Path(snakemake.input.audit_plot),
        # An audio-visual dataset's modality comparison and crowd reference (else absent).
        modality_comparison=next(
            (pd.read_parquet(p) for p in snakemake.input.modality_comparison), None
        ),
        crowd_accuracy=next((pd.read_parquet(p) for p in snakemake.input.crowd_accuracy), None),
    )
    Path(snakemake.output.report).write_text(page, encoding="utf-8")
