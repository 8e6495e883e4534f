"""Demographic bias of an emotion dataset itself, before any model is trained.

Two kinds, as defined by Dominguez-Catena, Paternain and Galar ("Metrics for dataset
demographic bias: a case study on facial expression recognition", IEEE TPAMI 2024), computed
with their library ``dataset-bias-metrics``:

- representational bias, per attribute: richness (groups present), the effective number of
  groups (exponential of the Shannon entropy), Shannon evenness (entropy over its maximum) and
  the imbalance ratio (largest group over smallest);
- stereotypical bias, per attribute and the emotion label: Cramer's V (bias-corrected) and the
  normalised mutual information, and per (group, emotion) cell the normalised pointwise mutual
  information (NPMI: 0 independent, 1 the group only shows that emotion, -1 never).

Inferred labels carry their error into these figures. Where an attribute is inferred, every
metric is also computed on labels drawn from each image's calibrated posterior, ``draws``
times: the mean and the percentile interval over the draws are reported next to the figure of
the assigned labels (as the fairness tables' multiple imputation does).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import dataset_bias_metrics as dbm
import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: Representational metrics: column name -> the library's function.
REPRESENTATIONAL = {
    "richness": dbm.richness,
    "effective_groups": dbm.ens,
    "evenness": dbm.shannon_evenness,
    "imbalance_ratio": dbm.imbalanceRatio,
}
#: Stereotypical (attribute x emotion) metrics: column name -> the library's function.
STEREOTYPICAL = {"cramers_v": dbm.cramersv, "nmi": dbm.nmi}


def _metrics(frame: pd.DataFrame, attribute: str) -> dict[str, float]:
    values = {name: float(f(frame, attribute)) for name, f in REPRESENTATIONAL.items()}
    if frame["emotion"].nunique() > 1 and frame[attribute].nunique() > 1:
        values |= {name: float(f(frame, attribute, "emotion")) for name, f in STEREOTYPICAL.items()}
    else:
        values |= {name: np.nan for name in STEREOTYPICAL}
    return values


def _npmi(frame: pd.DataFrame, attribute: str) -> pd.DataFrame:
    table = dbm.npmi(frame, attribute, "emotion")
    table.index.name, table.columns.name = "group", "emotion"
    return table.stack().rename("npmi").reset_index()


def _draw(posteriors: np.ndarray, classes: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    cumulative = posteriors.cumsum(axis=1)
    picks = (rng.random((len(posteriors), 1)) > cumulative).sum(axis=1)
    return np.asarray(classes, dtype=object)[np.minimum(picks, len(classes) - 1)]


def audit_dataset(
    rows: pd.DataFrame,
    *,
    attributes: Sequence[str],
    sources: Mapping[str, str],
    posteriors: Mapping[str, tuple[np.ndarray, Sequence[str]]] | None = None,
    draws: int = 100,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Representational and stereotypical bias of ``rows`` (one per labelled image).

    Parameters
    ----------
    rows
        ``emotion`` and one column per attribute (null: unknown; left out of that attribute's
        figures and counted in ``n_unknown``).
    attributes
        Single attributes (intersections are the fairness tables' business).
    sources
        ``ground_truth`` or ``inferred`` per attribute.
    posteriors
        Per inferred attribute: an (images x classes) matrix of calibrated posteriors aligned
        with ``rows`` (rows without one are NaN), and its class names.
    draws, level, seed
        Imputation draws, interval coverage and seed.

    Returns
    -------
    metrics, npmi
        ``metrics``: one row per attribute with ``n``, ``n_unknown``, ``label_source`` and each
        metric, plus ``<metric>_imputed``, ``<metric>_mi_low`` and ``<metric>_mi_high`` for
        inferred attributes. ``npmi``: one row per (attribute, group, emotion) with ``count``,
        ``npmi`` and, for inferred attributes, ``npmi_imputed`` / ``npmi_mi_low`` /
        ``npmi_mi_high``.
    """
    posteriors = posteriors or {}
    rng = np.random.default_rng(seed)
    metric_rows, cell_tables = [], []
    tail = (1 - level) / 2
    for attribute in attributes:
        known = rows.dropna(subset=[attribute, "emotion"])
        row = {
            "attribute": attribute,
            "label_source": sources.get(attribute, "ground_truth"),
            "n": len(known),
            "n_unknown": int(rows[attribute].isna().sum()),
        }
        if known.empty:
            metric_rows.append(row)
            continue
        row |= _metrics(known, attribute)
        counts = (
            known.groupby([attribute, "emotion"])
            .size()
            .rename("count")
            .reset_index()
            .rename(columns={attribute: "group"})
        )
        cells = _npmi(known, attribute).merge(counts, on=["group", "emotion"], how="left")
        cells["count"] = cells["count"].fillna(0).astype(int)
        if attribute in posteriors and row["label_source"] == "inferred":
            matrix, classes = posteriors[attribute]
            usable = ~np.isnan(matrix).any(axis=1) & rows["emotion"].notna().to_numpy()
            drawn_metrics, drawn_cells = [], []
            for _ in range(draws):
                frame = pd.DataFrame(
                    {
                        attribute: _draw(matrix[usable], classes, rng),
                        "emotion": rows["emotion"].to_numpy()[usable],
                    }
                )
                drawn_metrics.append(_metrics(frame, attribute))
                drawn_cells.append(_npmi(frame, attribute).set_index(["group", "emotion"])["npmi"])
            drawn = pd.DataFrame(drawn_metrics)
            for name in drawn:
                row[f"{name}_imputed"] = float(drawn[name].mean())
                row[f"{name}_mi_low"] = float(drawn[name].quantile(tail))
                row[f"{name}_mi_high"] = float(drawn[name].quantile(1 - tail))
            # A cell absent from a draw had no image there: NPMI -1 by the library's convention.
            npmi_draws = pd.concat(drawn_cells, axis=1).fillna(-1.0)
            summary = pd.DataFrame(
                {
                    "npmi_imputed": npmi_draws.mean(axis=1),
                    "npmi_mi_low": npmi_draws.quantile(tail, axis=1),
                    "npmi_mi_high": npmi_draws.quantile(1 - tail, axis=1),
                }
            ).reset_index()
            cells = cells.merge(summary, on=["group", "emotion"], how="outer")
        metric_rows.append(row)
        cell_tables.append(cells.assign(attribute=attribute, label_source=row["label_source"]))
    metrics = pd.DataFrame(metric_rows)
    npmi = pd.concat(cell_tables, ignore_index=True) if cell_tables else pd.DataFrame()
    if not npmi.empty:
        first = ["attribute", "label_source", "group", "emotion", "count", "npmi"]
        npmi = npmi[first + [c for c in npmi.columns if c not in first]]
    return metrics, npmi
