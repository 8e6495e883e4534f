"""Figures written next to the tables (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.colors
import matplotlib.figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
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
        corrected = _corrected_shares(composition, attribute)
        if corrected is not None:
            axis.scatter(
                list(positions),
                corrected.reindex(table.index).to_numpy(),
                color="black",
                marker="D",
                s=18,
                zorder=3,
                label="estimated true share (corrected)",
            )
        axis.set_xticks(list(positions), table.index, rotation=45, ha="right")
        axis.set_ylabel("share of images")
        accuracy = composition.loc[composition["attribute"] == attribute].get("label_accuracy")
        if accuracy is not None and accuracy.notna().any():
            axis.set_title(f"{attribute} (labels' in-domain accuracy {accuracy.iloc[0]:.2f})")
        else:
            axis.set_title(attribute)
    axes_list = list(axes) if len(attributes) > 1 else [axes]
    axes_list[0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _corrected_shares(composition: pd.DataFrame, attribute: str) -> pd.Series | None:
    """Whole-dataset share per true group from the per-split corrected shares (the matrix
    method is linear, so the splits' corrected counts add up)."""
    if "share_corrected" not in composition.columns:
        return None
    rows = composition[composition["attribute"] == attribute]
    if rows["share_corrected"].isna().all():
        return None
    totals = rows.groupby("split")["count"].transform("sum")
    counts = (rows["share_corrected"] * totals).groupby(rows["group"], sort=False).sum()
    return counts / totals.groupby(rows["split"]).first().sum()


def _strategy_colours(strategies: Sequence[str]) -> dict[str, str]:
    palette = plt.get_cmap("tab10").colors
    return {
        s: matplotlib.colors.to_hex(palette[i % len(palette)]) for i, s in enumerate(strategies)
    }


def _save(figure: matplotlib.figure.Figure, path: Path, *, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_group_accuracy(group_metrics: pd.DataFrame, path: Path, *, run: str = "strategy") -> Path:
    """Accuracy of every known group with its bootstrap interval, one colour per run.

    One panel per attribute; groups flagged ``small_group`` get a hollow marker and a ``*``
    after their name; tick labels give each group's number of test images.
    """
    known = group_metrics[group_metrics["known"]]
    attributes = list(dict.fromkeys(known["attribute"]))
    runs = list(dict.fromkeys(known[run]))
    colours = _strategy_colours(runs)
    widths = [
        max(3.0, 0.55 * known.loc[known["attribute"] == a, "group"].nunique()) for a in attributes
    ]
    figure, axes = plt.subplots(
        1,
        len(attributes),
        figsize=(sum(widths) + 1, 4.2),
        squeeze=False,
        width_ratios=widths,
        layout="constrained",
    )
    for axis, attribute in zip(axes[0], attributes, strict=True):
        table = known[known["attribute"] == attribute]
        groups = list(dict.fromkeys(table["group"]))
        for offset, name in zip(np.linspace(-0.25, 0.25, len(runs)), runs, strict=True):
            rows = table[table[run] == name].set_index("group").reindex(groups)
            x = np.arange(len(groups)) + (offset if len(runs) > 1 else 0.0)
            # Lines from bound to bound: a percentile interval need not contain the estimate.
            axis.vlines(
                x, rows["accuracy_ci_low"], rows["accuracy_ci_high"], color=colours[name], lw=1.2
            )
            small = rows["small_group"].to_numpy(dtype=bool)
            axis.scatter(
                x[~small], rows["accuracy"][~small], color=colours[name], s=22, label=name, zorder=3
            )
            axis.scatter(
                x[small],
                rows["accuracy"][small],
                facecolors="white",
                edgecolors=colours[name],
                s=22,
                zorder=3,
            )
        counts = table.drop_duplicates("group").set_index("group").reindex(groups)
        labels = [
            f"{g}{'*' if small else ''}\nn={n}"
            for g, n, small in zip(groups, counts["count"], counts["small_group"], strict=True)
        ]
        axis.set_xticks(range(len(groups)), labels, rotation=60, ha="right", fontsize=8)
        axis.set_title(attribute)
        axis.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("accuracy (95% bootstrap CI)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    figure.suptitle("Accuracy per group (* hollow: small group)")
    return _save(figure, path)


def plot_equalized_odds_heatmaps(
    class_disparities: pd.DataFrame, path: Path, *, run: str = "strategy"
) -> Path:
    """Equalized-odds difference per attribute (rows) and emotion class (columns), per run.

    Undefined cells (a group without images of the class) are grey and marked "n/a".
    """
    runs = list(dict.fromkeys(class_disparities[run]))
    attributes = list(dict.fromkeys(class_disparities["attribute"]))
    classes = list(dict.fromkeys(class_disparities["class"]))
    figure, axes = plt.subplots(
        len(runs),
        1,
        figsize=(0.75 * len(classes) + 3, (0.45 * len(attributes) + 1.1) * len(runs) + 0.6),
        squeeze=False,
        layout="constrained",
    )
    colormap = plt.get_cmap("magma_r").with_extremes(bad="#d9d9d9")
    image = None
    for axis, name in zip(axes[:, 0], runs, strict=True):
        table = class_disparities[class_disparities[run] == name]
        grid = table.pivot(index="attribute", columns="class", values="eo_difference").reindex(
            index=attributes, columns=classes
        )
        image = axis.imshow(
            np.ma.masked_invalid(grid.to_numpy(dtype=float)), cmap=colormap, vmin=0, vmax=1
        )
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            text = "n/a" if np.isnan(value) else f"{value:.2f}"
            axis.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > 0.55 else "black",
            )
        last = axis is axes[-1, 0]
        axis.set_xticks(
            range(len(classes)), classes if last else [""] * len(classes), rotation=45, ha="right"
        )
        axis.set_yticks(range(len(attributes)), attributes)
        axis.set_title(name, fontsize=10)
    figure.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.8, label="equalized-odds difference")
    figure.suptitle("One-vs-rest equalized-odds difference per class")
    return _save(figure, path)


def plot_group_confusions(
    confusions: pd.DataFrame, path: Path, *, classes: Sequence[str], title: str
) -> Path:
    """Row-normalised confusion matrix per group, from a long table (group, true, predicted,
    count)."""
    groups = list(dict.fromkeys(confusions["group"]))
    columns = min(4, len(groups))
    rows = int(np.ceil(len(groups) / columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(3.1 * columns, 3.0 * rows), squeeze=False, layout="constrained"
    )
    for axis in axes.ravel()[len(groups) :]:
        axis.set_visible(False)
    for axis, group in zip(axes.ravel(), groups, strict=False):
        table = confusions[confusions["group"] == group]
        counts = (
            table.pivot(index="true", columns="predicted", values="count")
            .reindex(index=classes, columns=classes, fill_value=0)
            .to_numpy(dtype=float)
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            share = counts / counts.sum(axis=1, keepdims=True)
        axis.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0, vmax=1)
        axis.set_title(f"{group} (n={int(counts.sum())})", fontsize=9)
        axis.set_xticks(range(len(classes)), [c[:4] for c in classes], rotation=90, fontsize=7)
        axis.set_yticks(range(len(classes)), [c[:4] for c in classes], fontsize=7)
    figure.supxlabel("predicted")
    figure.supylabel("true (rows sum to 1)")
    figure.suptitle(title)
    return _save(figure, path)


def plot_tradeoff(
    summary: pd.DataFrame,
    path: Path,
    *,
    fairness_metric: str = "accuracy_gap",
    run: str = "strategy",
) -> Path:
    """Overall accuracy against a fairness figure per run, one panel per attribute, with CIs."""
    attributes = list(dict.fromkeys(summary["attribute"]))
    colours = _strategy_colours(list(dict.fromkeys(summary[run])))
    figure, axes = plt.subplots(
        1,
        len(attributes),
        figsize=(3.6 * len(attributes), 3.6),
        squeeze=False,
        layout="constrained",
    )
    for axis, attribute in zip(axes[0], attributes, strict=True):
        table = summary[summary["attribute"] == attribute]
        for row in table.to_dict("records"):
            x, y = row[fairness_metric], row["overall_accuracy"]
            colour = colours[row[run]]
            axis.hlines(
                y, row[f"{fairness_metric}_ci_low"], row[f"{fairness_metric}_ci_high"], color=colour
            )
            axis.vlines(
                x, row["overall_accuracy_ci_low"], row["overall_accuracy_ci_high"], color=colour
            )
            axis.plot(x, y, "o", color=colour, label=row[run])
        axis.set_title(attribute)
        axis.set_xlabel(f"{fairness_metric.replace('_', ' ')} (lower is fairer)")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("overall accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes[0][-1].legend(unique.values(), unique.keys(), fontsize=8)
    figure.suptitle("Accuracy vs fairness across strategies (95% bootstrap CIs)")
    return _save(figure, path)


def plot_gradcam_grid(
    images: np.ndarray,
    heatmaps: np.ndarray,
    cells: pd.DataFrame,
    path: Path,
    *,
    title: str,
) -> Path:
    """Grad-CAM heat maps over their grayscale images, one row per group, one column per class.

    ``cells`` has one row per image, aligned with ``images`` and ``heatmaps``: ``group``,
    ``class`` (the true class, which sets the column) and ``y_pred``.
    """
    groups = list(dict.fromkeys(cells["group"]))
    classes = list(dict.fromkeys(cells["class"]))
    per_cell = int(cells.groupby(["group", "class"]).size().max())
    columns = len(classes) * per_cell
    figure, axes = plt.subplots(
        len(groups),
        columns,
        figsize=(1.25 * columns + 0.8, 1.45 * len(groups) + 0.6),
        squeeze=False,
        gridspec_kw={"top": 1 - 0.9 / (1.45 * len(groups) + 0.6), "hspace": 0.35},
    )
    for axis in axes.ravel():
        axis.set_axis_off()
    slot: dict[tuple[str, str], int] = {}
    for position, cell in enumerate(cells.to_dict("records")):
        key = (cell["group"], cell["class"])
        k = slot.get(key, 0)
        slot[key] = k + 1
        axis = axes[groups.index(cell["group"]), classes.index(cell["class"]) * per_cell + k]
        axis.imshow(images[position], cmap="gray", vmin=0, vmax=255)
        axis.imshow(heatmaps[position], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        mark = "" if cell["y_pred"] == cell["class"] else " (wrong)"
        axis.set_title(f"pred: {cell['y_pred']}{mark}", fontsize=6)
    for i, group in enumerate(groups):
        axes[i, 0].text(
            -0.1, 0.5, group, transform=axes[i, 0].transAxes, ha="right", va="center", fontsize=7
        )
    for j, label in enumerate(classes):
        axes[0, j * per_cell].text(
            0.0, 1.35, label, transform=axes[0, j * per_cell].transAxes, fontsize=8, weight="bold"
        )
    figure.suptitle(title)
    # Photographs compress poorly: a lower resolution keeps the HTML report a few MB.
    return _save(figure, path, dpi=80)


def plot_npmi_heatmaps(npmi: pd.DataFrame, path: Path, *, title: str) -> Path:
    """Local stereotypical bias: NPMI per group (rows) and emotion (columns), per attribute.

    Red: the group shows the emotion more often than independence predicts; blue: less. Cells
    of inferred attributes show the imputed mean (the posterior draws' average).
    """
    attributes = list(dict.fromkeys(npmi["attribute"]))
    emotions = list(dict.fromkeys(npmi["emotion"]))
    heights = [len(set(npmi.loc[npmi["attribute"] == a, "group"])) for a in attributes]
    figure, axes = plt.subplots(
        len(attributes),
        1,
        figsize=(0.8 * len(emotions) + 3.5, 0.42 * sum(heights) + 1.1 * len(attributes) + 0.6),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"height_ratios": heights},
    )
    colormap = plt.get_cmap("RdBu_r").with_extremes(bad="#d9d9d9")
    image = None
    for axis, attribute in zip(axes[:, 0], attributes, strict=True):
        table = npmi[npmi["attribute"] == attribute]
        value = "npmi_imputed" if table.get("npmi_imputed", pd.Series()).notna().any() else "npmi"
        grid = table.pivot(index="group", columns="emotion", values=value)
        order = [g for g in ATTRIBUTE_CLASSES.get(attribute, ()) if g in grid.index]
        grid = grid.reindex(index=order + sorted(set(grid.index) - set(order)), columns=emotions)
        values = grid.to_numpy(dtype=float)
        image = axis.imshow(np.ma.masked_invalid(values), cmap=colormap, vmin=-1, vmax=1)
        for (i, j), cell in np.ndenumerate(values):
            axis.text(
                j,
                i,
                "n/a" if np.isnan(cell) else f"{cell:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if abs(cell) > 0.6 else "black",
            )
        last = axis is axes[-1, 0]
        axis.set_xticks(
            range(len(emotions)),
            emotions if last else [""] * len(emotions),
            rotation=45,
            ha="right",
        )
        axis.set_yticks(range(len(grid.index)), [str(g) for g in grid.index])
        source = table["label_source"].iloc[0]
        axis.set_title(
            f"{attribute} ({source}{', imputed mean' if value != 'npmi' else ''})", fontsize=10
        )
    figure.colorbar(image, ax=axes[:, 0].tolist(), shrink=0.8, label="NPMI")
    figure.suptitle(title)
    return _save(figure, path)
