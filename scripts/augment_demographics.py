"""Balance FER+ train over (inferred race x emotion) cells by augmented oversampling."""

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from fairfer.schemas import AUGMENTED, write_parquet
from fairfer.training.augmentation import (
    AugmentationParams,
    apply_plan,
    balanced_oversampling_plan,
    cell_counts,
)

logger = logging.getLogger(__name__)


def augment(
    manifest_path: Path,
    group_labels_path: Path,
    output: Path,
    cells_path: Path,
    *,
    augmentation: dict,
    seed: int,
    chunk_rows: int = 4096,
) -> None:
    manifest = pq.read_table(
        manifest_path, columns=["image_id", "split", "emotion", "label_status", "image"]
    ).to_pandas()
    train = manifest[(manifest["split"] == "train") & (manifest["label_status"] == "ok")]
    demographic = [c for c in augmentation["cells"] if c != "emotion"]
    labels = pq.read_table(group_labels_path, columns=["image_id", *demographic]).to_pandas()
    train = train.merge(labels, on="image_id", how="left", validate="one_to_one")
    if "race" not in train:
        train["race"] = None
    plan = balanced_oversampling_plan(
        train[["image_id", *augmentation["cells"]]],
        cell_columns=augmentation["cells"],
        target=augmentation["target"],
        seed=seed,
        max_copies_per_image=augmentation["max_copies_per_image"],
    )
    counts = cell_counts(plan, cell_columns=augmentation["cells"])
    counts.to_csv(cells_path, index=False)
    logger.info(
        "augmented set: %d originals + %d copies",
        (~plan["is_augmented"]).sum(),
        plan["is_augmented"].sum(),
    )
    images = dict(zip(train["image_id"], train["image"], strict=True))
    source = train.set_index("image_id")[["emotion", "race"]]
    params = AugmentationParams()

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, len(plan), chunk_rows):
            chunk = plan.iloc[start : start + chunk_rows]
            rows = []
            for (sample_id, data, applied), (_, planned) in zip(
                apply_plan(chunk, images, params), chunk.iterrows(), strict=True
            ):
                original = source.loc[planned["source_image_id"]]
                rows.append(
                    {
                        "sample_id": sample_id,
                        "source_image_id": planned["source_image_id"],
                        "emotion": original["emotion"],
                        "race": original["race"],
                        "is_augmented": bool(planned["is_augmented"]),
                        "augmentation": json.dumps(applied),
                        "image": data,
                    }
                )
            yield pa.RecordBatch.from_pylist(rows, schema=AUGMENTED)

    write_parquet(batches(), output, AUGMENTED)


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    augment(
        Path(snakemake.input.manifest),
        Path(snakemake.input.group_labels),
        Path(snakemake.output.augmented),
        Path(snakemake.output.cells),
        augmentation=snakemake.params.augmentation,
        seed=snakemake.params.seed,
    )
