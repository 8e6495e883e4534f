"""The crowd's own accuracy per actor group and modality: how often CREMA-D's raters'
majority vote (voice alone, face alone, both) named the intended emotion, over every rated
clip of the release and over the test clips this run's models are scored on; the human
reference of the modality comparison."""

import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from fairfer.audiovisual.modalities import crowd_accuracy, release_clips
from fairfer.fairness.metrics import write_table
from fairfer.schemas import CLIPS, MANIFEST, extra_attributes_of, read_checked

logger = logging.getLogger(__name__)


def run(
    root: Path,
    clips_path: Path,
    manifest_path: Path,
    inputs_path: Path,
    *,
    attributes: list,
    uncertainty: dict,
    seed: int,
    min_group_size: int,
    binning: dict,
    value_aliases: dict,
) -> pd.DataFrame:
    release = release_clips(root, binning=binning, value_aliases=value_aliases)
    clips = read_checked(clips_path, CLIPS, None).to_pandas()
    extra = extra_attributes_of(manifest_path)
    manifest = read_checked(
        manifest_path, MANIFEST, ["image_id", "label_status", "race", "gender", "age", *extra]
    ).to_pandas()
    # The test clips the models are scored on: labelled, and usable in both modalities.
    usable = pq.read_table(inputs_path, columns=["image_id", "status"]).to_pandas()
    scored = set(usable.loc[usable["status"] == "ok", "image_id"]) & set(
        manifest.loc[manifest["label_status"] == "ok", "image_id"]
    )
    test = clips[(clips["split"] == "test") & clips["clip_id"].isin(scored)].merge(
        manifest, left_on="clip_id", right_on="image_id", validate="one_to_one"
    )
    settings = {
        "attributes": attributes,
        "draws": uncertainty["draws"],
        "level": uncertainty["level"],
        "seed": seed,
        "min_group_size": min_group_size,
    }
    parts = [crowd_accuracy(release, scope="release", **settings)]
    if len(test) and test["voice_vote"].notna().any():
        parts.append(crowd_accuracy(test, scope="test", **settings))
    table = pd.concat(parts, ignore_index=True)
    overall = table[table["group"] == "all"][["scope", "modality", "clips", "recognition"]]
    logger.info("crowd recognition of the intended emotion:\n%s", overall.to_string(index=False))
    return table


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    table = run(
        Path(snakemake.params.root),
        Path(snakemake.input.clips),
        Path(snakemake.input.manifest),
        Path(snakemake.input.inputs),
        attributes=snakemake.params.attributes,
        uncertainty=snakemake.params.uncertainty,
        seed=snakemake.params.seed,
        min_group_size=snakemake.params.min_group_size,
        binning=snakemake.params.binning,
        value_aliases=snakemake.params.value_aliases,
    )
    write_table(table, Path(snakemake.output.table[0]).with_suffix(""))
