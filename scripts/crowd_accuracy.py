"""The crowd's own accuracy per actor group and modality: how often CREMA-D's raters'
majority vote (voice alone, face alone, both) named the intended emotion, over every rated
clip of the release and over this run's test clips; the human reference of the modality
comparison."""

import logging
from pathlib import Path

import pandas as pd

from fairfer.audiovisual.modalities import crowd_accuracy, release_clips
from fairfer.fairness.metrics import write_table
from fairfer.schemas import CLIPS, MANIFEST, extra_attributes_of, read_checked

logger = logging.getLogger(__name__)


def run(
    root: Path,
    clips_path: Path,
    manifest_path: Path,
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
        manifest_path, MANIFEST, ["image_id", "race", "gender", "age", *extra]
    ).to_pandas()
    test = clips[clips["split"] == "test"].merge(
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
        attributes=snakemake.params.attributes,
        uncertainty=snakemake.params.uncertainty,
        seed=snakemake.params.seed,
        min_group_size=snakemake.params.min_group_size,
        binning=snakemake.params.binning,
        value_aliases=snakemake.params.value_aliases,
    )
    write_table(table, Path(snakemake.output.table[0]).with_suffix(""))
