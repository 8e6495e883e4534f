"""The one trainer every strategy and model shares.

:func:`train` optimises a :class:`~fairfer.training.models.Network` under a
:class:`~fairfer.training.strategies.Strategy` on a training :class:`~fairfer.training.data.Split`
and
selects the epoch with the best accuracy on the validation split, the only data it sees
besides the training pool: the test split never reaches it. AdamW with a linear warm-up and a
cosine decay, optional gradient clipping and early stopping, bf16/fp16 autocast on a GPU, a
checkpoint after every epoch that a rerun resumes from, and the same result for the same seed.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from fairfer.inference import has_native_bfloat16
from fairfer.training.data import Split
from fairfer.training.models import ModelSpec, Network
from fairfer.training.strategies import Strategy

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (weight init and dropout, on CPU and GPU)."""
    torch.manual_seed(seed)


def make_deterministic(device: torch.device) -> None:
    """Same seed, same result: deterministic kernels (on a GPU, as far as cuDNN allows)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass(frozen=True)
class Runtime:
    """Where and how a job trains; a seed gives the same result on the same hardware."""

    device: torch.device = torch.device("cpu")
    mixed_precision: bool = False
    progress: bool = False
    description: str = ""

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 where the device computes it natively (GPUs since Ampere; CPUs with AMX or
        AVX512-BF16, where it pays: benchmarks/training_throughput.py), fp16 on older GPUs;
        None (fp32) otherwise, since emulated bf16 is slower than fp32."""
        if not self.mixed_precision:
            return None
        if has_native_bfloat16(self.device):
            return torch.bfloat16
        return torch.float16 if self.device.type == "cuda" else None


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    max_shift: float = 0.1,
    max_rotation_deg: float = 10.0,
    max_scale: float = 0.1,
) -> torch.Tensor:
    """Per-image random flip, rotation, scale and translation (one ``grid_sample`` call).

    ``max_shift`` is a fraction of the image side. Returns float pixels in 0..255.
    """
    n = len(images)
    draws = torch.rand((n, 5), generator=generator).to(images.device)
    flip = torch.where(draws[:, 0] < 0.5, -1.0, 1.0)
    angle = torch.deg2rad((2 * draws[:, 1] - 1) * max_rotation_deg)
    scale = 1 + (2 * draws[:, 2] - 1) * max_scale
    shift = (2 * draws[:, 3:5] - 1) * 2 * max_shift
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift[:, 0]], dim=1),
            torch.stack([sin * flip, cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )


@torch.inference_mode()
def predict_proba(
    network: Network,
    inputs: torch.Tensor,
    *,
    runtime: Runtime = Runtime(),
    batch_size: int = 512,
) -> np.ndarray:
    """Class posteriors; images are averaged with their mirror image (test-time flip)."""
    network.eval()
    images = inputs.dtype == torch.uint8
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size].to(runtime.device, non_blocking=True)
        with _autocast(runtime):
            probabilities = network(batch)[0].float().softmax(1)
            if images:
                probabilities = (probabilities + network(batch.flip(-1))[0].float().softmax(1)) / 2
        outputs.append(probabilities.cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _autocast(runtime: Runtime):
    dtype = runtime.autocast_dtype
    return torch.autocast(runtime.device.type, dtype=dtype, enabled=dtype is not None)


def _parameter_groups(modules: list[nn.Module], weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels, none on biases and normalisation."""
    trainable = [p for p in chain(*(m.parameters() for m in modules)) if p.requires_grad]
    return [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
    ]


@dataclass
class _Progress:
    """What a checkpoint resumes besides the modules and the optimiser."""

    epoch: int = 0
    best_accuracy: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    stale_epochs: int = 0
    history: list | None = None


def train(
    network: Network,
    strategy: Strategy,
    train_split: Split,
    valid_split: Split,
    *,
    spec: ModelSpec,
    seed: int,
    epoch_size: int | None = None,
    runtime: Runtime = Runtime(),
    resume_path: Path | None = None,
    fingerprint: str = "",
) -> tuple[Network, pd.DataFrame]:
    """Train ``network`` under ``strategy``; keep the epoch with the best validation accuracy.

    Parameters
    ----------
    network, strategy
        Built by the caller after :func:`seed_everything`, so their initial weights follow
        the seed.
    train_split, valid_split
        The training pool and the validation split (model selection, early stopping and the
        strategy's epoch-end updates all read this split and nothing else).
    spec
        Optimisation settings (epochs, batch size, learning rate, warm-up, weight decay,
        label smoothing, gradient clipping, early-stopping patience, augmentation).
    seed
        Seeds batch order and augmentation.
    epoch_size
        Samples drawn (without replacement) per epoch; a strategy with a larger pool
        (augmentation) then gets the same compute as the baseline. Default: the whole pool.
    runtime
        Device, mixed precision and progress bar.
    resume_path
        Checkpoint written after every epoch; a run whose ``fingerprint`` matches resumes from
        it and ends where an uninterrupted run would.

    Returns
    -------
    network
        With the weights of the selected epoch.
    history
        One row per epoch: training loss, validation accuracy, learning rate, seconds, and
        whatever the strategy reports.
    """
    generator = torch.Generator().manual_seed(seed)
    device = runtime.device
    # Channels-last convolutions take oneDNN's and cuDNN's fast paths (1.3x on the CPU in
    # fp32, and what makes bf16 pay off); a no-op for networks without 4-d weights.
    network.to(device, memory_format=torch.channels_last)
    strategy.to(device)
    train_data, valid_data = train_split.to(device), valid_split.to(device)
    augment = train_split.is_images and spec.augment
    epoch_size = min(epoch_size or len(train_split), len(train_split))
    steps_per_epoch = math.ceil(epoch_size / spec.batch_size)
    optimiser = torch.optim.AdamW(
        _parameter_groups([network, strategy], spec.weight_decay), lr=spec.learning_rate
    )
    warmup_steps = round(spec.warmup_epochs * steps_per_epoch)
    total_steps = spec.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: warmup_cosine(step, warmup_steps=warmup_steps, total_steps=total_steps),
    )
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.autocast_dtype == torch.float16)
    state = _Progress(history=[])

    if resume_path is not None and resume_path.exists():
        saved = torch.load(resume_path, map_location="cpu", weights_only=False)
        if saved["fingerprint"] == fingerprint:
            network.load_state_dict(saved["network"])
            strategy.load_state_dict(saved["strategy"])
            optimiser.load_state_dict(saved["optimiser"])
            schedule.load_state_dict(saved["schedule"])
            scaler.load_state_dict(saved["scaler"])
            generator.set_state(saved["generator"])
            torch.set_rng_state(saved["torch_rng"])
            if device.type == "cuda" and saved.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(saved["cuda_rng"])
            state = saved["progress"]
            logger.info("resuming from %s after epoch %d", resume_path, state.epoch)
        else:
            logger.info("ignoring %s: written for other settings or inputs", resume_path)

    for epoch in range(state.epoch + 1, spec.epochs + 1):
        if spec.early_stopping_patience and state.stale_epochs >= spec.early_stopping_patience:
            break
        started, cpu_started = time.perf_counter(), time.process_time()
        network.train()
        strategy.train()
        order = torch.randperm(len(train_split), generator=generator)[:epoch_size]
        total_loss = 0.0
        steps = tqdm(
            range(steps_per_epoch),
            desc=f"{runtime.description} epoch {epoch}/{spec.epochs}",
            mininterval=30,
            leave=False,
            # Left unset when shown, so TQDM_DISABLE=1 in the environment still hides it.
            **({} if runtime.progress else {"disable": True}),
        )
        for step in steps:
            index = order[step * spec.batch_size : (step + 1) * spec.batch_size].to(device)
            inputs = train_data.inputs[index]
            if augment:
                inputs = random_affine(inputs, generator)
            with _autocast(runtime):
                logits, representation = network(inputs)
                loss = strategy.loss(
                    logits,
                    representation,
                    train_data.labels[index],
                    train_data.attributes[index],
                    index,
                    progress=epoch - 1 + step / steps_per_epoch,
                )
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if spec.gradient_clip:
                scaler.unscale_(optimiser)
                nn.utils.clip_grad_norm_(
                    [p for group in optimiser.param_groups for p in group["params"]],
                    spec.gradient_clip,
                )
            scaler.step(optimiser)
            scaler.update()
            schedule.step()
            total_loss += loss.item() * len(index)

        probabilities = predict_proba(network, valid_data.inputs, runtime=runtime)
        predicted = torch.as_tensor(probabilities.argmax(1))
        valid_accuracy = float((predicted == valid_split.labels.cpu()).float().mean())
        reported = strategy.end_epoch(predicted, valid_split)
        record = {
            "epoch": epoch,
            "train_loss": total_loss / epoch_size,
            "valid_accuracy": valid_accuracy,
            "learning_rate": schedule.get_last_lr()[0],
            "seconds": time.perf_counter() - started,
            # CPU time of the job's process: the cost of the epoch, whatever else shares the cores.
            "cpu_seconds": time.process_time() - cpu_started,
            **reported,
        }
        state.history.append(record)
        logger.info(
            "%s epoch %d/%d: train loss %.4f, valid accuracy %.4f (%.0f s, %.0f CPU s)",
            runtime.description,
            epoch,
            spec.epochs,
            record["train_loss"],
            valid_accuracy,
            record["seconds"],
            record["cpu_seconds"],
        )
        if valid_accuracy > state.best_accuracy:
            state.best_accuracy, state.best_epoch, state.stale_epochs = valid_accuracy, epoch, 0
            state.best_state = {
                k: v.detach().cpu().clone() for k, v in network.state_dict().items()
            }
        else:
            state.stale_epochs += 1
        state.epoch = epoch
        if resume_path is not None:
            _save_checkpoint(
                resume_path,
                {
                    "fingerprint": fingerprint,
                    "network": network.state_dict(),
                    "strategy": strategy.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "scaler": scaler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                    "progress": copy.deepcopy(state),
                },
            )

    if spec.early_stopping_patience and state.stale_epochs >= spec.early_stopping_patience:
        logger.info(
            "early stop: no validation improvement for %d epochs", spec.early_stopping_patience
        )
    logger.info("selected epoch %d (valid accuracy %.4f)", state.best_epoch, state.best_accuracy)
    assert state.best_state is not None
    network.load_state_dict(state.best_state)
    history = pd.DataFrame(state.history)
    history["selected"] = history["epoch"] == state.best_epoch
    return network, history


def _save_checkpoint(path: Path, content: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, partial)
    os.replace(partial, path)
