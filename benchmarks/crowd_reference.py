"""Print CREMA-D's crowd accuracy per actor group from the release's metadata alone.

The human reference of the audio-visual branch (rule crowd_accuracy, scope ``release``), which
needs only ``summaryTable.csv`` and ``VideoDemographics.csv``, not the media:

    .venv/bin/python benchmarks/crowd_reference.py --metadata ../shared/data/crema-d
"""

import argparse
from pathlib import Path

import pandas as pd

from fairfer.audiovisual.modalities import crowd_accuracy, release_clips
from fairfer.datasets.attributes import FAIRFACE_AGE_EDGES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", type=Path, default=Path("data/crema-d"))
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-groups", action="store_true", help="every group, not only gaps")
    args = parser.parse_args()
    clips = release_clips(
        args.metadata, binning={"age": list(FAIRFACE_AGE_EDGES)}, value_aliases={}
    )
    table = crowd_accuracy(
        clips,
        attributes=["race", "gender", "age", "ethnicity", ["race", "gender"]],
        draws=args.draws,
        level=0.95,
        seed=args.seed,
        scope="release",
    )
    if not args.all_groups:
        table = table[table["group"].isin(["all", "gap", "Female", "Male"])]
    columns = ["modality", "attribute", "group", "highest", "lowest", "clips", "actors",
               "recognition", "recognition_ci_low", "recognition_ci_high"]  # fmt: skip
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(table[columns].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
