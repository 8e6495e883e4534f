"""Explicit pyarrow schemas of every Parquet file passed between rules, and their I/O.

Each intermediate has one schema here; writers cast to it (so a wrong dtype fails at the
producer, not three rules later) and readers can check a file against it.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fairfer.images import check_image_bytes, read_image_file

logger = logging.getLogger(__name__)

#: FER+ emotion classes used for majority-vote labels, in the official column order.
EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)
#: The ten FER+ vote columns: the eight emotions, then "unknown" and "not a face" (NF).
FERPLUS_VOTE_COLUMNS: tuple[str, ...] = (*EMOTIONS, "unknown", "not_face")

FAIRFACE_RACES: tuple[str, ...] = (
    "White",
    "Black",
    "Latino_Hispanic",
    "East Asian",
    "Southeast Asian",
    "Indian",
    "Middle Eastern",
)
FAIRFACE_GENDERS: tuple[str, ...] = ("Male", "Female")
FAIRFACE_AGES: tuple[str, ...] = (
    "0-2",
    "3-9",
    "10-19",
    "20-29",
    "30-39",
    "40-49",
    "50-59",
    "60-69",
    "more than 70",
)
#: Label vocabulary of each demographic attribute, FairFace-style.
ATTRIBUTE_CLASSES: dict[str, tuple[str, ...]] = {
    "race": FAIRFACE_RACES,
    "gender": FAIRFACE_GENDERS,
    "age": FAIRFACE_AGES,
}
ATTRIBUTES: tuple[str, ...] = tuple(ATTRIBUTE_CLASSES)

MANIFEST = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        # Majority-vote emotion; null when the dataset has none or the rules exclude it.
        pa.field("emotion", pa.string()),
        # Why an image has no emotion label ("ok" when it has one).
        pa.field("label_status", pa.string(), nullable=False),
        pa.field("emotion_votes", pa.list_(pa.uint8(), len(FERPLUS_VOTE_COLUMNS))),
        pa.field("race", pa.string()),
        pa.field("gender", pa.string()),
        pa.field("age", pa.string()),
        # Identity, where the dataset has one (keeps a person's images in one split).
        pa.field("subject_id", pa.string()),
        pa.field("image", pa.binary(), nullable=False),
    ],
    metadata={"emotion_votes_order": json.dumps(FERPLUS_VOTE_COLUMNS)},
)


#: Columns of every adapter's manifest: the MANIFEST schema's, without ``image``, plus
#: ``subject_id``.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id",
    "dataset",
    "split",
    "source_path",
    "emotion",
    "label_status",
    "emotion_votes",
    "race",
    "gender",
    "age",
    "subject_id",
)


def manifest_schema(extra_attributes: Sequence[str] = ()) -> pa.Schema:
    """:data:`MANIFEST` plus one string column per sensitive attribute beyond race, gender and
    age that the dataset provides (``country``, ``skin_tone``, ...), listed in the metadata."""
    if not extra_attributes:
        return MANIFEST
    clash = [name for name in extra_attributes if name in MANIFEST.names]
    if clash:
        raise ValueError(f"attribute names {clash} are manifest columns; rename them")
    schema = MANIFEST
    for name in extra_attributes:
        schema = schema.insert(schema.get_field_index("subject_id"), pa.field(name, pa.string()))
    return schema.with_metadata(
        {**MANIFEST.metadata, b"extra_attributes": json.dumps(list(extra_attributes)).encode()}
    )


def extra_attributes_of(path: str | os.PathLike[str]) -> list[str]:
    """The attributes beyond race, gender and age a manifest or group-labels file carries."""
    return json.loads(schema_metadata(path).get("extra_attributes", "[]"))


#: Rows an ingest rule could not put in its manifest, and why.
INGEST_REJECTS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        # duplicate_image_id, missing_file, unreadable_file, undecodable_image, image_too_large.
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)

ALIGNED = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        # "ok" (face found and aligned), "fallback" (no face: whole frame used) or "rejected".
        pa.field("status", pa.string(), nullable=False),
        pa.field("reject_reason", pa.string()),
        pa.field("detection_probability", pa.float32()),
        # 1: found by the main detector settings; 2: only by the retry pass; null otherwise.
        pa.field("detection_pass", pa.uint8()),
        pa.field("box", pa.list_(pa.float32(), 4)),
        # Five (x, y) landmarks flattened: eyes, nose, mouth corners, in source-image pixels.
        pa.field("landmarks", pa.list_(pa.float32(), 10)),
        pa.field("crop", pa.binary()),
    ]
)


def embeddings_schema(
    dimension: int,
    *,
    weights: str,
    weights_sha256: str,
    embedder: str = "frozen",
    precision: str = "float32",
    label_features: tuple[str, int] | None = None,
) -> pa.Schema:
    """Schema of an embeddings file; the network used is recorded in its metadata.

    ``embedder`` is ``frozen`` (the pretrained ``weights``) or ``finetuned`` (fine-tuned from
    them; ``weights_sha256`` is then the fine-tuned checkpoint's). ``precision`` is the
    arithmetic of the forward pass (``float32`` or ``bfloat16``); the vectors are float32.
    ``label_features`` (kind, dimension), e.g. ``("pooled+flip", 1792)``, adds the column
    ``label_features`` (float16) that the demographic classifiers read instead of
    ``embedding`` (``race_matching.features``).
    """
    fields = [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("alignment_status", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), dimension), nullable=False),
    ]
    metadata = {
        "weights": weights,
        "weights_sha256": weights_sha256,
        "random_weights": json.dumps(weights == "random"),
        "embedder": embedder,
        "precision": precision,
    }
    if label_features is not None:
        kind, size = label_features
        fields.append(pa.field("label_features", pa.list_(pa.float16(), size), nullable=False))
        metadata["label_features"] = kind
    return pa.schema(fields, metadata=metadata)


#: Which FairFace train images fine-tuned FaceNet (``fit``) and which were held out for its
#: model selection (``selection``); classifiers on fine-tuned embeddings are fitted on the latter.
FINETUNE_ROLES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
    ]
)


def group_labels_schema(extra_attributes: Sequence[str] = ()) -> pa.Schema:
    """Schema of the demographic labels attached to every emotion-dataset image.

    Race, gender and age carry a source, an inferred posterior and a confidence; an attribute
    the dataset provides beyond them (``extra_attributes``) is ground truth only.
    """
    fields = [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
    for attribute, classes in ATTRIBUTE_CLASSES.items():
        fields += [
            pa.field(attribute, pa.string()),
            pa.field(f"{attribute}_source", pa.string(), nullable=False),
            pa.field(f"{attribute}_confidence", pa.float32()),
            pa.field(f"{attribute}_probabilities", pa.list_(pa.float32(), len(classes))),
            pa.field(f"{attribute}_abstained", pa.bool_(), nullable=False),
        ]
    for attribute in extra_attributes:
        fields += [
            pa.field(attribute, pa.string()),
            pa.field(f"{attribute}_source", pa.string(), nullable=False),
        ]
    metadata = {f"{a}_classes": json.dumps(c) for a, c in ATTRIBUTE_CLASSES.items()}
    if extra_attributes:
        metadata["extra_attributes"] = json.dumps(list(extra_attributes))
    return pa.schema(fields, metadata=metadata)


GROUP_LABELS = group_labels_schema()

AUGMENTED = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("source_image_id", pa.string(), nullable=False),
        pa.field("emotion", pa.string(), nullable=False),
        pa.field("race", pa.string()),
        pa.field("is_augmented", pa.bool_(), nullable=False),
        # JSON of the transformations applied (empty object for originals).
        pa.field("augmentation", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
    ]
)


#: One row per clip of an audio-visual dataset whose video decoded (ingest_cremad): what the
#: release says of it and which frames stand for it in the ``<dataset>_frames`` manifest.
CLIPS = pa.schema(
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("actor_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("sentence", pa.string(), nullable=False),
        pa.field("intended_emotion", pa.string(), nullable=False),
        pa.field("level", pa.string(), nullable=False),
        pa.field("video_path", pa.string(), nullable=False),
        # Null: no WAV file, the video's own audio track is used.
        pa.field("audio_path", pa.string()),
        # The crowd's majority votes (summaryTable.csv), e.g. "A" or "A:H" on a tie.
        pa.field("voice_vote", pa.string()),
        pa.field("face_vote", pa.string()),
        pa.field("multimodal_vote", pa.string()),
        pa.field("frames_decoded", pa.int32(), nullable=False),
        pa.field("frame_ids", pa.list_(pa.string()), nullable=False),
        pa.field("frame_times", pa.list_(pa.float32()), nullable=False),
    ]
)


def audio_features_schema(n_mels: int, frames: int, *, egemaps: bool) -> pa.Schema:
    """Schema of audio_features' output: one row per clip, its log-mel spectrogram
    (``n_mels`` x ``frames``, row-major, float16 dB) and optionally its 88 eGeMAPS functionals;
    ``status`` is ``ok`` or the reject reason (features null)."""
    fields = [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        # wav (AudioWAV/) or video (the video's own track).
        pa.field("source", pa.string(), nullable=False),
        pa.field("sample_rate_in", pa.int32()),
        pa.field("duration_s", pa.float32()),
        pa.field("logmel", pa.list_(pa.float16(), n_mels * frames)),
    ]
    if egemaps:
        fields.append(pa.field("egemaps", pa.list_(pa.float32(), 88)))
    metadata = {"n_mels": str(n_mels), "frames": str(frames), "egemaps": json.dumps(egemaps)}
    return pa.schema(fields, metadata=metadata)


def clip_inputs_schema(visual_dim: int, n_mels: int, frames: int, *, egemaps: bool) -> pa.Schema:
    """Schema of clip_inputs' output: each clip's status across both modalities (``ok``, or the
    first reason it cannot be used), its frame counts, and the inputs of the clip models: the
    mean FaceNet embedding of the frames where a face was found, the log-mel spectrogram and,
    optionally, the eGeMAPS functionals."""
    fields = [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("frames", pa.int32(), nullable=False),
        pa.field("faces", pa.int32(), nullable=False),
        pa.field("visual", pa.list_(pa.float32(), visual_dim)),
        pa.field("logmel", pa.list_(pa.float16(), n_mels * frames)),
    ]
    if egemaps:
        fields.append(pa.field("egemaps", pa.list_(pa.float32(), 88)))
    metadata = {
        "visual_dim": str(visual_dim),
        "n_mels": str(n_mels),
        "frames": str(frames),
        "egemaps": json.dumps(egemaps),
    }
    return pa.schema(fields, metadata=metadata)


def predictions_schema(
    classes: Sequence[str] = EMOTIONS, extra_attributes: Sequence[str] = ()
) -> pa.Schema:
    """Schema shared by the test-set predictions of every strategy x model x seed."""
    fields = [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("strategy", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("y_true", pa.string(), nullable=False),
        pa.field("y_pred", pa.string(), nullable=False),
        pa.field("probabilities", pa.list_(pa.float32(), len(classes)), nullable=False),
    ]
    for attribute in ATTRIBUTES:
        fields += [
            pa.field(attribute, pa.string()),
            pa.field(f"{attribute}_source", pa.string(), nullable=False),
            pa.field(f"{attribute}_confidence", pa.float32()),
        ]
    for attribute in extra_attributes:
        fields += [
            pa.field(attribute, pa.string()),
            pa.field(f"{attribute}_source", pa.string(), nullable=False),
        ]
    metadata = {"classes": json.dumps(list(classes))}
    if extra_attributes:
        metadata["extra_attributes"] = json.dumps(list(extra_attributes))
    return pa.schema(fields, metadata=metadata)


def table_from_frame(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Build a table with exactly ``schema``'s columns; missing or mistyped columns fail here."""
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} required by the schema are missing from the data")
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def write_parquet(
    data: pd.DataFrame | pa.Table | Iterable[pa.RecordBatch | pa.Table],
    path: str | os.PathLike[str],
    schema: pa.Schema,
) -> Path:
    """Write ``data`` with ``schema`` atomically (temporary file, then rename).

    A killed job therefore never leaves a truncated file that a later rule would read.
    An iterable of record batches or tables is streamed, so callers can write datasets larger
    than memory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
        if isinstance(data, pd.DataFrame):
            writer.write_table(table_from_frame(data, schema))
        elif isinstance(data, pa.Table):
            writer.write_table(data.select(schema.names).cast(schema))
        else:
            for part in data:
                table = part if isinstance(part, pa.Table) else pa.Table.from_batches([part])
                writer.write_table(table.select(schema.names).cast(schema))
    os.replace(partial, path)
    return path


def read_checked(
    path: str | os.PathLike[str], schema: pa.Schema, columns: Sequence[str] | None = None
) -> pa.Table:
    """Read a Parquet file, failing clearly when it lacks a column ``schema`` requires."""
    found = pq.read_schema(path)
    wanted = list(columns) if columns is not None else schema.names
    missing = [name for name in wanted if name not in found.names]
    if missing:
        raise ValueError(
            f"{path} lacks columns {missing}; it was written by an older version of the "
            "pipeline: delete it and rerun the rule that produces it"
        )
    return pq.read_table(path, columns=wanted)


def schema_metadata(path: str | os.PathLike[str]) -> Mapping[str, str]:
    """Decoded key/value metadata of a Parquet file's schema."""
    metadata = pq.read_schema(path).metadata or {}
    return {key.decode(): value.decode() for key, value in metadata.items()}


def publish_manifest(
    manifest: pd.DataFrame,
    image_root: Path,
    manifest_path: Path,
    report: dict,
    report_path: Path,
    *,
    rejects_path: Path,
    batch_rows: int = 1024,
    extra_attributes: Sequence[str] = (),
    prior_rejects: pd.DataFrame | None = None,
) -> dict:
    """Attach each image's bytes as stored and write the manifest, its rejects and a report.

    Rows are streamed in batches of ``batch_rows``, so memory does not grow with the dataset.
    A row whose ``image_id`` repeats an earlier row's, whose file is missing or unreadable, or
    whose bytes do not decode to an image within Pillow's size limit goes to ``rejects_path``
    (schema :data:`INGEST_REJECTS`) with its reason instead of the manifest; every other rule
    can therefore rely on unique ids and decodable images. ``extra_attributes`` are the
    dataset's attribute columns beyond race, gender and age (:func:`manifest_schema`). The
    JSON report reconciles:
    ``rows_in = rows + sum(rejected.values())``. Bytes are read from
    ``image_root / source_path`` unless the adapter already encoded them (an ``image`` column,
    as for ``fer2013.csv`` whose pixels are not files); those are checked the same way.
    ``prior_rejects`` (schema :data:`INGEST_REJECTS`) are rows the adapter rejected before
    (a clip whose video does not decode): they join the rejects and count in ``rows_in``.
    """
    encoded = "image" in manifest
    duplicate = manifest["image_id"].duplicated(keep="first").to_numpy()
    first_path = manifest.drop_duplicates("image_id").set_index("image_id")["source_path"]
    rejects: list[dict] = []
    kept = {"split": Counter(), "label_status": Counter()}

    def batches() -> Iterator[pa.Table]:
        for start in range(0, len(manifest), batch_rows):
            chunk = manifest.iloc[start : start + batch_rows]
            keep, images = [], []
            for position, row in enumerate(chunk.itertuples(index=False)):
                if duplicate[start + position]:
                    reason = ("duplicate_image_id", f"also {first_path[row.image_id]}")
                elif encoded:
                    data, reason = check_image_bytes(row.image)
                else:
                    data, reason = read_image_file(Path(image_root) / row.source_path)
                if reason is None:
                    keep.append(position)
                    images.append(data)
                    kept["split"][row.split] += 1
                    kept["label_status"][row.label_status] += 1
                    continue
                rejects.append(
                    {
                        "image_id": row.image_id,
                        "dataset": row.dataset,
                        "split": row.split,
                        "source_path": row.source_path,
                        "reason": reason[0],
                        "detail": reason[1],
                    }
                )
            yield table_from_frame(chunk.iloc[keep].assign(image=images), schema)

    schema = manifest_schema(extra_attributes)
    write_parquet(batches(), manifest_path, schema)
    rejected = pd.DataFrame(rejects, columns=INGEST_REJECTS.names)
    if prior_rejects is not None and len(prior_rejects):
        rejected = pd.concat([prior_rejects[INGEST_REJECTS.names], rejected], ignore_index=True)
    write_parquet(rejected, rejects_path, INGEST_REJECTS)
    rows_in = len(manifest) + (0 if prior_rejects is None else len(prior_rejects))
    report = {
        **report,
        "rows_in": rows_in,
        "rows": rows_in - len(rejected),
        "rejected": rejected["reason"].value_counts().sort_index().to_dict(),
        "rows_by_split": dict(sorted(kept["split"].items())),
        "label_status": dict(sorted(kept["label_status"].items())),
    }
    if len(rejected):
        logger.warning(
            "%d of %d rows rejected at ingest (%s), e.g. %s",
            len(rejected),
            rows_in,
            report["rejected"],
            rejected.iloc[0].to_dict(),
        )
    Path(report_path).write_text(json.dumps(report, indent=2, default=int) + "\n")
    return report
