"""Auditing a model fairfer did not train: its predictions enter the same tables.

An audited model (``audit.models.<name>``) is either

- a **predictions file** (CSV or Parquet): one row per image of the emotion dataset's test
  split with its id, the predicted emotion and, optionally, one probability column per class;
  optionally the same for the validation split (``valid_predictions``), which post-processing
  strategies fit on; or
- a **TorchScript or ONNX model** with its input spec (side, grayscale or RGB, pixel scale,
  normalisation, class order, logits or probabilities, test-time flip), which fairfer runs on
  the dataset's own images (or aligned crops) of the test and validation splits.

The user's class names are mapped to the dataset's (``class_names``); classes the model has
beyond the dataset's are left out and the posterior renormalised, classes it lacks get 0.
Every mismatch is a :class:`~fairfer.errors.UserError` naming the key to fix.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fairfer.errors import UserError
from fairfer.images import to_grayscale, to_rgb


def _key(name: str, key: str) -> str:
    return f"audit.models.{name}.{key}"


def read_table(path: Path, *, name: str, key: str) -> pd.DataFrame:
    """A CSV (any common delimiter) or Parquet predictions file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} (config key {_key(name, key)}) does not exist.")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path, sep=None, engine="python", dtype={0: str})


def map_classes(
    names: Sequence[str], classes: Sequence[str], mapping: Mapping[str, str], *, name: str, key: str
) -> list[str | None]:
    """Each of the user's class names in the dataset's vocabulary (None: not a dataset class,
    allowed only when some names do map)."""
    mapped = [mapping.get(str(n), str(n)) for n in names]
    if not set(mapped) & set(classes):
        raise UserError(
            f"none of the classes {sorted(map(str, names))[:10]} ({_key(name, key)}) is one of "
            f"the dataset's classes {list(classes)}. Map your names with "
            f"{_key(name, 'class_names')}, e.g. {{{names[0]!s}: {classes[0]}}}."
        )
    return [m if m in classes else None for m in mapped]


def predictions_from_file(
    frame: pd.DataFrame,
    rows: pd.DataFrame,
    classes: Sequence[str],
    settings: Mapping,
    *,
    name: str,
    key: str,
    split: str,
) -> np.ndarray:
    """(rows, classes) posteriors of a user's predictions file, in ``rows``' order.

    Without probability columns the posterior is one-hot on the predicted emotion.
    """
    id_column = settings.get("id_column") or "image_id"
    emotion_column = settings.get("emotion_column") or "emotion"
    missing = [c for c in (id_column, emotion_column) if c not in frame.columns]
    if missing:
        raise UserError(
            f"{settings[key]} ({_key(name, key)}) has no column {missing} (columns: "
            f"{list(frame.columns)[:12]}). It needs the image id and the predicted emotion; name "
            f"them with {_key(name, 'id_column')} and {_key(name, 'emotion_column')}."
        )
    frame = frame.assign(**{id_column: frame[id_column].astype(str)})
    duplicated = frame[id_column][frame[id_column].duplicated()]
    if len(duplicated):
        raise UserError(
            f"{settings[key]} ({_key(name, key)}) lists {duplicated.nunique()} image ids more "
            f"than once, e.g. {duplicated.iloc[0]!r}; give one prediction per image."
        )
    expected = set(rows["image_id"])
    unknown = sorted(set(frame[id_column]) - expected)
    absent = sorted(expected - set(frame[id_column]))
    if unknown or absent:
        example = sorted(expected)[0] if expected else "-"
        raise UserError(
            f"{settings[key]} ({_key(name, key)}) does not match the {split} split: "
            f"{len(unknown)} ids are not among its {len(expected)} images (e.g. "
            f"{unknown[:3]}) and {len(absent)} of its images have no prediction (e.g. "
            f"{absent[:3]}). Ids are the manifest's image_id, e.g. {example!r}; predict every "
            f"{split} image, and only those."
        )
    mapping = settings.get("class_names") or {}
    frame = frame.set_index(id_column).loc[rows["image_id"]]
    predicted = map_classes(
        frame[emotion_column].astype(str).unique(), classes, mapping, name=name, key=key
    )
    lookup = dict(zip(frame[emotion_column].astype(str).unique(), predicted, strict=True))
    labels = frame[emotion_column].astype(str).map(lookup)
    if labels.isna().any():
        outside = sorted(set(frame.loc[labels.isna().to_numpy(), emotion_column].astype(str)))
        raise UserError(
            f"{settings[key]} ({_key(name, key)}) predicts {outside}, which are not among the "
            f"dataset's classes {list(classes)}; map them with {_key(name, 'class_names')}."
        )
    by_class = {mapping.get(c, c): c for c in frame.columns}
    probability_columns = [by_class.get(c) for c in classes]
    if all(probability_columns):
        matrix = frame[probability_columns].to_numpy(dtype=np.float64)
        if (matrix < 0).any() or not np.isfinite(matrix).all():
            raise UserError(
                f"{settings[key]} ({_key(name, key)}): probability columns must be finite and "
                "non-negative."
            )
        totals = matrix.sum(axis=1, keepdims=True)
        return matrix / np.where(totals > 0, totals, 1)
    posteriors = np.zeros((len(frame), len(classes)))
    posteriors[np.arange(len(frame)), [list(classes).index(c) for c in labels]] = 1.0
    return posteriors


def preprocess(images: Sequence[bytes], spec: Mapping) -> np.ndarray:
    """Encoded images as the model's input: (N, C, side, side) float32."""
    side = int(spec["size"])
    convert = to_grayscale if spec["grayscale"] else to_rgb
    channels = 1 if spec["grayscale"] else 3
    batch = np.empty((len(images), side, side, channels), dtype=np.float32)
    for row, data in enumerate(images):
        image = convert(Image.open(io.BytesIO(data)))
        if image.size != (side, side):
            image = image.resize((side, side), Image.Resampling.BILINEAR)
        batch[row] = np.asarray(image, dtype=np.float32).reshape(side, side, channels)
    batch = batch / 255.0 * float(spec["pixel_scale"])
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(1, 1, 1, -1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(1, 1, 1, -1)
    if mean.shape[-1] not in (1, channels) or std.shape[-1] not in (1, channels):
        raise UserError(
            f"input mean/std have {mean.shape[-1]}/{std.shape[-1]} values for {channels}-channel "
            "input; give one value or one per channel (audit.models.<name>.input)."
        )
    return np.ascontiguousarray(((batch - mean) / std).transpose(0, 3, 1, 2))


class ModelRunner:
    """A TorchScript or ONNX model behind one ``__call__(batch) -> outputs`` (numpy)."""

    def __init__(self, kind: str, path: Path, *, name: str) -> None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path} (config key {_key(name, kind)}) does not exist.")
        self.kind, self.path, self.name = kind, path, name
        if kind == "torchscript":
            import torch

            try:
                self.module = torch.jit.load(str(path), map_location="cpu").eval()
            except RuntimeError as error:
                raise UserError(
                    f"{path} ({_key(name, kind)}) is not a TorchScript model ({error}). Save one "
                    "with torch.jit.trace(model, example).save(path), or give an ONNX file."
                ) from error
        elif kind == "onnx":
            import onnxruntime

            try:
                self.session = onnxruntime.InferenceSession(
                    str(path), providers=["CPUExecutionProvider"]
                )
            except Exception as error:  # onnxruntime raises its own exception types
                raise UserError(
                    f"{path} ({_key(name, kind)}) is not an ONNX model: {error}"
                ) from error
            self.input_name = self.session.get_inputs()[0].name
        else:
            raise ValueError(kind)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        try:
            if self.kind == "torchscript":
                import torch

                with torch.inference_mode():
                    output = self.module(torch.from_numpy(batch))
                output = output[0] if isinstance(output, (tuple, list)) else output
                return output.float().numpy()
            return np.asarray(self.session.run(None, {self.input_name: batch})[0])
        except Exception as error:
            first_line = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
            raise UserError(
                f"{self.path} ({_key(self.name, self.kind)}) failed on input of shape "
                f"{list(batch.shape)} (N, channels, side, side): {first_line}. "
                f"Set {_key(self.name, 'input')}.size and .grayscale to what the model expects."
            ) from error


def model_posteriors(
    runner: ModelRunner,
    images: Sequence[bytes],
    spec: Mapping,
    classes: Sequence[str],
    *,
    name: str,
    batch_size: int = 256,
) -> np.ndarray:
    """(images, classes) posteriors of a model file over the dataset's classes."""
    order = list(spec["class_order"])
    mapped = map_classes(
        order, classes, spec.get("class_names") or {}, name=name, key="input.class_order"
    )
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = preprocess(images[start : start + batch_size], spec)
        scores = _posterior(runner(batch), spec, order, name=name)
        if spec.get("test_time_flip"):
            scores = (
                scores + _posterior(runner(batch[..., ::-1].copy()), spec, order, name=name)
            ) / 2
        outputs.append(scores)
    model = np.concatenate(outputs) if outputs else np.zeros((0, len(order)))
    posteriors = np.zeros((len(model), len(classes)))
    for column, target in enumerate(mapped):
        if target is not None:
            posteriors[:, list(classes).index(target)] += model[:, column]
    totals = posteriors.sum(axis=1, keepdims=True)
    return posteriors / np.where(totals > 0, totals, 1)


def _posterior(output: np.ndarray, spec: Mapping, order: Sequence[str], *, name: str) -> np.ndarray:
    if output.ndim != 2 or output.shape[1] != len(order):
        raise UserError(
            f"the model of audit.models.{name} outputs shape {list(output.shape)}, but "
            f"{_key(name, 'input.class_order')} names {len(order)} classes; list its output "
            "classes in order."
        )
    if spec["output"] == "probabilities":
        return output.astype(np.float64)
    shifted = output.astype(np.float64) - output.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
