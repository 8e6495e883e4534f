"""Grad-CAM maps of one image model's run on a fixed sample of test images per group and class."""

import dataclasses
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from fairfer.report.gradcam import EmotionLogits, default_target_layer, grad_cam, sample_cells
from fairfer.report.plots import plot_gradcam_grid
from fairfer.schemas import ATTRIBUTE_CLASSES, MANIFEST, read_checked
from fairfer.training.data import model_inputs, read_aligned_crops
from fairfer.training.models import ModelSpec, Network, build_network

logger = logging.getLogger(__name__)


def load_network(checkpoint: dict) -> tuple[Network, ModelSpec]:
    """The trained network of a ``train_model`` checkpoint, in eval mode, and its spec."""
    spec = ModelSpec.from_config(checkpoint["model_params"])
    if spec.input == "embeddings":
        raise ValueError(
            f"model {checkpoint['model']} reads embeddings: Grad-CAM needs an image model"
        )
    # The checkpoint holds every weight (normalisation too): nothing to fetch.
    network = build_network(
        dataclasses.replace(spec, pretrained=None), n_classes=len(checkpoint["classes"])
    )
    network.load_state_dict(checkpoint["network"])
    return network.eval(), spec


def test_rows(manifest_path: Path, image_ids: list[str]) -> pd.DataFrame:
    """Manifest rows (``image_id``, encoded ``image``) of ``image_ids``, in that order."""
    table = read_checked(manifest_path, MANIFEST, ["image_id", "image"])
    table = table.filter(pc.is_in(table["image_id"], value_set=pa.array(image_ids, pa.string())))
    rows = table.to_pandas().set_index("image_id").reindex(image_ids).reset_index()
    return rows.assign(input_id=rows["image_id"])


def gradcam_grid(
    checkpoint_path: Path,
    predictions_path: Path,
    manifest_path: Path,
    aligned_shards: list[Path],
    output: Path,
    *,
    attribute: str,
    images_per_cell: int,
    seed: int,
) -> Path:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    classes = list(checkpoint["classes"])
    network, spec = load_network(checkpoint)
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
    rows = test_rows(manifest_path, cells["image_id"].tolist())
    lookup = read_aligned_crops(aligned_shards) if spec.input == "aligned" else None
    pixels, kept = model_inputs(rows, source=spec.input, lookup=lookup, size=spec.side)
    if len(kept) != len(cells):
        raise ValueError(
            f"{len(cells) - len(kept)} sampled test images have no {spec.input} input, though "
            f"{predictions_path} has predictions for them"
        )
    model, inputs = EmotionLogits(network), pixels.float()
    maps = grad_cam(
        model,
        inputs,
        target_layer=default_target_layer(model, inputs[:1]),
        class_index=[classes.index(c) for c in cells["y_pred"]],
    )
    logger.info("Grad-CAM of %d images (%s x emotion)", len(cells), attribute)
    shown = pixels[:, 0] if spec.channels == 1 else pixels.permute(0, 2, 3, 1)
    run = f"{checkpoint['model']}/{checkpoint['strategy']}/seed-{checkpoint['seed']}"
    return plot_gradcam_grid(
        shown.numpy(),
        maps,
        cells,
        output,
        title=f"Grad-CAM of {run}'s predicted class, by {attribute} (rows) and true emotion "
        "(columns)",
    )


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    torch.set_num_threads(snakemake.threads)
    gradcam_grid(
        Path(snakemake.input.checkpoint),
        Path(snakemake.input.predictions),
        Path(snakemake.input.manifest),
        [Path(p) for p in snakemake.input.model_inputs],
        Path(snakemake.output[0]),
        attribute=snakemake.params.gradcam["attribute"],
        images_per_cell=snakemake.params.gradcam["images_per_cell"],
        seed=snakemake.params.seed,
    )
