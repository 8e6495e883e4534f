"""Read CREMA-D: one manifest row per clip, its sampled video frames, and the clip table.

Each listed clip whose video is present is decoded with PyAV and ``frames_per_clip`` frames,
evenly spaced, are kept as JPEG: they form the ``cremad_frames`` manifest that align_faces and
embed_faces process like any dataset's images. The clip manifest (``cremad``) carries the
middle frame as the clip's image, the label and the actor's demographics (ground truth), so
that group labels, strategies and tables work on clips as on images. Clips whose video does
not decode are rejects with a reason; ``rows_in`` counts every clip of SentenceFilenames.csv.
"""

import json
import logging
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from fairfer.datasets import cremad
from fairfer.datasets.checks import check_splits
from fairfer.errors import DatasetError
from fairfer.media.video import MediaError, encode_frame, sample_frames
from fairfer.schemas import CLIPS, MANIFEST_COLUMNS, publish_manifest, write_parquet

logger = logging.getLogger(__name__)

FRAMES_DATASET = f"{cremad.DATASET}_frames"


def frame_id(clip: str, index: int) -> str:
    return f"{clip}:{index}"


def ingest(
    root: Path,
    outputs: dict[str, Path],
    *,
    settings: dict,
    seed: int,
    attributes: dict | None = None,
    checks: dict | None = None,
) -> dict:
    """Write the clip manifest, the frames manifest and the clip table of CREMA-D at ``root``.

    ``settings`` is ``datasets.cremad`` (label, frames_per_clip, frame_quality,
    split_fractions, sample); ``attributes`` and ``checks`` as for the other ingests.
    ``outputs`` names the paths: manifest, report, rejects, frames, frames_report,
    frames_rejects, clips.
    """
    attributes = attributes or {}
    checks = checks or {}
    extra = list(attributes.get("extra", []))
    clips, rejects, report = cremad.clip_table(
        root,
        label=settings["label"],
        fractions=settings["split_fractions"],
        seed=seed,
        sample_per_split=settings.get("sample"),
        binning=attributes.get("binning") or {},
        value_aliases=attributes.get("value_aliases") or {},
        extra_attributes=extra,
    )
    clip_rows, frame_rows, table_rows, broken = [], [], [], []
    n_frames = settings["frames_per_clip"]
    decoded_total = 0
    for clip in tqdm(clips.to_dict("records"), desc="decode videos", mininterval=10):
        try:
            sampled = sample_frames(Path(root) / clip["video_path"], n_frames)
        except MediaError as error:
            broken.append(
                {
                    "image_id": clip["clip_id"],
                    "dataset": cremad.DATASET,
                    "split": clip["split"],
                    "source_path": clip["video_path"],
                    "reason": error.reason,
                    "detail": error.detail,
                }
            )
            continue
        decoded_total += sampled.decoded
        images = [
            encode_frame(image, quality=settings["frame_quality"]) for image in sampled.images
        ]
        common = {
            "split": clip["split"],
            "source_path": clip["video_path"],
            "emotion": clip["emotion"],
            "label_status": clip["label_status"],
            "emotion_votes": None,
            "race": clip["race"],
            "gender": clip["gender"],
            "age": clip["age"],
            "subject_id": clip["actor_id"],
            **{attribute: clip[attribute] for attribute in extra},
        }
        ids = [frame_id(clip["clip_id"], k) for k in range(len(images))]
        for identifier, image in zip(ids, images, strict=True):
            frame_rows.append(
                {"image_id": identifier, "dataset": FRAMES_DATASET, **common, "image": image}
            )
        clip_rows.append(
            {
                "image_id": clip["clip_id"],
                "dataset": cremad.DATASET,
                **common,
                # The clip's own image: its middle sampled frame.
                "image": images[len(images) // 2],
            }
        )
        table_rows.append(
            {
                **{key: clip[key] for key in CLIPS.names if key in clip},
                "frames_decoded": sampled.decoded,
                "frame_ids": ids,
                "frame_times": sampled.times,
            }
        )
    columns = [*MANIFEST_COLUMNS, *extra, "image"]
    manifest = pd.DataFrame(clip_rows, columns=columns)
    prior = pd.concat([rejects, pd.DataFrame(broken, columns=rejects.columns)], ignore_index=True)
    report.update(
        frames_per_clip=n_frames,
        video_frames_decoded=decoded_total,
        frames_sampled=len(frame_rows),
    )
    if not len(manifest):
        example = f"{broken[0]['source_path']}: {broken[0]['detail']}" if broken else "-"
        raise DatasetError(
            f"none of the {len(broken)} videos of CREMA-D at {root} could be decoded (e.g. "
            f"{example}); are they Git LFS pointers? Fetch the media with git lfs pull."
        )
    manifest, report["checks"] = check_splits(
        manifest,
        dataset=cremad.DATASET,
        class_absent_from_train=checks.get("class_absent_from_train", "drop"),
        attributes=["race", "gender", "age", *extra],
        min_group_size=checks.get("min_group_size", 30),
    )
    # The frames follow their clip's label status (a class dropped at the checks included).
    status = manifest.set_index("image_id")["label_status"]
    frames = pd.DataFrame(frame_rows, columns=columns)
    frames["label_status"] = frames["image_id"].str.rsplit(":", n=1).str[0].map(status)
    report = publish_manifest(
        manifest,
        Path(root),
        outputs["manifest"],
        report,
        outputs["report"],
        rejects_path=outputs["rejects"],
        extra_attributes=extra,
        prior_rejects=prior,
    )
    frames_report = publish_manifest(
        frames,
        Path(root),
        outputs["frames"],
        {"clips": len(manifest), "frames_per_clip": n_frames},
        outputs["frames_report"],
        rejects_path=outputs["frames_rejects"],
        extra_attributes=extra,
    )
    table = pd.DataFrame(table_rows, columns=CLIPS.names)
    write_parquet(table, outputs["clips"], CLIPS)
    logger.info("cremad clips: %s", json.dumps(report, default=int))
    logger.info("cremad frames: %s", json.dumps(frames_report, default=int))
    return report


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    ingest(
        Path(snakemake.params.root),
        {name: Path(path) for name, path in snakemake.output.items()},
        settings=snakemake.params.cremad,
        seed=snakemake.params.seed,
        attributes=snakemake.params.attributes,
        checks=snakemake.params.checks,
    )
