"""Grad-CAM maps of one run's model on a fixed sample of test images per group and class."""

import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import nn

from fairfer.gradcam import default_target_layer, grad_cam, sample_cells
from fairfer.plots import plot_gradcam_grid
from fairfer.schemas import ATTRIBUTE_CLASSES, MANIFEST, read_checked
from fairfer.training import CompactCNN, decode_grayscale, normalise

logger = logging.getLogger(__name__)


def load_model(checkpoint: dict) -> nn.Module:
    """The trained network of a ``train_model`` checkpoint, in eval mode."""
    model = CompactCNN(width=checkpoint["training"]["width"], n_classes=len(checkpoint["classes"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def test_images(manifest_path: Path, image_ids: list[str]) -> pd.Series:
    """Encoded image bytes of ``image_ids`` from the manifest, in that order."""
    table = read_checked(manifest_path, MANIFEST, ["image_id", "image"])
    table = table.filter(pc.is_in(table["image_id"], value_set=pa.array(image_ids, pa.string())))
    return table.to_pandas().set_index("image_id")["image"].reindex(image_ids)


def gradcam_grid(
    checkpoint_path: Path,
    predictions_path: Path,
    manifest_path: Path,
    output: Path,
    *,
    attribute: str,
    images_per_cell: int,
    seed: int,
) -> Path:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    classes = list(checkpoint["classes"])
    model = load_model(checkpoint)
    predictions = pq.read_table(predictions_path).to_pandas()
    cells = sample_cells(
        predictions,
        group_column=attribute,
        classes=classes,
        per_cell=images_per_cell,
        seed=seed,
        group_order=ATTRIBUTE_CLASSES.get(attribute, ()),
    )
    cells = cells.merge(predictions[["image_id", "y_pred"]], on="image_id", how="left")
    pixels = decode_grayscale(test_images(manifest_path, cells["image_id"].tolist()).tolist())
    inputs = normalise(pixels)
    maps = grad_cam(
        model,
        inputs,
        target_layer=default_target_layer(model, inputs[:1]),
        class_index=[classes.index(c) for c in cells["y_pred"]],
    )
    logger.info("Grad-CAM of %d images (%s x emotion)", len(cells), attribute)
    strategy = checkpoint.get("strategy", predictions_path.stem)
    return plot_gradcam_grid(
        pixels[:, 0].numpy(),
        maps,
        cells,
        output,
        title=f"Grad-CAM of {strategy}'s predicted class, by {attribute} (rows) and true "
        "emotion (columns)",
    )


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    torch.set_num_threads(snakemake.threads)
    gradcam_grid(
        Path(snakemake.input.checkpoint),
        Path(snakemake.input.predictions),
        Path(snakemake.input.manifest),
        Path(snakemake.output[0]),
        attribute=snakemake.params.gradcam["attribute"],
        images_per_cell=snakemake.params.gradcam["images_per_cell"],
        seed=snakemake.params.seed,
    )
