"""Auditing a model fairfer did not train: predictions files and TorchScript / ONNX models."""

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fairfer.audit import ModelRunner, model_posteriors, predictions_from_file, preprocess
from fairfer.errors import UserError

CLASSES = ["neutral", "happiness", "sadness"]


def rows(n=6):
    return pd.DataFrame({"image_id": [f"fer{i:07d}" for i in range(n)]})


def test_a_predictions_file_with_probabilities_and_class_names():
    frame = pd.DataFrame(
        {
            "image_id": [f"fer{i:07d}" for i in reversed(range(6))],
            "emotion": ["Happy", "Neutral", "Sad", "Happy", "Neutral", "Sad"],
            "Neutral": [0.1, 0.8, 0.1, 0.2, 0.7, 0.0],
            "Happy": [0.8, 0.1, 0.1, 0.7, 0.2, 0.0],
            "Sad": [0.1, 0.1, 0.8, 0.1, 0.1, 2.0],
        }
    )
    settings = {
        "predictions": "p.csv",
        "class_names": {"Happy": "happiness", "Neutral": "neutral", "Sad": "sadness"},
    }
    posteriors = predictions_from_file(
        frame, rows(), CLASSES, settings, name="mine", key="predictions", split="test"
    )
    # In the dataset's row order and class order, rows normalised.
    assert posteriors.shape == (6, 3)
    np.testing.assert_allclose(posteriors.sum(1), 1)
    assert posteriors[5].argmax() == 1 and posteriors[0].argmax() == 2
    labels_only = frame[["image_id", "emotion"]]
    onehot = predictions_from_file(
        labels_only, rows(), CLASSES, settings, name="mine", key="predictions", split="test"
    )
    assert set(np.unique(onehot)) == {0.0, 1.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(image_id=f["image_id"].str.upper()), "does not match the test split"),
        (lambda f: f.iloc[:4], "2 of its images have no prediction"),
        (lambda f: f.rename(columns={"emotion": "label"}), "emotion_column"),
        (lambda f: f.assign(emotion="contempt"), "class_names"),
        (lambda f: pd.concat([f, f.iloc[:1]]), "more than once"),
    ],
)
def test_bad_predictions_files_name_the_fix(change, message):
    frame = pd.DataFrame(
        {"image_id": rows()["image_id"], "emotion": ["neutral", "happiness", "sadness"] * 2}
    )
    with pytest.raises(UserError, match=message) as error:
        predictions_from_file(
            change(frame),
            rows(),
            CLASSES,
            {"predictions": "p.csv"},
            name="mine",
            key="predictions",
            split="test",
        )
    assert "audit.models.mine" in str(error.value) and "\n" not in str(error.value)


class Scores(torch.nn.Module):
    """Mean brightness of the left and right halves and their difference as three logits."""

    def forward(self, x):
        left, right = (
            x[..., : x.shape[-1] // 2].mean((1, 2, 3)),
            x[..., x.shape[-1] // 2 :].mean((1, 2, 3)),
        )
        return torch.stack([left, right, left - right], dim=1)


def png(array) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def images():
    dark_left = np.tile(np.r_[np.zeros(24), np.full(24, 200)], (48, 1))
    return [png(dark_left), png(dark_left[:, ::-1])]


SPEC = {
    "size": 48, "grayscale": True, "source": "image", "pixel_scale": 255, "mean": [0.0],
    "std": [1.0], "class_order": ["neutral", "happiness", "sadness"], "output": "logits",
    "test_time_flip": False,
}  # fmt: skip


def test_torchscript_and_onnx_models_give_the_same_posteriors(tmp_path, images):
    example = torch.zeros(2, 1, 48, 48)
    torch.jit.trace(Scores(), example).save(str(tmp_path / "m.pt"))
    torch.onnx.export(
        Scores(), (example,), str(tmp_path / "m.onnx"), input_names=["x"],
        dynamic_axes={"x": {0: "n"}}, dynamo=False,
    )  # fmt: skip
    script = model_posteriors(
        ModelRunner("torchscript", tmp_path / "m.pt", name="m"), images, SPEC, CLASSES, name="m"
    )
    onnx = model_posteriors(
        ModelRunner("onnx", tmp_path / "m.onnx", name="m"), images, SPEC, CLASSES, name="m"
    )
    np.testing.assert_allclose(script, onnx, atol=1e-6)
    assert script[0].argmax() == 1 and script[1].argmax() == 0
    flipped = model_posteriors(
        ModelRunner("torchscript", tmp_path / "m.pt", name="m"),
        images,
        {**SPEC, "test_time_flip": True},
        CLASSES,
        name="m",
    )
    # Averaged with the mirror image, an image and its mirror image score the same.
    np.testing.assert_allclose(flipped[0], flipped[1], atol=1e-6)


def test_model_mismatches_name_the_fix(tmp_path, images):
    torch.jit.trace(Scores(), torch.zeros(1, 1, 48, 48)).save(str(tmp_path / "m.pt"))
    runner = ModelRunner("torchscript", tmp_path / "m.pt", name="m")
    with pytest.raises(UserError, match="input.class_order"):
        model_posteriors(
            runner, images, {**SPEC, "class_order": ["neutral", "happiness"]}, CLASSES, name="m"
        )
    with pytest.raises(UserError, match="class_names"):
        model_posteriors(
            runner, images, {**SPEC, "class_order": ["a", "b", "c"]}, CLASSES, name="m"
        )
    conv = torch.nn.Conv2d(3, 3, 48)
    torch.jit.trace(torch.nn.Sequential(conv, torch.nn.Flatten()), torch.zeros(1, 3, 48, 48)).save(
        str(tmp_path / "rgb.pt")
    )
    with pytest.raises(UserError, match="grayscale"):
        model_posteriors(
            ModelRunner("torchscript", tmp_path / "rgb.pt", name="m"),
            images,
            SPEC,
            CLASSES,
            name="m",
        )
    with pytest.raises(UserError, match="does not exist"):
        ModelRunner("onnx", tmp_path / "missing.onnx", name="m")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(UserError, match="TorchScript"):
        ModelRunner("torchscript", tmp_path / "junk.pt", name="m")


def test_preprocess_scales_and_normalises(images):
    batch = preprocess(images, {**SPEC, "pixel_scale": 1.0, "mean": [0.5], "std": [0.25]})
    assert batch.shape == (2, 1, 48, 48) and batch.dtype == np.float32
    assert batch.min() == pytest.approx(-2.0) and batch.max() == pytest.approx(
        (200 / 255 - 0.5) / 0.25
    )
