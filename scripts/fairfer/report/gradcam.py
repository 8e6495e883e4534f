"""Grad-CAM (Selvaraju et al. 2017) for any torch convolutional classifier, with forward hooks.

The class score's gradient with respect to a convolutional layer's output, averaged over
space, weights that output's channels; the ReLU of the weighted sum, upsampled to the input
size, is the map. A forward hook captures the layer's output and ``torch.autograd.grad``
takes the gradient, so the model is not modified and no backward hook is needed. Works for
the compact CNN, torchvision's ResNet-18 and MobileNetV3 alike: the default target layer is
the last module whose output still has a spatial grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn


class EmotionLogits(nn.Module):
    """The logits alone of a network that returns (logits, representation), such as
    :class:`fairfer.training.models.Network`: Grad-CAM explains one class score."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs)[0]


def spatial_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Modules whose output is a feature map larger than 1x1, in the order they finish.

    Parameters
    ----------
    model : torch.nn.Module
    example : torch.Tensor
        One input batch of the shape the model takes.

    Returns
    -------
    list of (str, torch.nn.Module)
        Qualified names and modules; containers finish after their children.
    """
    finished: list[tuple[str, nn.Module]] = []
    names = {module: name for name, module in model.named_modules()}

    def record(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] > 1:
            finished.append((names[module], module))

    handles = [module.register_forward_hook(record) for module in names if module is not model]
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for handle in handles:
            handle.remove()
    return finished


def default_target_layer(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The last module with a spatial output: the usual Grad-CAM layer.

    For the compact CNN that is the last convolution's ReLU; for torchvision's ResNet-18
    ``layer4``; for MobileNetV3 ``features``.

    Raises
    ------
    ValueError
        If no module outputs a feature map larger than 1x1.
    """
    layers = spatial_layers(model, example)
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no layer with a spatial output for an input of shape "
            f"{tuple(example.shape)}; pass target_layer explicitly"
        )
    return layers[-1][1]


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    *,
    target_layer: nn.Module,
    class_index: torch.Tensor | Sequence[int] | None = None,
) -> np.ndarray:
    """Grad-CAM maps of ``images`` for one class each.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier returning logits (N, n_classes); put in eval mode.
    images : torch.Tensor
        Model inputs (N, C, H, W), already normalised as the model expects.
    target_layer : torch.nn.Module
        Module of ``model`` whose output (N, K, h, w) is explained; its output must not be
        modified in place afterwards (pick the ReLU itself rather than the layer before an
        in-place ReLU).
    class_index : tensor or sequence of int, optional
        Class to explain per image; the predicted class when omitted.

    Returns
    -------
    numpy.ndarray
        Maps (N, H, W) in [0, 1] (each divided by its maximum; all zero where the class has
        no positive evidence in the layer).
    """
    captured: list[torch.Tensor] = []
    handle = target_layer.register_forward_hook(
        lambda module, inputs, output: captured.append(output)
    )
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(images)
            if class_index is None:
                target = logits.argmax(dim=1)
            else:
                target = torch.as_tensor(class_index, dtype=torch.long, device=logits.device)
            score = logits.gather(1, target[:, None]).sum()
            (activation,) = captured
            (gradient,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activation.detach()).sum(dim=1, keepdim=True))
    cam = nn.functional.interpolate(
        cam, size=images.shape[-2:], mode="bilinear", align_corners=False
    )
    cam = cam[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(torch.finfo(cam.dtype).tiny)
    return (cam / peak[:, None, None]).cpu().numpy()


def sample_cells(
    images: pd.DataFrame,
    *,
    group_column: str,
    classes: Sequence[str],
    per_cell: int,
    seed: int,
    group_order: Sequence[str] = (),
) -> pd.DataFrame:
    """Pick up to ``per_cell`` test images per (group, true class), reproducibly.

    The choice depends only on the image ids, groups and true labels, so every strategy's
    grid shows the same faces.

    Parameters
    ----------
    images : pandas.DataFrame
        ``image_id``, ``y_true`` and ``group_column``; rows with a null group are skipped.
    group_column : str
        Attribute whose groups form the rows of the grid.
    classes : sequence of str
        Classes in column order.
    per_cell : int
        Images per cell (fewer where the cell has fewer).
    seed : int
    group_order : sequence of str, optional
        Order of the groups (e.g. FairFace's); groups not listed follow, sorted.

    Returns
    -------
    pandas.DataFrame
        ``image_id``, ``group``, ``class``, ordered by group then class.
    """
    known = images.dropna(subset=[group_column])
    # A hash of the id, not the row order, decides: the same images for every strategy.
    key = pd.util.hash_pandas_object(known["image_id"], index=False).to_numpy() ^ np.uint64(seed)
    ranked = known.assign(_key=key).sort_values("_key", kind="stable")
    chosen = ranked.groupby([group_column, "y_true"], sort=False).head(per_cell)
    chosen = chosen.rename(columns={group_column: "group", "y_true": "class"})
    class_rank = {c: i for i, c in enumerate(classes)}
    chosen = chosen[chosen["class"].isin(class_rank)]
    present = set(chosen["group"])
    groups = [g for g in group_order if g in present]
    groups += sorted(present.difference(groups))
    order = pd.DataFrame(
        {
            "group": chosen["group"].map({g: i for i, g in enumerate(groups)}),
            "class": chosen["class"].map(class_rank),
            "key": chosen["_key"],
        }
    )
    chosen = chosen.loc[order.sort_values(["group", "class", "key"]).index]
    return chosen[["image_id", "group", "class"]].reset_index(drop=True)
