"""Mitigation strategies as training objectives that share one trainer.

A strategy is an ``nn.Module``: any heads it adds (the adversary, the demographic heads) are
trained by the same optimiser, and any state it keeps (group DRO's distribution over cells,
the dynamic group weights) is a buffer, so a checkpoint resumes it exactly. The trainer asks a
strategy for the loss of each batch and tells it the validation predictions after each epoch.

The augmentation strategies change the training pool, not the objective: they train with
:class:`Strategy` (plain ERM) on the augmented set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from fairfer.config_checks import POSTPROCESS_STRATEGIES
from fairfer.training.data import UNKNOWN, Encoding, Split

logger = logging.getLogger(__name__)

#: Strategy names a config may use (``strategies.<name>``), each its own wildcard value.
STRATEGIES: tuple[str, ...] = (
    "baseline",
    "reweighting",
    "augmentation",
    "augmentation_emotion",
    "adversarial",
    "multitask",
    "group_dro",
    "dynamic_weighting",
    # Post-processing: no objective here (rule postprocess_predictions).
    *POSTPROCESS_STRATEGIES,
)
#: Strategies that train on the output of augment_demographics.
AUGMENTATION_STRATEGIES: tuple[str, ...] = ("augmentation", "augmentation_emotion")


class Strategy(nn.Module):
    """Empirical risk minimisation: mean cross-entropy of the emotion head."""

    def __init__(self, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def emotion_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), labels, reduction="none", label_smoothing=self.label_smoothing
        )

    def loss(
        self,
        logits: torch.Tensor,
        representation: torch.Tensor,
        labels: torch.Tensor,
        attributes: torch.Tensor,
        index: torch.Tensor,
        progress: float,
    ) -> torch.Tensor:
        """Loss of one batch; ``index`` locates its rows in the training pool, ``progress`` is
        the number of epochs done (fractional)."""
        return self.emotion_losses(logits, labels).mean()

    def end_epoch(self, predicted: torch.Tensor, valid: Split) -> dict[str, float]:
        """Called with the validation predictions after each epoch; returns figures to log."""
        return {}


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


def _known_groups(encoding: Encoding, split: Split, attributes: Sequence[str]) -> pd.Series:
    ids = encoding.group_ids(split.attributes.cpu(), attributes).numpy()
    return pd.Series(ids).where(ids != encoding.n_groups(attributes) - 1)


class Reweighting(Strategy):
    """Fixed Kamiran-Calders weights of the training pool's (group, class) cells."""

    def __init__(
        self,
        encoding: Encoding,
        train: Split,
        *,
        groups: Sequence[str],
        max_weight: float,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(label_smoothing=label_smoothing)
        weights = kamiran_calders_weights(
            _known_groups(encoding, train, groups),
            pd.Series(train.labels.cpu().numpy()),
            max_weight=max_weight,
        )
        logger.info("reweighting: weights from %.3f to %.3f", weights.min(), weights.max())
        self.register_buffer("weights", torch.as_tensor(weights, dtype=torch.float32))

    def loss(self, logits, representation, labels, attributes, index, progress):
        return (self.emotion_losses(logits, labels) * self.weights[index]).mean()


class GradientReversal(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``-scale`` backward (Ganin & Lempitsky)."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return inputs.view_as(inputs)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * gradient, None


def _attribute_loss(logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the rows whose attribute is known (0 when none is)."""
    known = codes != UNKNOWN
    if not known.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known].float(), codes[known])


def _attribute_heads(
    encoding: Encoding, attributes: Sequence[str], inputs: int, hidden: int
) -> nn.ModuleDict:
    heads = {}
    for attribute in attributes:
        encoding.column(attribute)
        size = len(encoding.attributes[attribute])
        heads[attribute] = (
            nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, size))
            if hidden
            else nn.Linear(inputs, size)
        )
    return nn.ModuleDict(heads)


class Adversarial(Strategy):
    """A gradient-reversal adversary predicts protected attributes from the representation.

    The adversary minimises its cross-entropy; the trunk receives that gradient reversed and
    scaled by ``weight`` (Ganin et al. 2016; Zhang et al. 2018), ramped up linearly over the
    first ``warmup_epochs`` so the emotion features form before they are scrubbed. With
    ``condition_on_label`` the adversary also sees the true emotion, so only demographic
    information beyond the emotion is removed (Zhang et al.'s equality-of-odds variant).
    """

    def __init__(
        self,
        encoding: Encoding,
        representation_dim: int,
        *,
        attributes: Sequence[str],
        weight: float,
        warmup_epochs: float,
        hidden: int,
        condition_on_label: bool,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(label_smoothing=label_smoothing)
        self.weight = weight
        self.warmup_epochs = warmup_epochs
        self.condition_on_label = condition_on_label
        self.n_classes = len(encoding.classes)
        self.columns = {a: encoding.column(a) for a in attributes}
        inputs = representation_dim + (self.n_classes if condition_on_label else 0)
        self.adversaries = _attribute_heads(encoding, attributes, inputs, hidden)

    def reversal_scale(self, progress: float) -> float:
        if self.warmup_epochs <= 0:
            return self.weight
        return self.weight * min(1.0, progress / self.warmup_epochs)

    def loss(self, logits, representation, labels, attributes, index, progress):
        reversed_features = GradientReversal.apply(
            representation.float(), self.reversal_scale(progress)
        )
        if self.condition_on_label:
            one_hot = F.one_hot(labels, self.n_classes).to(reversed_features.dtype)
            reversed_features = torch.cat([reversed_features, one_hot], dim=1)
        adversary_loss = sum(
            _attribute_loss(head(reversed_features), attributes[:, self.columns[a]])
            for a, head in self.adversaries.items()
        )
        return self.emotion_losses(logits, labels).mean() + adversary_loss


class Multitask(Strategy):
    """Demographic heads on the shared representation, trained alongside the emotion head."""

    def __init__(
        self,
        encoding: Encoding,
        representation_dim: int,
        *,
        attributes: Sequence[str],
        weight: float,
        hidden: int,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(label_smoothing=label_smoothing)
        self.weight = weight
        self.columns = {a: encoding.column(a) for a in attributes}
        self.demographic_heads = _attribute_heads(encoding, attributes, representation_dim, hidden)

    def loss(self, logits, representation, labels, attributes, index, progress):
        demographic_loss = sum(
            _attribute_loss(head(representation.float()), attributes[:, self.columns[a]])
            for a, head in self.demographic_heads.items()
        ) / len(self.demographic_heads)
        return self.emotion_losses(logits, labels).mean() + self.weight * demographic_loss


class GroupDRO(Strategy):
    """Online group DRO (Sagawa et al. 2020) over (group x class) cells of the training pool.

    A distribution ``q`` over cells is updated by exponentiated gradient ascent on each batch's
    per-cell losses; the model minimises the ``q``-weighted loss of the cells in the batch
    (``q`` renormalised over them, so a batch's loss scale does not depend on which cells it
    happens to contain). ``size_adjustment`` adds Sagawa's C / sqrt(n_cell) to the cell losses
    in the ``q`` update, favouring small cells less.
    """

    def __init__(
        self,
        encoding: Encoding,
        train: Split,
        *,
        groups: Sequence[str],
        by_class: bool,
        step_size: float,
        size_adjustment: float,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(label_smoothing=label_smoothing)
        self.step_size = step_size
        group_ids = encoding.group_ids(train.attributes.cpu(), groups)
        n_cells = encoding.n_groups(groups)
        if by_class:
            group_ids = group_ids * len(encoding.classes) + train.labels.cpu()
            n_cells *= len(encoding.classes)
        counts = torch.bincount(group_ids, minlength=n_cells).float()
        self.n_cells = n_cells
        self.register_buffer("cells", group_ids)
        self.register_buffer("q", torch.full((n_cells,), 1.0 / n_cells))
        self.register_buffer("adjustment", size_adjustment / counts.clamp(min=1).sqrt())
        logger.info("group DRO over %d non-empty cells", int((counts > 0).sum()))

    def loss(self, logits, representation, labels, attributes, index, progress):
        losses = self.emotion_losses(logits, labels)
        cells = self.cells[index]
        counts = torch.bincount(cells, minlength=self.n_cells)
        sums = torch.zeros(self.n_cells, device=losses.device).index_add(0, cells, losses)
        present = counts > 0
        cell_loss = sums[present] / counts[present]
        with torch.no_grad():
            update = torch.exp(self.step_size * (cell_loss + self.adjustment[present]))
            self.q[present] *= update
            self.q /= self.q.sum()
        q = self.q[present]
        return (q * cell_loss).sum() / q.sum()


def dynamic_group_weights(
    weights: torch.Tensor,
    errors: torch.Tensor,
    measured: torch.Tensor,
    train_counts: torch.Tensor,
    *,
    step_size: float,
    max_weight: float,
) -> torch.Tensor:
    """One exponentiated-gradient step of the group weights toward higher validation error.

    Groups with a validation estimate (``measured``) move by exp(step_size * (error - mean
    error)) and are rescaled so their mean weight over the training samples is unchanged;
    the others keep their weight. Weights stay within [1/max_weight, max_weight].
    """
    measured = measured & (train_counts > 0)
    if not measured.any():
        return weights
    mean_error = errors[measured].mean()
    moved = weights[measured] * torch.exp(step_size * (errors[measured] - mean_error))
    counts = train_counts[measured]
    moved *= (weights[measured] * counts).sum() / (moved * counts).sum()
    updated = weights.clone()
    updated[measured] = moved.clamp(1.0 / max_weight, max_weight)
    return updated


class DynamicWeighting(Strategy):
    """Per-group loss weights updated after every epoch from per-group validation error.

    ``groups`` may include ``dataset`` when a second emotion dataset is pooled into training
    (the cross-dataset variant): weights then also move between the datasets. Groups with
    fewer than ``min_valid_count`` validation images keep their weight.
    """

    def __init__(
        self,
        encoding: Encoding,
        train: Split,
        *,
        groups: Sequence[str],
        step_size: float,
        max_weight: float,
        min_valid_count: int,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(label_smoothing=label_smoothing)
        self.encoding = encoding
        self.groups = list(groups)
        self.step_size = step_size
        self.max_weight = max_weight
        self.min_valid_count = min_valid_count
        n_groups = encoding.n_groups(groups)
        group_ids = encoding.group_ids(train.attributes.cpu(), groups)
        self.register_buffer("train_groups", group_ids)
        self.register_buffer("train_counts", torch.bincount(group_ids, minlength=n_groups).float())
        self.register_buffer("group_weights", torch.ones(n_groups))

    def loss(self, logits, representation, labels, attributes, index, progress):
        weights = self.group_weights[self.train_groups[index]]
        return (self.emotion_losses(logits, labels) * weights).mean()

    def end_epoch(self, predicted: torch.Tensor, valid: Split) -> dict[str, float]:
        n_groups = len(self.group_weights)
        group_ids = self.encoding.group_ids(valid.attributes.cpu(), self.groups)
        wrong = (predicted.cpu() != valid.labels.cpu()).float()
        counts = torch.bincount(group_ids, minlength=n_groups).float()
        errors = torch.zeros(n_groups).index_add(0, group_ids, wrong) / counts.clamp(min=1)
        measured = (counts >= self.min_valid_count) & (self.train_counts > 0)
        measured[-1] = False  # the unknown group is no group to be fair to
        updated = dynamic_group_weights(
            self.group_weights.cpu(),
            errors,
            measured,
            self.train_counts.cpu(),
            step_size=self.step_size,
            max_weight=self.max_weight,
        )
        self.group_weights.copy_(updated)
        names = self.encoding.group_names(self.groups)
        return {f"weight[{names[g]}]": float(updated[g]) for g in range(n_groups) if measured[g]}


def build_strategy(
    name: str,
    params: dict,
    *,
    encoding: Encoding,
    train: Split,
    representation_dim: int,
    label_smoothing: float,
) -> Strategy:
    """The objective of strategy ``name`` with its config entry ``params``."""
    common = {"label_smoothing": label_smoothing}
    if name in ("baseline", *AUGMENTATION_STRATEGIES):
        return Strategy(**common)
    if name == "reweighting":
        return Reweighting(encoding, train, **params, **common)
    if name == "adversarial":
        return Adversarial(encoding, representation_dim, **params, **common)
    if name == "multitask":
        return Multitask(encoding, representation_dim, **params, **common)
    if name == "group_dro":
        return GroupDRO(encoding, train, **params, **common)
    if name == "dynamic_weighting":
        params = {k: v for k, v in params.items() if k != "second_dataset"}
        if "dataset" in encoding.attributes and "dataset" not in params["groups"]:
            params["groups"] = ["dataset", *params["groups"]]
        return DynamicWeighting(encoding, train, **params, **common)
    raise ValueError(f"unknown strategy {name!r}; known: {STRATEGIES}")
