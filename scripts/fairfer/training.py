"""One trainer shared by every mitigation strategy: a compact CNN on 48x48 grayscale faces.

Strategies differ only in what they hand the trainer: per-sample loss weights
(:func:`kamiran_calders_weights`) or a different pool of training images (the augmented set).
Model selection uses the validation split alone; the test split is only predicted.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from fairfer.images import to_grayscale

logger = logging.getLogger(__name__)

IMAGE_SIZE = 48


def decode_grayscale(images: Sequence[bytes], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Decode encoded images of any pixel format into a uint8 tensor (N, 1, size, size)."""
    arrays = []
    for data in images:
        image = to_grayscale(Image.open(io.BytesIO(data)))
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(image, dtype=np.uint8))
    return torch.from_numpy(np.stack(arrays)).unsqueeze(1)


def kamiran_calders_weights(
    groups: pd.Series, labels: pd.Series, *, max_weight: float
) -> np.ndarray:
    """Reweighing weights w = P(group) P(class) / P(group, class) (Kamiran & Calders 2012).

    Multiclass labels and intersectional groups (pass a combined key) are handled alike.
    Samples without a group get weight 1; weights are clipped at ``max_weight`` and then
    rescaled to mean 1 so the learning rate means the same as without weights.
    """
    frame = pd.DataFrame({"group": groups.to_numpy(), "label": labels.to_numpy()})
    known = frame["group"].notna().to_numpy()
    weights = np.ones(len(frame))
    observed = frame[known]
    if len(observed):
        p_group = observed["group"].map(observed["group"].value_counts(normalize=True))
        p_label = observed["label"].map(observed["label"].value_counts(normalize=True))
        joint = observed.groupby(["group", "label"])["group"].transform("size") / len(observed)
        weights[known] = (p_group * p_label / joint).to_numpy()
    weights = np.minimum(weights, max_weight)
    return weights / weights.mean()


class CompactCNN(nn.Module):
    """VGG-style CNN for 48x48 grayscale faces: three conv stages, then global pooling."""

    def __init__(self, *, width: int, n_classes: int) -> None:
        super().__init__()

        def stage(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
                nn.BatchNorm2d(outputs),
                nn.ReLU(inplace=True),
                nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
                nn.BatchNorm2d(outputs),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            )

        self.features = nn.Sequential(
            stage(1, width),
            stage(width, 2 * width),
            stage(2 * width, 4 * width),
            nn.Conv2d(4 * width, 8 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(8 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.4), nn.Linear(8 * width, n_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to roughly zero-mean, unit-range floats."""
    return (images.float() - 128.0) / 64.0


def random_flip_and_shift(
    images: torch.Tensor, generator: torch.Generator, max_shift: int = 4
) -> torch.Tensor:
    """Light on-line augmentation used by every strategy: horizontal flip and translation."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    padded = nn.functional.pad(images, (max_shift,) * 4, mode="replicate")
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[..., dy : dy + images.shape[-2], dx : dx + images.shape[-1]]


@dataclass(frozen=True)
class TrainingSettings:
    """Tunables shared by every strategy (config key ``training``)."""

    width: int = 32
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05

    @classmethod
    def from_config(cls, config: dict) -> TrainingSettings:
        return cls(**{key: config[key] for key in cls.__dataclass_fields__})


@torch.inference_mode()
def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Class posteriors averaged over the image and its mirror (test-time flip)."""
    model.eval()
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = normalise(images[start : start + batch_size])
        logits = model(batch).softmax(1) + model(batch.flip(-1)).softmax(1)
        outputs.append((logits / 2).numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 0))


def train(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    valid_images: torch.Tensor,
    valid_labels: torch.Tensor,
    *,
    n_classes: int,
    settings: TrainingSettings,
    seed: int,
    sample_weights: np.ndarray | None = None,
    epoch_size: int | None = None,
) -> tuple[nn.Module, pd.DataFrame]:
    """Train the CNN; keep the weights of the epoch with the best validation accuracy.

    ``epoch_size`` draws that many training images per epoch (without replacement), so a
    strategy with a larger pool (augmentation) gets the same compute as the baseline.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = CompactCNN(width=settings.width, n_classes=n_classes)
    epoch_size = min(epoch_size or len(train_images), len(train_images))
    steps_per_epoch = math.ceil(epoch_size / settings.batch_size)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=settings.learning_rate,
        epochs=settings.epochs,
        steps_per_epoch=steps_per_epoch,
    )
    weights = torch.as_tensor(
        sample_weights if sample_weights is not None else np.ones(len(train_images)),
        dtype=torch.float32,
    )
    loss_function = nn.CrossEntropyLoss(reduction="none", label_smoothing=settings.label_smoothing)
    history = []
    best_accuracy, best_state = -1.0, None
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(len(train_images), generator=generator)[:epoch_size]
        total_loss = 0.0
        for step in range(steps_per_epoch):
            index = order[step * settings.batch_size : (step + 1) * settings.batch_size]
            images = normalise(random_flip_and_shift(train_images[index], generator))
            losses = loss_function(model(images), train_labels[index])
            loss = (losses * weights[index]).sum() / weights[index].sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total_loss += loss.item() * len(index)
        valid_accuracy = float(
            (predict_proba(model, valid_images).argmax(1) == valid_labels.numpy()).mean()
        )
        history.append(
            {
                "epoch": epoch,
                "train_loss": total_loss / epoch_size,
                "valid_accuracy": valid_accuracy,
            }
        )
        logger.info(
            "epoch %d/%d: train loss %.4f, valid accuracy %.4f",
            epoch,
            settings.epochs,
            total_loss / epoch_size,
            valid_accuracy,
        )
        if valid_accuracy > best_accuracy:
            best_accuracy = valid_accuracy
            best_state = {key: value.clone() for key, value in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    return model, pd.DataFrame(history)
