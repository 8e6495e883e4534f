"""Grad-CAM on the compact CNN, ResNet-18 and MobileNetV3, and on a model whose answer is known."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v3_small, resnet18

from fairfer.report.gradcam import EmotionLogits, default_target_layer, grad_cam, sample_cells
from fairfer.training.models import ModelSpec, build_network


def network(architecture: str, source: str = "gray48") -> nn.Module:
    spec = ModelSpec(architecture=architecture, input=source, image_size=64, width=4)
    return EmotionLogits(build_network(spec, n_classes=8))


def two_class_model() -> nn.Sequential:
    """Class 0 scores the bright pixels, class 1 the dark ones (channel 1 = 1 - image)."""
    mapping = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        mapping.weight[:] = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
        mapping.bias[:] = torch.tensor([0.0, 1.0])
    return nn.Sequential(mapping, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_maps_point_at_the_evidence_for_each_class():
    image = torch.zeros(1, 1, 16, 16)
    image[..., :6, :6] = 1.0  # a bright square top left
    model = two_class_model()
    layer = default_target_layer(model, image)
    assert layer is model[1]
    bright = grad_cam(model, image.repeat(2, 1, 1, 1), target_layer=layer, class_index=[0, 1])
    assert bright.shape == (2, 16, 16)
    assert bright.min() >= 0 and bright.max() == pytest.approx(1.0)
    square = np.zeros((16, 16), dtype=bool)
    square[:6, :6] = True
    # Class 0 looks at the square, class 1 at the dark background.
    assert bright[0][square].mean() > 0.9 and bright[0][~square].mean() < 0.1
    assert bright[1][~square].mean() > 0.9 and bright[1][square].mean() < 0.1
    # Without class_index the predicted class is explained: here the dark background wins.
    np.testing.assert_allclose(grad_cam(model, image, target_layer=layer)[0], bright[1])


@pytest.mark.parametrize(
    ("build", "shape", "expected_layer"),
    [
        (lambda: network("compact_cnn"), (2, 1, 48, 48), "network.trunk.23"),
        (lambda: network("resnet18"), (2, 1, 48, 48), "network.trunk.layer4"),
        (lambda: network("resnet18", "aligned"), (2, 3, 64, 64), "network.trunk.layer4"),
        (lambda: network("mobilenet_v3_small"), (2, 1, 48, 48), "network.trunk.features"),
        (lambda: resnet18(num_classes=8), (2, 3, 64, 64), "layer4"),
        (lambda: mobilenet_v3_small(num_classes=8), (2, 3, 64, 64), "features"),
    ],
)
def test_works_on_the_image_models(build, shape, expected_layer):
    torch.manual_seed(0)
    model = build()
    images = torch.randn(shape)
    layer = default_target_layer(model, images)
    assert layer is model.get_submodule(expected_layer)
    maps = grad_cam(model, images, target_layer=layer, class_index=[3, 5])
    assert maps.shape == (shape[0], *shape[-2:])
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert not any(p.grad is not None for p in model.parameters())


def test_cells_are_the_same_images_whatever_the_row_order():
    frame = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(40)],
            "race": ["A", "B", None, "A"] * 10,
            "y_true": ["neutral", "happiness"] * 20,
        }
    )
    cells = sample_cells(
        frame,
        group_column="race",
        classes=["happiness", "neutral"],
        per_cell=2,
        seed=1,
        group_order=["B", "A"],
    )
    assert list(cells["group"]) == ["B", "B", "A", "A", "A", "A"]
    assert list(cells["class"]) == [
        "happiness",
        "happiness",
        "happiness",
        "happiness",
        "neutral",
        "neutral",
    ]
    shuffled = sample_cells(
        frame.sample(frac=1, random_state=3),
        group_column="race",
        classes=["happiness", "neutral"],
        per_cell=2,
        seed=1,
        group_order=["B", "A"],
    )
    pd.testing.assert_frame_equal(cells, shuffled)
