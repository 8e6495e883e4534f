"""Fine-tune FaceNet (Inception-ResNet-v1) on FairFace race, gender and age, CPU-friendly.

The network is cut into its 24 blocks (:data:`FACENET_BLOCKS`). The lower blocks
stay frozen: their activations are computed once per image (and once for its mirror image, the
only augmentation, so epochs still see random flips) and cached, so every epoch runs only the
trainable top. One shared trunk feeds one linear head per attribute; the 128-d bottleneck the
heads read is the fine-tuned embedding. Model selection and early stopping use a stratified
part of FairFace *train* held out from training (:func:`selection_split`); FairFace val is
never seen here.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from facenet_pytorch import InceptionResnetV1
from sklearn.model_selection import train_test_split
from torch import nn

from fairfer.faces.embedding import crops_to_tensor
from fairfer.faces.facenet import STEM_LAYERS, build_facenet

logger = logging.getLogger(__name__)

#: Inception-ResNet-v1's blocks bottom-up; ``trainable_blocks`` counts them from the top.
FACENET_BLOCKS: tuple[str, ...] = (
    "stem",
    *(f"repeat_1.{i}" for i in range(5)),
    "mixed_6a",
    *(f"repeat_2.{i}" for i in range(10)),
    "mixed_7a",
    *(f"repeat_3.{i}" for i in range(5)),
    "block8",
)
_STEM = STEM_LAYERS
#: float16 halves the cache; activations of a trained network are far inside its range, and
#: a non-finite value stops the run rather than training on it.
CACHE_DTYPE = torch.float16


@dataclass(frozen=True)
class FineTuneSettings:
    """Tunables of the fine-tuning rule (config key ``finetune``)."""

    trainable_blocks: int = 6
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    patience: int = 3
    holdout_fraction: float = 0.2
    flip: bool = True
    device: str = "auto"

    @classmethod
    def from_config(cls, config: Mapping) -> FineTuneSettings:
        return cls(**{key: config[key] for key in cls.__dataclass_fields__})


def facenet_blocks(facenet: InceptionResnetV1) -> list[nn.Module]:
    """The modules named by :data:`FACENET_BLOCKS`, in forward order (shared, not copied)."""
    stem = nn.Sequential(*(getattr(facenet, name) for name in _STEM))
    return [
        stem,
        *facenet.repeat_1,
        facenet.mixed_6a,
        *facenet.repeat_2,
        facenet.mixed_7a,
        *facenet.repeat_3,
        facenet.block8,
    ]


class Bottleneck(nn.Module):
    """FaceNet's pooling, dropout, linear bottleneck and BatchNorm, without the L2 norm."""

    def __init__(self, facenet: InceptionResnetV1) -> None:
        super().__init__()
        self.pool = facenet.avgpool_1a
        self.dropout = facenet.dropout
        self.linear = facenet.last_linear
        self.norm = facenet.last_bn

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(activations).flatten(1)
        return self.norm(self.linear(self.dropout(pooled)))


class MultiTaskFaceNet(nn.Module):
    """FaceNet trunk split at a block boundary, with one linear head per attribute.

    ``frozen`` (the lower blocks) never trains and always runs in eval mode, so its BatchNorm
    statistics stay those of the pretrained network; ``top`` (the upper ``trainable_blocks``
    blocks plus :class:`Bottleneck`) and ``heads`` train. ``top(frozen(x))`` is the
    embedding; L2-normalising it gives what ``facenet(x)`` returns.
    """

    def __init__(
        self,
        facenet: InceptionResnetV1,
        *,
        trainable_blocks: int,
        attribute_classes: Mapping[str, Sequence[str]],
    ) -> None:
        super().__init__()
        if not 0 <= trainable_blocks <= len(FACENET_BLOCKS):
            raise ValueError(
                f"trainable_blocks must be between 0 and {len(FACENET_BLOCKS)}, "
                f"got {trainable_blocks}"
            )
        blocks = facenet_blocks(facenet)
        cut = len(blocks) - trainable_blocks
        self.trainable_blocks = trainable_blocks
        self.embedding_size = facenet.last_bn.num_features
        self.frozen = nn.Sequential(*blocks[:cut])
        self.top = nn.Sequential(*blocks[cut:], Bottleneck(facenet))
        self.heads = nn.ModuleDict(
            {
                attribute: nn.Linear(self.embedding_size, len(classes))
                for attribute, classes in attribute_classes.items()
            }
        )
        self.frozen.requires_grad_(False)
        self.top.requires_grad_(True)

    def train(self, mode: bool = True) -> MultiTaskFaceNet:
        super().train(mode)
        self.frozen.eval()
        return self

    def forward(self, activations: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute from the frozen part's ``activations``."""
        embedding = self.top(activations)
        return {attribute: head(embedding) for attribute, head in self.heads.items()}

    def embedder(self) -> nn.Sequential:
        """Images (preprocessed) to embeddings, in eval mode."""
        return nn.Sequential(self.frozen, self.top).eval()


def build_multitask(
    facenet: InceptionResnetV1,
    *,
    trainable_blocks: int,
    attribute_classes: Mapping[str, Sequence[str]],
    seed: int,
) -> MultiTaskFaceNet:
    """:class:`MultiTaskFaceNet` with heads initialised from ``seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultiTaskFaceNet(
            facenet, trainable_blocks=trainable_blocks, attribute_classes=attribute_classes
        )


@dataclass
class ActivationCache:
    """Frozen-part activations of a set of images and, optionally, of their mirror images."""

    original: torch.Tensor
    mirrored: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.original)

    def batch(self, index: torch.Tensor, mirror: torch.Tensor | None = None) -> torch.Tensor:
        """float32 activations of ``index``; rows where ``mirror`` is set come mirrored."""
        rows = self.original[index]
        if mirror is not None:
            if self.mirrored is None:
                raise ValueError("this cache holds no mirrored activations")
            rows = torch.where(mirror[:, None, None, None], self.mirrored[index], rows)
        return rows.float()

    def subset(self, index: np.ndarray | torch.Tensor) -> ActivationCache:
        index = torch.as_tensor(index)
        mirrored = self.mirrored[index] if self.mirrored is not None else None
        return ActivationCache(self.original[index], mirrored)


def _autocast(device: torch.device):
    # bfloat16 needs no loss scaling; on the CPU autocast is off (fp32 is faster there).
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.inference_mode()
def cache_activations(
    frozen: nn.Module,
    image_batches: Iterable[torch.Tensor],
    *,
    mirrored: bool,
    device: torch.device,
) -> ActivationCache:
    """Run ``frozen`` once over preprocessed image batches (and their mirrors) and keep it.

    The result stays on the CPU as :data:`CACHE_DTYPE`; an empty ``frozen`` caches the
    images themselves.
    """
    frozen = frozen.to(device).eval()
    originals, mirrors = [], []
    for images in image_batches:
        views = (images, images.flip(-1)) if mirrored else (images,)
        for view, sink in zip(views, (originals, mirrors), strict=False):
            with _autocast(device):
                activations = frozen(view.to(device))
            sink.append(activations.to("cpu", CACHE_DTYPE))
    if not originals:
        raise ValueError("no images to cache")
    cache = ActivationCache(torch.cat(originals), torch.cat(mirrors) if mirrored else None)
    for part in (cache.original, cache.mirrored):
        if part is not None and not torch.isfinite(part).all():
            raise ValueError(f"frozen activations overflow {CACHE_DTYPE}")
    return cache


def labelled_crops(
    aligned: Sequence[Path],
    manifest: Path,
    *,
    splits: Sequence[str],
    attributes: Sequence[str],
) -> pd.DataFrame:
    """Aligned crops of ``splits`` (rejects skipped) with their labels from ``manifest``."""
    tables = []
    for path in aligned:
        table = pq.read_table(path, columns=["image_id", "split", "status", "crop"])
        keep = pc.and_(
            pc.is_in(table["split"], value_set=pa.array(list(splits), pa.string())),
            pc.not_equal(table["status"], "rejected"),
        )
        tables.append(table.filter(keep).drop(["status"]).to_pandas())
    crops = pd.concat(tables, ignore_index=True)
    labels = pq.read_table(manifest, columns=["image_id", *attributes]).to_pandas()
    frame = crops.merge(labels, on="image_id", how="left", validate="one_to_one")
    unlabelled = frame[list(attributes)].isna().any(axis=1)
    if unlabelled.any():
        raise ValueError(
            f"{int(unlabelled.sum())} crops (e.g. {frame.loc[unlabelled, 'image_id'].iloc[0]}) "
            f"lack {list(attributes)} labels in {manifest}"
        )
    return frame


def class_indices(
    frame: pd.DataFrame, attribute_classes: Mapping[str, Sequence[str]]
) -> dict[str, torch.Tensor]:
    """Each attribute's labels as class indices in its vocabulary's order."""
    indices = {}
    for attribute, classes in attribute_classes.items():
        codes = pd.Categorical(frame[attribute], categories=list(classes)).codes
        if (codes < 0).any():
            unknown = sorted(set(frame[attribute]) - set(classes))
            raise ValueError(f"{attribute} labels {unknown} are not among {list(classes)}")
        indices[attribute] = torch.tensor(codes, dtype=torch.long)
    return indices


def image_batches(
    crops: Sequence[bytes], *, batch_size: int, preprocess: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[torch.Tensor]:
    """Decoded, preprocessed crops in batches, in order."""
    for start in range(0, len(crops), batch_size):
        yield preprocess(crops_to_tensor(list(crops[start : start + batch_size])))


def selection_split(strata: Sequence[str], *, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the images held out for model selection, stratified by ``strata``."""
    index = np.arange(len(strata))
    _, held_out = train_test_split(
        index, test_size=fraction, stratify=np.asarray(strata), random_state=seed
    )
    mask = np.zeros(len(strata), dtype=bool)
    mask[held_out] = True
    return mask


def split_for_selection(frame: pd.DataFrame, *, fraction: float, seed: int) -> np.ndarray:
    """Held-out mask over FairFace train rows, stratified by race x gender.

    Age is left out of the strata: its extreme bins are too small at low fractions.
    """
    strata = (frame["race"].astype(str) + "|" + frame["gender"].astype(str)).tolist()
    return selection_split(strata, fraction=fraction, seed=seed)


def training_step(
    model: MultiTaskFaceNet,
    activations: torch.Tensor,
    labels: Mapping[str, torch.Tensor],
    optimiser: torch.optim.Optimizer,
) -> dict[str, float]:
    """One optimiser step on the summed per-attribute cross-entropy; returns each loss."""
    device = activations.device
    model.train()
    with _autocast(device):
        logits = model(activations)
        losses = {
            attribute: nn.functional.cross_entropy(logits[attribute].float(), labels[attribute])
            for attribute in logits
        }
    optimiser.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimiser.step()
    return {attribute: loss.item() for attribute, loss in losses.items()}


@torch.inference_mode()
def embed_cached(
    model: MultiTaskFaceNet, cache: ActivationCache, *, batch_size: int, device: torch.device
) -> np.ndarray:
    """Embeddings of the cached (unmirrored) images, as ``model.embedder()`` would give."""
    model.eval()
    outputs = []
    for start in range(0, len(cache), batch_size):
        index = torch.arange(start, min(start + batch_size, len(cache)))
        with _autocast(device):
            outputs.append(model.top(cache.batch(index).to(device)).float().cpu())
    return torch.cat(outputs).numpy()


@torch.inference_mode()
def evaluate_heads(
    model: MultiTaskFaceNet,
    cache: ActivationCache,
    labels: Mapping[str, torch.Tensor],
    *,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Mean cross-entropy and accuracy of each head on cached images, and the summed loss."""
    embeddings = torch.from_numpy(
        embed_cached(model, cache, batch_size=batch_size, device=device)
    ).to(device)
    result: dict[str, float] = {}
    for attribute, head in model.heads.items():
        logits = head(embeddings).float().cpu()
        truth = labels[attribute]
        result[f"{attribute}_loss"] = nn.functional.cross_entropy(logits, truth).item()
        result[f"{attribute}_accuracy"] = (logits.argmax(1) == truth).float().mean().item()
    result["loss"] = sum(result[f"{attribute}_loss"] for attribute in model.heads)
    return result


def train_multitask(
    model: MultiTaskFaceNet,
    fit: ActivationCache,
    fit_labels: Mapping[str, torch.Tensor],
    selection: ActivationCache,
    selection_labels: Mapping[str, torch.Tensor],
    *,
    settings: FineTuneSettings,
    seed: int,
    device: torch.device,
) -> pd.DataFrame:
    """Train ``model``'s top and heads; keep the epoch with the lowest held-out summed loss.

    AdamW with a one-cycle schedule over ``settings.epochs``; training stops early after
    ``settings.patience`` epochs without improvement. Batches draw each image mirrored with
    probability 1/2 when ``fit`` holds mirrored activations and ``settings.flip`` is set.
    Deterministic on the CPU given ``seed``. Returns one history row per epoch.
    """
    torch.manual_seed(seed)  # dropout
    generator = torch.Generator().manual_seed(seed)
    model.to(device)
    batch_size = min(settings.batch_size, len(fit))
    # The remainder of an epoch is dropped (reshuffled next epoch): a batch of one would break
    # BatchNorm in training mode.
    steps_per_epoch = len(fit) // batch_size
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimiser = torch.optim.AdamW(
        trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser,
        max_lr=settings.learning_rate,
        epochs=settings.epochs,
        steps_per_epoch=steps_per_epoch,
    )
    flip = settings.flip and fit.mirrored is not None
    history = []
    best_loss, best_state, since_best = math.inf, None, 0
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(len(fit), generator=generator)
        mirror = torch.rand(len(fit), generator=generator) < 0.5 if flip else None
        totals: dict[str, float] = {}
        for step in range(steps_per_epoch):
            index = order[step * batch_size : (step + 1) * batch_size]
            activations = fit.batch(index, mirror[index] if mirror is not None else None)
            losses = training_step(
                model,
                activations.to(device),
                {name: values[index].to(device) for name, values in fit_labels.items()},
                optimiser,
            )
            schedule.step()
            for name, loss in losses.items():
                totals[name] = totals.get(name, 0.0) + loss / steps_per_epoch
        held_out = evaluate_heads(
            model, selection, selection_labels, batch_size=batch_size, device=device
        )
        row = {
            "epoch": epoch,
            "seconds": time.perf_counter() - start,
            **{f"train_{name}_loss": value for name, value in totals.items()},
            **{f"selection_{name}": value for name, value in held_out.items()},
        }
        history.append(row)
        logger.info(
            "epoch %d/%d (%.0f s): train loss %.4f, held-out loss %.4f, race accuracy %.4f",
            epoch,
            settings.epochs,
            row["seconds"],
            sum(totals.values()),
            held_out["loss"],
            held_out.get("race_accuracy", math.nan),
        )
        if held_out["loss"] < best_loss:
            best_loss, since_best = held_out["loss"], 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            since_best += 1
            if since_best >= settings.patience:
                logger.info("no improvement for %d epochs: stopping", since_best)
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    frame = pd.DataFrame(history)
    frame["selected"] = frame["selection_loss"] == best_loss
    return frame


def save_checkpoint(
    model: MultiTaskFaceNet,
    path: Path,
    *,
    weights: str,
    attribute_classes: Mapping[str, Sequence[str]],
    settings: FineTuneSettings,
) -> Path:
    """Write the whole network (frozen part included) with what rebuilding it needs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "weights": weights,
            "embedding_size": model.embedding_size,
            "trainable_blocks": model.trainable_blocks,
            "attribute_classes": {name: list(c) for name, c in attribute_classes.items()},
            "settings": asdict(settings),
        },
        path,
    )
    return path


def load_checkpoint(path: Path) -> tuple[MultiTaskFaceNet, str]:
    """Rebuild a saved :class:`MultiTaskFaceNet` (eval mode) and its base weights' name."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = MultiTaskFaceNet(
        build_facenet(embedding_size=checkpoint["embedding_size"]),
        trainable_blocks=checkpoint["trainable_blocks"],
        attribute_classes=checkpoint["attribute_classes"],
    )
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model.eval(), checkpoint["weights"]
