"""Print FER+ test accuracy of the compact CNN baseline under training recipes (issue: a
baseline worth auditing), each trained by the pipeline's own trainer on the full FER+ train
split, selected on valid, scored once on test (majority labels, 8 classes, test-time flip).

Recipes, combinable (``--recipes``):

- ``default``: the default configuration's compact CNN (``models.compact_cnn``: width 16,
  7 epochs, majority-vote targets with label smoothing 0.05).
- ``epochs=N``: the same for N epochs (one-cycle warm-up and cosine decay stretch with it).
- ``votes``: cross-entropy against the FER+ vote distribution over the 8 emotions (Barsoum et
  al. 2016's "probability" / cross-entropy targets) instead of the majority label.
- ``width=W``: the CNN's first-stage width.

    .venv/bin/python benchmarks/baseline_recipes.py --manifest results/manifests/ferplus.parquet \
        --recipes default epochs=25 epochs=25,votes --threads 2 --seed 0
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from torch.nn import functional as F

from fairfer.schemas import EMOTIONS, MANIFEST, read_checked
from fairfer.training.data import Split, decode_images
from fairfer.training.models import ModelSpec, build_network
from fairfer.training.strategies import Strategy
from fairfer.training.trainer import (
    Runtime,
    make_deterministic,
    predict_proba,
    seed_everything,
    train,
)

ROOT = Path(__file__).resolve().parents[1]


class VoteTargets(Strategy):
    """Cross-entropy against each training image's vote distribution (rows of ``targets``)."""

    def __init__(self, targets: torch.Tensor) -> None:
        super().__init__(label_smoothing=0.0)
        self.register_buffer("targets", targets)

    def loss(self, logits, representation, labels, attributes, index, progress):
        return -(self.targets[index] * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def load(manifest: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    columns = ["split", "emotion", "label_status", "emotion_votes", "image"]
    frame = read_checked(manifest, MANIFEST, columns).to_pandas()
    frame = frame[frame["label_status"] == "ok"]
    parts = {}
    for split in ("train", "valid", "test"):
        rows = frame[frame["split"] == split]
        images = decode_images(rows["image"].tolist(), size=48, channels=1)
        labels = torch.tensor(pd.Categorical(rows["emotion"], categories=EMOTIONS).codes)
        votes = np.stack(rows["emotion_votes"].to_numpy())[:, : len(EMOTIONS)].astype(np.float32)
        votes /= votes.sum(1, keepdims=True)
        parts[split] = (images, labels.long(), torch.from_numpy(votes))
    return parts


def recipe_spec(recipe: str, base: dict) -> tuple[dict, bool]:
    settings, votes = dict(base), False
    for part in recipe.split(","):
        if part == "default":
            continue
        if part == "votes":
            votes = True
        elif part.startswith("epochs="):
            settings["epochs"] = int(part.split("=")[1])
        elif part.startswith("width="):
            settings["width"] = int(part.split("=")[1])
        else:
            raise SystemExit(f"unknown recipe part {part!r}")
    return settings, votes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--recipes", nargs="+", default=["default"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    base = {k: v for k, v in config["models"]["compact_cnn"].items() if k != "seeds"}
    started = time.perf_counter()
    parts = load(args.manifest)
    sizes = {name: len(part[0]) for name, part in parts.items()}
    print(f"decoded {sizes} in {time.perf_counter() - started:.0f} s")
    cpu = "AMX" if "amx_bf16" in Path("/proc/cpuinfo").read_text() else "no AMX"
    runtime = Runtime(device=torch.device("cpu"), mixed_precision=True)
    for recipe in args.recipes:
        settings, votes = recipe_spec(recipe, base)
        spec = ModelSpec.from_config(settings)
        splits = {
            name: Split(images, labels, torch.zeros((len(labels), 0), dtype=torch.long))
            for name, (images, labels, _) in parts.items()
        }
        make_deterministic(runtime.device)
        seed_everything(args.seed)
        network = build_network(spec, n_classes=len(EMOTIONS))
        objective = (
            VoteTargets(parts["train"][2])
            if votes
            else Strategy(label_smoothing=spec.label_smoothing)
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        network, history = train(
            network, objective, splits["train"], splits["valid"], spec=spec, seed=args.seed,
            runtime=runtime,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        probabilities = predict_proba(network, parts["test"][0], runtime=runtime)
        accuracy = float((probabilities.argmax(1) == parts["test"][1].numpy()).mean())
        selected = history[history["selected"]].iloc[0]
        print(
            json.dumps(
                {
                    "recipe": recipe,
                    "seed": args.seed,
                    "epochs": int(spec.epochs),
                    "width": spec.width,
                    "targets": "votes" if votes else "majority",
                    "selected_epoch": int(selected["epoch"]),
                    "valid_accuracy": round(float(selected["valid_accuracy"]), 4),
                    "test_accuracy": round(accuracy, 4),
                    "train_minutes": round(seconds / 60, 2),
                    "cpu_minutes": round((time.process_time() - cpu_started) / 60, 2),
                    "threads": args.threads,
                    "cpu": cpu,
                    "load_average": round(os.getloadavg()[0], 2),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
