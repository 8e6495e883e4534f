"""The data interface every strategy and model trains on.

A :class:`Split` holds one split's model inputs (uint8 images or float embeddings), emotion
codes and protected-attribute codes as tensors; an :class:`Encoding` says what the codes mean.
Images are decoded once per job into one uint8 tensor, so an epoch costs no decoding.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from PIL import Image

from fairfer.config_checks import CLIP_INPUTS
from fairfer.images import to_grayscale, to_rgb
from fairfer.schemas import (
    ATTRIBUTE_CLASSES,
    ATTRIBUTES,
    EMOTIONS,
    MANIFEST,
    extra_attributes_of,
    read_checked,
    schema_metadata,
)
from fairfer.training.models import ModelSpec

#: Code of an unknown attribute value.
UNKNOWN = -1


@dataclass(frozen=True)
class Encoding:
    """Emotion classes and the vocabulary of each protected attribute, in code order."""

    classes: tuple[str, ...]
    attributes: dict[str, tuple[str, ...]]

    @classmethod
    def from_frames(
        cls, frames: Sequence[pd.DataFrame], classes: Sequence[str], attributes: Sequence[str]
    ) -> Encoding:
        """Vocabularies from the values in ``frames`` (FairFace order first, then sorted)."""
        vocabularies = {}
        for attribute in attributes:
            seen = set()
            for frame in frames:
                seen |= set(frame[attribute].dropna().astype(str))
            canonical = [v for v in ATTRIBUTE_CLASSES.get(attribute, ()) if v in seen]
            vocabularies[attribute] = (*canonical, *sorted(seen - set(canonical)))
        return cls(tuple(classes), vocabularies)

    def column(self, attribute: str) -> int:
        if attribute not in self.attributes:
            raise ValueError(
                f"attribute {attribute!r} is not available (attributes: {list(self.attributes)})"
            )
        return list(self.attributes).index(attribute)

    def n_groups(self, attributes: Sequence[str]) -> int:
        """Number of intersectional groups of ``attributes``, plus one for 'unknown'."""
        return math.prod(len(self.attributes[a]) for a in attributes) + 1

    def group_names(self, attributes: Sequence[str]) -> list[str]:
        """Name of every group id of :meth:`group_ids`, e.g. ``"White x Female"``."""
        names = [""]
        for attribute in attributes:
            names = [f"{n} x {v}" if n else v for n in names for v in self.attributes[attribute]]
        return [*names, "<unknown>"]

    def group_ids(self, attribute_codes: torch.Tensor, attributes: Sequence[str]) -> torch.Tensor:
        """Intersectional group id of every row; the last id where any attribute is unknown."""
        ids = torch.zeros(len(attribute_codes), dtype=torch.long)
        unknown = torch.zeros(len(attribute_codes), dtype=torch.bool)
        for attribute in attributes:
            codes = attribute_codes[:, self.column(attribute)]
            ids = ids * len(self.attributes[attribute]) + codes.clamp(min=0)
            unknown |= codes == UNKNOWN
        return torch.where(unknown, self.n_groups(attributes) - 1, ids)

    def encode(self, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """Emotion codes and attribute codes (``UNKNOWN`` where null) of ``frame``'s rows."""
        label_codes = pd.Categorical(frame["emotion"], categories=self.classes).codes
        if (label_codes < 0).any():
            unknown = sorted(set(frame["emotion"][label_codes < 0].astype(str)))
            raise ValueError(f"emotions {unknown} are not among the classes {self.classes}")
        attribute_codes = np.stack(
            [
                pd.Categorical(frame[a].astype("string"), categories=list(v)).codes
                for a, v in self.attributes.items()
            ],
            axis=1,
        ).reshape(len(frame), len(self.attributes))
        return (
            torch.tensor(label_codes, dtype=torch.long),
            torch.as_tensor(attribute_codes, dtype=torch.long),
        )


@dataclass
class Split:
    """One split's inputs, emotion codes and attribute codes (rows aligned)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    attributes: torch.Tensor

    def __post_init__(self) -> None:
        if not len(self.inputs) == len(self.labels) == len(self.attributes):
            raise ValueError("inputs, labels and attributes must have one row per sample")

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, inputs: torch.Tensor, encoding: Encoding) -> Split:
        labels, attributes = encoding.encode(frame)
        return cls(inputs, labels, attributes)

    def to(self, device: torch.device) -> Split:
        return Split(self.inputs.to(device), self.labels.to(device), self.attributes.to(device))

    def concat(self, other: Split) -> Split:
        return Split(
            torch.cat([self.inputs, other.inputs]),
            torch.cat([self.labels, other.labels]),
            torch.cat([self.attributes, other.attributes]),
        )

    @property
    def is_images(self) -> bool:
        return self.inputs.dtype == torch.uint8


def decode_images(images: Sequence[bytes], *, size: int, channels: int) -> torch.Tensor:
    """Decode encoded images once into a uint8 tensor (N, channels, size, size).

    Any pixel format is accepted; 16-bit images are rescaled, not clipped (fairfer.images).
    """
    convert = to_grayscale if channels == 1 else to_rgb
    output = torch.empty((len(images), size, size, channels), dtype=torch.uint8)
    for row, data in enumerate(images):
        image = convert(Image.open(io.BytesIO(data)))
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        output[row] = torch.from_numpy(np.array(image, dtype=np.uint8).reshape(size, size, -1))
    return output.permute(0, 3, 1, 2).contiguous()


def labelled_split(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of ``split`` that have a majority-vote emotion."""
    return frame[(frame["split"] == split) & (frame["label_status"] == "ok")]


def dataset_classes(labelled: pd.DataFrame) -> list[str]:
    """The emotions a dataset uses: FER+'s in their canonical order (RAF-DB lacks contempt),
    then any others of the dataset's own vocabulary, sorted."""
    present = set(labelled["emotion"].dropna())
    return [e for e in EMOTIONS if e in present] + sorted(present - set(EMOTIONS))


def read_embedding_table(paths: Sequence[str | Path], columns: Sequence[str] = ()) -> pd.DataFrame:
    """``image_id``, ``columns`` and the FaceNet ``embedding`` (float32 arrays) of embed_faces'
    shards, in file order."""
    names = ["image_id", *columns, "embedding"]
    frames = []
    for path in paths:
        table = pq.read_table(path, columns=names)
        if not table.num_rows:
            continue
        matrix = table["embedding"].combine_chunks().flatten().to_numpy()
        frame = table.drop(["embedding"]).to_pandas()
        frame["embedding"] = list(matrix.reshape(table.num_rows, -1).astype(np.float32))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=names)


def read_embeddings(paths: Sequence[str | Path]) -> pd.Series:
    """FaceNet embeddings of embed_faces' shards as float32 arrays keyed by image id."""
    table = read_embedding_table(paths)
    return pd.Series(table["embedding"].to_numpy(), index=table["image_id"].to_list(), dtype=object)


def read_aligned_crops(paths: Sequence[str | Path]) -> pd.Series:
    """Encoded aligned crops of align_faces' shards keyed by image id (rejected rows absent)."""
    tables = [pq.read_table(path, columns=["image_id", "crop"]).drop_null() for path in paths]
    frame = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    return frame.set_index("image_id")["crop"]


def model_inputs(
    rows: pd.DataFrame,
    *,
    source: str,
    lookup: pd.Series | None = None,
    size: int = 48,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """The model inputs of ``rows`` and the rows that have one.

    ``source`` is a model's input: ``gray48`` decodes ``rows["image"]``; ``aligned`` and
    ``embeddings`` look up each row's ``input_id`` (the image whose crop or embedding stands
    for the row: its own id, or the source image of an augmented copy) in ``lookup``. Rows
    without a crop or embedding (faces alignment rejected) are left out.
    """
    if source == "gray48":
        return decode_images(rows["image"].tolist(), size=48, channels=1), rows
    found = rows["input_id"].map(lookup)
    kept = rows[found.notna().to_numpy()]
    found = found.dropna()
    if source in ("embeddings", *CLIP_INPUTS):
        matrix = np.stack(found.to_numpy()) if len(found) else np.zeros((0, 128), np.float32)
        tensor = torch.from_numpy(matrix.astype(np.float32))
        # A spectrogram is a one-channel image to the audio network.
        return (tensor.unsqueeze(1) if source == "logmel" else tensor), kept
    return decode_images(found.tolist(), size=size, channels=3), kept


def group_columns(extra_attributes: list[str]) -> list[str]:
    """Group-label columns carried into the predictions: race, gender and age with source and
    confidence, and each attribute the dataset provides beyond them with its source."""
    return [
        column
        for attribute in ATTRIBUTES
        for column in (attribute, f"{attribute}_source", f"{attribute}_confidence")
    ] + [column for attribute in extra_attributes for column in (attribute, f"{attribute}_source")]


def emotion_rows(manifest_path: Path, group_labels_path: Path | None) -> pd.DataFrame:
    """A dataset's labelled rows with their demographics (inferred labels where given)."""
    columns = ["image_id", "dataset", "split", "emotion", "label_status", "image"]
    if group_labels_path is None:
        return read_checked(manifest_path, MANIFEST, [*columns, *ATTRIBUTES]).to_pandas()
    manifest = read_checked(manifest_path, MANIFEST, columns).to_pandas()
    extra = extra_attributes_of(group_labels_path)
    labels = pq.read_table(
        group_labels_path, columns=["image_id", *group_columns(extra)]
    ).to_pandas()
    return manifest.merge(labels, on="image_id", how="left", validate="one_to_one")


def read_clip_inputs(path: Path, source: str) -> pd.Series:
    """One clip-model input per usable clip of clip_inputs' output, keyed by clip id: the
    pooled embedding, the (mels, frames) spectrogram, the eGeMAPS functionals, or the
    embedding and the flattened spectrogram concatenated (``audiovisual``)."""
    metadata = schema_metadata(path)
    shape = (int(metadata["n_mels"]), int(metadata["frames"]))
    columns = {
        "clip_embeddings": ["visual"],
        "logmel": ["logmel"],
        "egemaps": ["egemaps"],
        "audiovisual": ["visual", "logmel"],
    }[source]
    if source == "egemaps" and not json.loads(metadata["egemaps"]):
        raise ValueError(
            "a model reads egemaps but audio.egemaps is false: set it to true (or give the "
            "model input logmel)"
        )
    table = pq.read_table(path, columns=["image_id", "status", *columns]).to_pandas()
    table = table[table["status"] == "ok"]
    parts = [np.stack(table[column].to_numpy()).astype(np.float32) for column in columns]
    if source == "logmel":
        parts = [parts[0].reshape(len(table), *shape)]
    vectors = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return pd.Series(list(vectors), index=table["image_id"].to_list(), dtype=object)


def clip_input_dims(path: Path) -> tuple[int, tuple[int, int]]:
    """Length of the pooled embedding and (mels, frames) of the spectrogram of clip inputs."""
    metadata = schema_metadata(path)
    return int(metadata["visual_dim"]), (int(metadata["n_mels"]), int(metadata["frames"]))


def input_lookup(spec: ModelSpec, shards: list[Path]) -> pd.Series | None:
    """Embeddings, aligned crops or clip inputs keyed by image id, as the model reads them
    (None: the manifest's own images)."""
    if spec.input in CLIP_INPUTS:
        return read_clip_inputs(shards[0], spec.input)
    if spec.input == "embeddings":
        return read_embeddings(shards)
    if spec.input == "aligned":
        return read_aligned_crops(shards)
    return None


def prediction_frame(
    rows: pd.DataFrame,
    probabilities: np.ndarray,
    classes: Sequence[str],
    *,
    extra_attributes: Sequence[str],
    strategy: str,
    model: str,
    seed: int,
) -> pd.DataFrame:
    """One run's predictions of ``rows`` in the predictions schema's columns: the group labels
    (:func:`group_columns`), the run keys, the true and predicted emotion and the posterior over
    ``classes`` (the columns of ``probabilities``)."""
    predictions = rows[["image_id", *group_columns(list(extra_attributes))]].copy()
    predictions["strategy"] = strategy
    predictions["model"] = model
    predictions["seed"] = seed
    predictions["y_true"] = rows["emotion"].to_numpy()
    predictions["y_pred"] = np.asarray(classes)[probabilities.argmax(axis=1)]
    predictions["probabilities"] = list(probabilities.astype(np.float32))
    return predictions
