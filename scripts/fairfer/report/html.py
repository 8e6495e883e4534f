"""One self-contained HTML page of the fairness results, for reading offline.

Everything is inline: CSS in a ``<style>`` element, figures as ``data:image/png;base64``
URIs, no script and no external reference, so the file can be mailed, archived or opened
from a USB stick and shows the same thing. :func:`build_report` takes the tables and figure
files; :func:`external_references` lists any URL that would leave the page.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairfer.fairness.tables import HEADLINE_METRICS

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
  color: #1f2328; background: #fff; line-height: 1.45; }
main { max-width: 1280px; margin: 0 auto; padding: 1.5rem 2rem 4rem; }
h1 { font-size: 1.7rem; margin-bottom: 0.2rem; }
h2 { border-bottom: 2px solid #d0d7de; padding-bottom: 0.2rem; margin-top: 2.5rem; }
h3 { margin-top: 1.8rem; }
nav { background: #f6f8fa; border: 1px solid #d0d7de; padding: 0.6rem 1rem; border-radius: 6px; }
nav a { margin-right: 1.1rem; color: #0969da; text-decoration: none; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.84rem; }
th, td { border: 1px solid #d0d7de; padding: 0.25rem 0.5rem; text-align: right;
  vertical-align: top; }
th { background: #f6f8fa; }
td { white-space: nowrap; }
td.text, th.text { text-align: left; white-space: normal; }
.scroll { overflow-x: auto; max-width: 100%; }
tr.small td { background: #fff8c5; }
tr.unknown td { color: #656d76; font-style: italic; }
td.better { background: #dafbe1; }
td.worse { background: #ffebe9; }
.delta { display: block; color: #57606a; font-size: 0.78rem; }
.note { color: #57606a; font-size: 0.88rem; }
.badge { display: inline-block; padding: 0 0.4rem; border-radius: 4px; font-size: 0.78rem;
  background: #ddf4ff; color: #0550ae; margin-left: 0.3rem; }
.badge.inferred { background: #fff1e5; color: #953800; }
figure { margin: 0.8rem 0 1.4rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: 0.85rem; margin-top: 0.3rem; }
details { margin: 0.5rem 0; }
summary { cursor: pointer; color: #0969da; }
dl.definitions dt { font-weight: 600; margin-top: 0.5rem; }
dl.definitions dd { margin-left: 1.2rem; }
"""


@dataclass(frozen=True)
class Figure:
    """A PNG figure with its caption."""

    path: Path
    caption: str


@dataclass
class ReportInputs:
    """Everything the page shows.

    Attributes
    ----------
    title : str
    overview : mapping of str to str
        Key facts shown under the title (dataset, test images, strategies, draws, ...).
    comparison : pandas.DataFrame
        ``over_seeds`` table of :func:`fairfer.fairness.tables.compare_runs`.
    summary, group_metrics, class_disparities : pandas.DataFrame
        Tables of :func:`fairfer.fairness.tables.fairness_tables` for every run.
    headline_figures : list of Figure
        Shown with the headline comparison (e.g. the trade-off plot).
    attribute_figures : mapping of str to list of Figure
        Per attribute label, shown in its section (e.g. accuracy per group).
    disparity_figures : list of Figure
        Per-class disparity figures (equalized-odds heat maps).
    confusion_figures : mapping of str to list of Figure
        Per attribute label, one confusion-matrix grid per run (collapsed).
    gradcam_figures : list of Figure
        One Grad-CAM grid per run.
    composition_figures : list of Figure
        Composition of the dataset by group.
    label_quality : pandas.DataFrame, optional
        Accuracy of the inferred labels (attribute, accuracy, balanced accuracy, ECE).
    audit : pandas.DataFrame, optional
        Dataset bias metrics of :func:`fairfer.fairness.dataset_audit.audit_dataset` (one row per
        attribute).
    audit_figures : list of Figure
        NPMI heat maps of the dataset audit.
    methods : mapping of str to str
        Definitions shown at the end (term -> explanation).
    run_column : str
        Column naming a run in the tables (``strategy``; a combined key with models/seeds).
    modality_comparison : pandas.DataFrame, optional
        An audio-visual dataset's ``over_seeds`` modality comparison
        (:func:`fairfer.audiovisual.modalities.compare_modalities`).
    crowd_accuracy : pandas.DataFrame, optional
        The crowd's recognition per modality and group
        (:func:`fairfer.audiovisual.modalities.crowd_accuracy`).
    """

    title: str
    overview: Mapping[str, str]
    comparison: pd.DataFrame
    summary: pd.DataFrame
    group_metrics: pd.DataFrame
    class_disparities: pd.DataFrame
    headline_figures: list[Figure] = field(default_factory=list)
    attribute_figures: Mapping[str, list[Figure]] = field(default_factory=dict)
    disparity_figures: list[Figure] = field(default_factory=list)
    confusion_figures: Mapping[str, list[Figure]] = field(default_factory=dict)
    gradcam_figures: list[Figure] = field(default_factory=list)
    composition_figures: list[Figure] = field(default_factory=list)
    label_quality: pd.DataFrame | None = None
    audit: pd.DataFrame | None = None
    audit_figures: list[Figure] = field(default_factory=list)
    methods: Mapping[str, str] = field(default_factory=dict)
    run_column: str = "strategy"
    modality_comparison: pd.DataFrame | None = None
    crowd_accuracy: pd.DataFrame | None = None


def build_report(inputs: ReportInputs) -> str:
    """The report page as one HTML string (see the module docstring)."""
    attributes = list(dict.fromkeys(inputs.summary["attribute"]))
    sections = [
        ("headline", "Headline comparison", _headline(inputs, attributes)),
        *(
            [("modalities", "Modality comparison", _modality_section(inputs))]
            if inputs.modality_comparison is not None
            else []
        ),
        *[
            (f"attribute-{i}", f"By {attribute}", _attribute_section(inputs, attribute))
            for i, attribute in enumerate(attributes)
        ],
        ("disparities", "Per-class disparities", _disparity_section(inputs)),
        ("confusions", "Confusion matrices per group", _confusion_section(inputs)),
        ("gradcam", "Grad-CAM", _figures(inputs.gradcam_figures)),
        ("composition", "Dataset and group labels", _composition_section(inputs)),
        ("audit", "Dataset audit: representational and stereotypical bias", _audit_section(inputs)),
        ("methods", "Definitions and methods", _methods(inputs.methods)),
    ]
    navigation = "".join(f'<a href="#{anchor}">{_text(title)}</a>' for anchor, title, _ in sections)
    overview = "".join(
        f"<tr><th class='text'>{_text(k)}</th><td class='text'>{_text(v)}</td></tr>"
        for k, v in inputs.overview.items()
    )
    body = "".join(
        f'<section id="{anchor}"><h2>{_text(title)}</h2>{content}</section>'
        for anchor, title, content in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_text(inputs.title)}</title><style>{_STYLE}</style></head><body><main>"
        f"<h1>{_text(inputs.title)}</h1><div class='scroll'><table>{overview}</table></div>"
        f"<nav>{navigation}</nav>"
        f"{body}</main></body></html>\n"
    )


def external_references(page: str) -> list[str]:
    """URLs in ``src``, ``href`` or CSS ``url()`` that are neither data URIs nor anchors."""
    attributes = re.findall(
        r"""\b(?:src|href|srcset|action|poster)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""",
        page,
        flags=re.IGNORECASE,
    )
    found = ["".join(values) for values in attributes]
    found += re.findall(r"""url\(\s*["']?([^"')]*)""", page, flags=re.IGNORECASE)
    found += re.findall(r"""@import\s+["']([^"']*)""", page, flags=re.IGNORECASE)
    return [url for url in found if not url.startswith(("data:", "#"))]


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _text(value: object) -> str:
    return html.escape(str(value))


def _number(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return f"{float(value):.{digits}f}"


def _with_interval(row: Mapping[str, object], column: str) -> str:
    text = _number(row[column])
    low, high = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if low is not None and not pd.isna(low):
        text += f" [{_number(low)}, {_number(high)}]"
    return text


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    row_classes: Sequence[str] | None = None,
    cell_classes: Sequence[Sequence[str]] | None = None,
    text_columns: Sequence[int] = (0,),
) -> str:
    """An HTML table from already-escaped cells."""
    head = "".join(
        f"<th class='{'text' if i in text_columns else ''}'>{_text(h)}</th>"
        for i, h in enumerate(header)
    )
    body = []
    for r, cells in enumerate(rows):
        extra = cell_classes[r] if cell_classes else [""] * len(cells)
        cells_html = []
        for i, cell in enumerate(cells):
            css = " ".join(filter(None, ["text" if i in text_columns else "", extra[i]]))
            cells_html.append(f"<td class='{css}'>{cell}</td>")
        tds = "".join(cells_html)
        body.append(f"<tr class='{row_classes[r] if row_classes else ''}'>{tds}</tr>")
    return (
        f"<div class='scroll'><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _figures(figures: Sequence[Figure]) -> str:
    if not figures:
        return "<p class='note'>No figure.</p>"
    return "".join(
        f"<figure><img src='{data_uri(f.path)}' alt='{_text(f.caption)}'>"
        f"<figcaption>{_text(f.caption)}</figcaption></figure>"
        for f in figures
    )


def _source_badge(summary: pd.DataFrame, attribute: str) -> str:
    row = summary[summary["attribute"] == attribute].iloc[0]
    source = str(row["label_source"])
    css = "badge inferred" if source != "ground_truth" else "badge"
    return f"<span class='{css}'>labels: {_text(row['label_note'])}</span>"


def _headline(inputs: ReportInputs, attributes: Sequence[str]) -> str:
    comparison = inputs.comparison
    parts = [
        "<p class='note'>Each cell: the figure with its 95% bootstrap interval over test "
        "images, and below it the change against the baseline with the interval of a paired "
        "bootstrap (same resampled images for both). Green: better beyond sampling noise; "
        "red: worse; no colour: no clear change. With several seeds, figures are means over "
        "seeds.</p>"
    ]
    if "strategy_note" in comparison.columns:
        notes = comparison.dropna(subset=["strategy_note"]).drop_duplicates("strategy")
        parts += [
            f"<p class='note'>{_text(row['strategy'])}: {_text(row['strategy_note'])}.</p>"
            for row in notes.to_dict("records")
        ]
    run_keys = [c for c in ("model", "strategy") if c in comparison.columns]
    for attribute in attributes:
        table = comparison[comparison["attribute"] == attribute]
        parts.append(
            f"<h3>{_text(attribute)}{_source_badge(inputs.summary, attribute)}</h3>"
            + _metric_grid(table, run_keys)
        )
    parts.append(_figures(inputs.headline_figures))
    return "".join(parts)


def _metric_grid(table: pd.DataFrame, run_keys: Sequence[str]) -> str:
    """One row per run of a comparison table, one cell per headline metric: the figure with
    its interval and, unless the run is the reference, the paired change."""
    rows, cell_classes = [], []
    for keys, run in table.groupby(list(run_keys), sort=False):
        by_metric = run.set_index("metric")
        label = " / ".join(map(str, keys if isinstance(keys, tuple) else (keys,)))
        cells, classes = [_text(label)], [""]
        for metric in HEADLINE_METRICS:
            if metric not in by_metric.index:
                cells.append("–")
                classes.append("")
                continue
            row = by_metric.loc[metric]
            text = _text(_with_interval(_row_with(row, "estimate"), "estimate"))
            verdict = row["verdict"]
            if verdict != "baseline":
                delta = _with_interval(_row_with(row, "delta"), "delta")
                text += f"<span class='delta'>Δ {_text(delta)}</span>"
            cells.append(text)
            classes.append(verdict if verdict in ("better", "worse") else "")
        rows.append(cells)
        cell_classes.append(classes)
    header = [" / ".join(run_keys), *[m.replace("_", " ") for m in HEADLINE_METRICS]]
    return _table(header, rows, cell_classes=cell_classes)


def _recognition(record: Mapping[str, object]) -> str:
    low, high = record["recognition_ci_low"], record["recognition_ci_high"]
    return _text(f"{_number(record['recognition'])} [{_number(low)}, {_number(high)}]")


def _modality_section(inputs: ReportInputs) -> str:
    comparison = inputs.modality_comparison
    parts = [
        "<p class='note'>Every clip model against each reference modality, within the same "
        "strategy and seed, on the same test clips: the figure with its interval and the change "
        "(model minus reference) with the interval of a paired bootstrap. Green: the model is "
        "better than the reference beyond sampling noise (a smaller gap, a higher accuracy); "
        "red: worse.</p>"
    ]
    for attribute in dict.fromkeys(comparison["attribute"]):
        table = comparison[comparison["attribute"] == attribute]
        parts.append(
            f"<h3>{_text(attribute)}</h3>"
            + _metric_grid(table, ["strategy", "modality", "reference"])
        )
    crowd = inputs.crowd_accuracy
    if crowd is not None and not crowd.empty:
        parts.append(
            "<h3>The crowd's own accuracy (human reference)</h3><p class='note'>How often the "
            "majority vote of CREMA-D's raters named the intended emotion when they heard the "
            "voice alone (audio), saw the face alone (visual) or both (summaryTable.csv; a tie "
            "of k emotions counts 1/k), over every rated clip of the release and over this "
            "run's test clips; intervals from a bootstrap over actors. gap: the largest minus "
            "the smallest group among groups of enough clips and at least three actors. "
            "Published: the mean share of individual raters recognising it (Cao et al. 2014), "
            "lower than a majority vote's.</p>"
        )
        rows = []
        for record in crowd.to_dict("records"):
            if record["group"] not in ("all", "gap"):
                continue
            extremes = (
                f" ({_text(record['highest'])} − {_text(record['lowest'])})"
                if record["group"] == "gap"
                else ""
            )
            rows.append(
                [
                    _text(record["scope"]),
                    _text(record["modality"]),
                    _text(record["attribute"]),
                    _text(record["group"]) + extremes,
                    _number(record["clips"]),
                    _number(record["actors"]),
                    _recognition(record),
                    _number(record["published_rater_accuracy"]),
                ]
            )
        header = ["scope", "modality", "attribute", "group", "clips", "actors", "recognition",
                  "published"]  # fmt: skip
        parts.append(_table(header, rows, text_columns=(0, 1, 2, 3)))
        groups = crowd[~crowd["group"].isin(["all", "gap"])]
        detail = [
            [
                _text(r["scope"]), _text(r["modality"]), _text(r["attribute"]), _text(r["group"]),
                _number(r["clips"]), _number(r["actors"]), _recognition(r),
            ]
            for r in groups.to_dict("records")
        ]  # fmt: skip
        parts.append(
            "<details><summary>Every group</summary>"
            + _table(header[:-1], detail, text_columns=(0, 1, 2, 3))
            + "</details>"
        )
    return "".join(parts)


def _interval(row: Mapping[str, object], column: str, suffix: str) -> str:
    low, high = row.get(f"{column}_{suffix}_low"), row.get(f"{column}_{suffix}_high")
    if low is None or pd.isna(low):
        return "–"
    return f"[{_number(low)}, {_number(high)}]"


def _label_error_table(summary: pd.DataFrame, run: str) -> str:
    """Observed, imputed and corrected worst group and gap of an inferred attribute."""
    if "correction" not in summary.columns or (summary["label_source"] == "ground_truth").all():
        return ""
    rows = []
    for row in summary.to_dict("records"):
        rows.append(
            [
                _text(row[run]),
                _text(f"{row['worst_group']}: {_with_interval(row, 'worst_group_accuracy')}"),
                _text(
                    f"{_number(row.get('worst_group_accuracy_imputed'))} "
                    f"{_interval(row, 'worst_group_accuracy', 'mi')}"
                ),
                _text(
                    f"{row.get('worst_group_corrected') or '–'}: "
                    f"{_with_interval(row, 'worst_group_accuracy_corrected')}"
                ),
                _text(_with_interval(row, "accuracy_gap")),
                _text(
                    f"{_number(row.get('accuracy_gap_imputed'))} "
                    f"{_interval(row, 'accuracy_gap', 'mi')}"
                ),
                _text(_with_interval(row, "accuracy_gap_corrected")),
                _text(row["correction"]),
            ]
        )
    return (
        "<p class='note'>The groups are inferred, so each figure is given three ways: observed "
        "(per inferred group, bootstrap interval); imputed (the mean over draws that sample "
        "every label from its calibrated posterior, with that multiple-imputation interval); "
        "and corrected for misclassified groups with the in-domain confusion matrix (matrix "
        "method; the interval also resamples the validation images behind that matrix). The "
        "correction assumes that a group label's error is independent of whether the emotion "
        "prediction is right, given the true group; on faces whose race is known that "
        "assumption failed and the corrected gap came out far too large, while the imputed "
        "one was close to the truth (docs/labels.md, section 5).</p>"
        + _table(
            [
                run,
                "worst group (observed)",
                "worst-group accuracy (imputed)",
                "worst group (corrected)",
                "gap (observed)",
                "gap (imputed)",
                "gap (corrected)",
                "correction",
            ],
            rows,
            text_columns=(0, 1, 3, 7),
        )
    )


def _row_with(row: pd.Series, column: str) -> dict[str, object]:
    return {
        column: row[column],
        f"{column}_ci_low": row[f"{column}_ci_low"],
        f"{column}_ci_high": row[f"{column}_ci_high"],
    }


def _attribute_section(inputs: ReportInputs, attribute: str) -> str:
    run = inputs.run_column
    summary = inputs.summary[inputs.summary["attribute"] == attribute]
    groups = inputs.group_metrics[inputs.group_metrics["attribute"] == attribute]
    parts = [f"<p>{_source_badge(inputs.summary, attribute)}</p>"]
    summary_rows = []
    for row in summary.to_dict("records"):
        summary_rows.append(
            [
                _text(row[run]),
                _text(f"{row['worst_group']} (n={row['worst_group_count']})"),
                _text(_with_interval(row, "worst_group_accuracy")),
                _text(f"{row['best_group']} (n={row['best_group_count']})"),
                _text(_with_interval(row, "accuracy_gap")),
                _text(_with_interval(row, "accuracy_ratio")),
                _text(_with_interval(row, "dp_difference_max")),
                _text(_with_interval(row, "eo_difference_max"))
                + f" <span class='note'>({_text(row['eo_worst_class'])})</span>",
                _text(f"{row['n_small_groups']} of {row['n_groups']}"),
                _text(row["n_unknown"]),
            ]
        )
    parts.append(
        _table(
            [
                run,
                "worst group",
                "worst-group accuracy",
                "best group",
                "max-min gap",
                "min/max ratio",
                "DP difference (worst class)",
                "EO difference (worst class)",
                "small groups",
                "unknown",
            ],
            summary_rows,
            text_columns=(0, 1, 3),
        )
    )
    parts.append(_label_error_table(summary, run))
    parts.append(_figures(inputs.attribute_figures.get(attribute, [])))
    runs = list(dict.fromkeys(groups[run]))
    names = list(dict.fromkeys(groups["group"]))
    indexed = groups.set_index([run, "group"])
    rows, row_classes = [], []
    for name in names:
        first = indexed.loc[(runs[0], name)]
        cells = [_text(name), _number(int(first["count"])), _number(float(first["share"]))]
        for strategy in runs:
            row = indexed.loc[(strategy, name)]
            cells += [
                _text(_with_interval(row, "accuracy")),
                _number(row["balanced_accuracy"]),
                _number(row["macro_f1"]),
                _number(row["fpr"]),
                _number(row["fnr"]),
            ]
        rows.append(cells)
        row_classes.append(
            "unknown" if not first["known"] else ("small" if first["small_group"] else "")
        )
    header = ["group", "n", "share"]
    for strategy in runs:
        header += [
            f"{strategy}: accuracy [95% CI]",
            "balanced acc.",
            "macro-F1",
            "FPR",
            "FNR",
        ]
    parts.append(
        "<p class='note'>Rows in yellow: small groups (fewer test images than "
        "fairness.min_group_size), kept and flagged; in grey italics: images whose group "
        "is unknown (not a group; left out of every disparity). Intervals of every figure "
        "are in the Parquet/CSV tables.</p>" + _table(header, rows, row_classes=row_classes)
    )
    return "".join(parts)


def _disparity_section(inputs: ReportInputs) -> str:
    run = inputs.run_column
    parts = [_figures(inputs.disparity_figures)]
    table = inputs.class_disparities
    for name in dict.fromkeys(table[run]):
        subset = table[table[run] == name]
        rows = [
            [
                _text(r["attribute"]),
                _text(r["class"]),
                _number(r["n_positive"]),
                _number(r["min_group_positives"]),
                _text(_with_interval(r, "dp_difference")),
                _text(_with_interval(r, "dp_ratio")),
                _text(_with_interval(r, "spd_max_abs")),
                _text(_with_interval(r, "eop_difference")),
                _text(_with_interval(r, "eo_difference")),
                _text(r["eo_undefined_reason"] or ""),
            ]
            for r in subset.to_dict("records")
        ]
        header = [
            "attribute",
            "class",
            "images",
            "fewest in a group",
            "DP difference",
            "DP ratio",
            "max |SPD|",
            "equal opportunity diff.",
            "equalized odds diff.",
            "undefined because",
        ]
        parts.append(
            f"<details><summary>{_text(name)}: per-class table</summary>"
            + _table(header, rows, text_columns=(0, 1, 9))
            + "</details>"
        )
    return "".join(parts)


def _confusion_section(inputs: ReportInputs) -> str:
    if not inputs.confusion_figures:
        return "<p class='note'>No figure.</p>"
    return "".join(
        f"<details><summary>{_text(attribute)}</summary>{_figures(figures)}</details>"
        for attribute, figures in inputs.confusion_figures.items()
    )


def _composition_section(inputs: ReportInputs) -> str:
    parts = [_figures(inputs.composition_figures)]
    quality = inputs.label_quality
    if quality is not None and len(quality):
        rows = [
            [_text(r["attribute"])] + [_number(r[c]) for c in quality.columns[1:]]
            for r in quality.to_dict("records")
        ]
        parts.append(
            "<p class='note'>Accuracy of the inferred demographic labels where they are used "
            "(in-domain: FairFace val rendered like this dataset's images and put through the "
            "same alignment and embedding) and, for reference, on clean FairFace val: every "
            "table built on an inferred attribute inherits the in-domain noise.</p>"
            + _table([c.replace("_", " ") for c in quality.columns], rows)
        )
    return "".join(parts)


#: Columns of the dataset-audit table and their headings.
AUDIT_METRICS = {
    "richness": "richness",
    "effective_groups": "effective groups",
    "evenness": "evenness",
    "imbalance_ratio": "imbalance ratio",
    "cramers_v": "Cramér's V",
    "nmi": "NMI",
}


def _audit_section(inputs: ReportInputs) -> str:
    audit = inputs.audit
    if audit is None or audit.empty:
        return "<p class='note'>No dataset audit.</p>"
    rows = []
    for record in audit.to_dict("records"):
        cells = [_text(record["attribute"]), _text(record["label_source"]), _number(record["n"])]
        for metric in AUDIT_METRICS:
            text = _number(record.get(metric))
            imputed = record.get(f"{metric}_imputed")
            if imputed is not None and not pd.isna(imputed):
                text += (
                    f"<br><span class='note'>imputed {_number(imputed)} "
                    f"[{_number(record[f'{metric}_mi_low'])}, "
                    f"{_number(record[f'{metric}_mi_high'])}]</span>"
                )
            cells.append(text)
        rows.append(cells)
    note = (
        "<p class='note'>Bias of the emotion dataset itself, over its labelled images, before "
        "any model (Dominguez-Catena et al., IEEE TPAMI 2024, with their dataset-bias-metrics "
        "library). Representational: how many groups are present (richness), the effective "
        "number of equally common groups, the Shannon evenness (1: all groups equally common) "
        "and the imbalance ratio (largest over smallest group). Stereotypical: association of "
        "each attribute with the emotion label (Cramér's V and normalised mutual information; 0: "
        "independent), and per group and emotion the NPMI in the heat maps (positive: the group "
        "shows that emotion more often than independence predicts). For inferred attributes the "
        "figure of the assigned labels is followed by the mean and interval over labels drawn "
        "from each image's calibrated posterior.</p>"
    )
    header = ["attribute", "labels", "images", *AUDIT_METRICS.values()]
    return note + _table(header, rows, text_columns=(0, 1)) + _figures(inputs.audit_figures)


def _methods(methods: Mapping[str, str]) -> str:
    items = "".join(f"<dt>{_text(k)}</dt><dd>{_text(v)}</dd>" for k, v in methods.items())
    return f"<dl class='definitions'>{items}</dl>"


def method_notes(*, draws: int, level: float, method: str, min_group_size: int) -> dict[str, str]:
    """Definitions of the figures and of the intervals, for the report's last section."""
    percent = f"{level:.0%}"
    notes = {
        "Groups": "A sensitive attribute (race, gender, age) or an intersection (race x "
        "gender). Images whose attribute is unknown are counted apart and left out of every "
        f"disparity. Groups with fewer than {min_group_size} test images are flagged small, "
        "never dropped.",
        "Per group": "accuracy; balanced accuracy (mean recall over the classes present); "
        "macro-F1 (mean F1 over the classes true or predicted); FPR and FNR (mean over "
        "classes of the one-vs-rest false positive and false negative rates); per class: "
        "selection rate, TPR (recall), FPR, FNR.",
        "Per class, one-vs-rest": "labels binarised to 'is class c'. DP difference: max - min "
        "selection rate over groups; DP ratio: min / max (disparate impact); SPD: a group's "
        "selection rate minus that of all other groups (max |SPD| reported); equal "
        "opportunity difference: max - min TPR; equalized odds difference: the larger of the "
        "TPR and FPR differences (undefined, not 0, when a group has no image of the class). "
        "Summaries give the worst case and the mean over classes.",
        "Accuracy disparity": "worst-group accuracy, max - min accuracy gap, and min / max "
        "accuracy ratio (the fairness measure of Xu et al. 2020).",
        "Intervals": f"{percent} percentile bootstrap over the test images, {draws} draws, "
        "the interval fairlearn's MetricFrame(n_boot, ci_quantiles) gives, computed on "
        "confusion counts. Max/min statistics (gaps, worst group) are biased upward under "
        "resampling, so their intervals sit above the estimate; differences between "
        "strategies on the same draws cancel most of that bias.",
        "Paired comparison": "each strategy and the baseline (same model and seed) are "
        "measured on the same resampled test images; the interval of their difference "
        "decides 'better' / 'worse' / 'no clear change'. With several seeds the difference "
        "is averaged over seeds within each draw.",
    }
    if method == "multiple_imputation":
        notes["Label noise"] = (
            "for inferred attributes, a second interval also samples every inferred group "
            "label from its calibrated posterior in each draw (multiple imputation). The "
            "posterior does not depend on whether the emotion was recognised, so imputed "
            "labels dilute real group differences: read it as what the noisy labels can "
            "support, not as a corrected gap."
        )
    return notes
