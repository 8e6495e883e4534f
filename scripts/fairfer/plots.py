"""Figures written next to the tables (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from fairfer.schemas import ATTRIBUTE_CLASSES  # noqa: E402


def plot_composition(composition: pd.DataFrame, path: Path, *, title: str) -> Path:
    """One bar chart per attribute: each group's share of the dataset, abstentions hatched."""
    attributes = list(dict.fromkeys(composition["attribute"]))
    totals = composition.groupby(["attribute", "group"], sort=False)[["count", "abstained"]].sum()
    figure, axes = plt.subplots(1, len(attributes), figsize=(5 * len(attributes), 4))
    for axis, attribute in zip(
        list(axes) if len(attributes) > 1 else [axes], attributes, strict=True
    ):
        table = totals.loc[attribute]
        known = [g for g in ATTRIBUTE_CLASSES.get(attribute, ()) if g in table.index]
        table = table.reindex(known + [g for g in table.index if g not in known])
        share = table["count"] / table["count"].sum()
        abstained = table["abstained"] / table["count"].sum()
        positions = range(len(table))
        axis.bar(positions, share, color="tab:blue", label="labelled")
        axis.bar(
            positions,
            abstained,
            color="none",
            edgecolor="black",
            hatch="//",
            label="abstained (low confidence)",
        )
        axis.set_xticks(list(positions), table.index, rotation=45, ha="right")
        axis.set_ylabel("share of images")
        axis.set_title(attribute)
    axes_list = list(axes) if len(attributes) > 1 else [axes]
    axes_list[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
