"""Trainer pieces: Kamiran-Calders weights, the CNN, determinism of a short training run."""

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fairfer.training import (
    CompactCNN,
    TrainingSettings,
    decode_grayscale,
    kamiran_calders_weights,
    predict_proba,
    random_flip_and_shift,
    train,
)


def test_reweighting_makes_group_and_class_independent():
    groups = pd.Series(["a"] * 80 + ["b"] * 20)
    labels = pd.Series(["x"] * 60 + ["y"] * 20 + ["x"] * 5 + ["y"] * 15)
    weights = kamiran_calders_weights(groups, labels, max_weight=100)
    frame = pd.DataFrame({"g": groups, "y": labels, "w": weights})
    joint = frame.groupby(["g", "y"])["w"].sum() / frame["w"].sum()
    p_group = frame.groupby("g")["w"].sum() / frame["w"].sum()
    p_label = frame.groupby("y")["w"].sum() / frame["w"].sum()
    for (group, label), value in joint.items():
        assert value == pytest.approx(p_group[group] * p_label[label])
    assert weights.mean() == pytest.approx(1.0)


def test_reweighting_clips_and_leaves_unknown_groups_at_unit_weight():
    groups = pd.Series(["a"] * 99 + [None])
    labels = pd.Series(["x"] * 98 + ["y", "y"])
    raw = kamiran_calders_weights(groups, labels, max_weight=1e9)
    clipped = kamiran_calders_weights(groups, labels, max_weight=2.0)
    assert clipped.max() / clipped.min() <= raw.max() / raw.min()
    assert clipped.max() / np.median(clipped) <= 2.0 + 1e-9


def test_decode_resizes_any_image_to_48_grayscale():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 80), (200, 10, 10)).save(buffer, format="PNG")
    decoded = decode_grayscale([buffer.getvalue()])
    assert decoded.shape == (1, 1, 48, 48)
    assert decoded.dtype == torch.uint8


def test_cnn_output_shape_and_flip_shift_keeps_shape():
    model = CompactCNN(width=8, n_classes=8)
    images = torch.randint(0, 255, (4, 1, 48, 48), dtype=torch.uint8)
    assert model(images.float()).shape == (4, 8)
    shifted = random_flip_and_shift(images, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape


def synthetic_faces(n: int, seed: int):
    """Two classes: bright top half vs bright bottom half."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = torch.randint(0, 60, (n, 1, 48, 48), generator=generator).to(torch.uint8)
    for index, label in enumerate(labels):
        rows = slice(0, 24) if label == 0 else slice(24, 48)
        images[index, :, rows] += 150
    return images, labels


def test_short_training_learns_and_is_deterministic():
    torch.set_num_threads(1)
    x, y = synthetic_faces(512, 0)
    xv, yv = synthetic_faces(64, 1)
    settings = TrainingSettings(width=4, epochs=3, batch_size=32, learning_rate=0.01)
    runs = [train(x, y, xv, yv, n_classes=2, settings=settings, seed=7) for _ in range(2)]
    (model, history), (second, _) = runs
    assert history["valid_accuracy"].max() > 0.8
    assert np.array_equal(predict_proba(model, xv), predict_proba(second, xv))


def test_sample_weights_change_training():
    torch.set_num_threads(1)
    x, y = synthetic_faces(128, 0)
    settings = TrainingSettings(width=4, epochs=1, batch_size=32)
    plain, _ = train(x, y, x[:16], y[:16], n_classes=2, settings=settings, seed=1)
    weights = np.where(y.numpy() == 0, 5.0, 0.2)
    weighted, _ = train(
        x, y, x[:16], y[:16], n_classes=2, settings=settings, seed=1, sample_weights=weights
    )
    assert not np.allclose(predict_proba(plain, x[:16]), predict_proba(weighted, x[:16]))


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_decode_rescales_every_pixel_format_to_the_same_grayscale(mode):
    gray = np.tile(np.arange(0, 240, 5, dtype=np.uint8), (48, 1))
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)
    else:
        image = Image.fromarray(gray).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    decoded = decode_grayscale([buffer.getvalue()])
    np.testing.assert_array_equal(decoded[0, 0].numpy(), gray)
