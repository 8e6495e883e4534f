"""Print frozen vs fine-tuned FaceNet race/gender/age label matching on FairFace val.

Uses the pipeline's own code on aligned FairFace crops: the FaceNet fine-tuning of rule
``finetune_facenet`` (``fairfer.faces.finetune``: held-out selection part of FairFace train, frozen
lower blocks cached once with their mirror images, multi-task heads, early stopping) and the
calibrated logistic regressions of ``group_labels`` (``fairfer.group_labels.classifiers``), fitted
as the pipeline fits them: on all of FairFace train for frozen embeddings, on the held-out
selection part only for fine-tuned ones (the network has seen the rest). FairFace val is
used only for the figures printed.

The frozen lower blocks of every setting are computed once, at the lowest cut asked for, and
shared: higher cuts run the pretrained blocks in between on the cache. The frozen baseline is
the pretrained network through the same cache (float16 activations; the embedding rule's
float32 embeddings differ by rounding only). Settings come from ``--config`` (the
``finetune`` and ``race_matching`` blocks) unless overridden.

    .venv/bin/python benchmarks/finetune_comparison.py \\
        --aligned 'results/aligned/fairface/shard-*.parquet' \\
        --manifest results/manifests/fairface.parquet --trainable-blocks 0 6 12 --threads 2
"""

import argparse
import dataclasses
import glob
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from threadpoolctl import threadpool_limits
from torch import nn

from fairfer.faces.facenet import load_facenet, preprocessing_for
from fairfer.faces.finetune import (
    FACENET_BLOCKS,
    ActivationCache,
    FineTuneSettings,
    build_multitask,
    cache_activations,
    class_indices,
    embed_cached,
    facenet_blocks,
    image_batches,
    labelled_crops,
    split_for_selection,
    train_multitask,
)
from fairfer.group_labels.classifiers import evaluate, fit_attribute_classifier
from fairfer.inference import resolve_device
from fairfer.schemas import ATTRIBUTE_CLASSES

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]

SANDBERG = ROOT / "resources/facenet/sandberg-keras-6acdd8fb3a3fb2b5.pt"


def label_matching(
    fit_x: np.ndarray,
    fit_frame: pd.DataFrame,
    val_x: np.ndarray,
    val_frame: pd.DataFrame,
    *,
    matching: dict,
    seed: int,
) -> dict:
    """group_labels' classifiers fitted on ``fit_x``, scored on FairFace val.

    BLAS runs single-threaded: these matrices are small, and threaded OpenBLAS spun for
    minutes per fit on the shared machine.
    """
    figures: dict = {}
    for attribute, classes in ATTRIBUTE_CLASSES.items():
        with threadpool_limits(1, user_api="blas"):
            classifier = fit_attribute_classifier(
                fit_x,
                fit_frame[attribute].tolist(),
                attribute=attribute,
                classes=classes,
                regularization_grid=matching["regularization_grid"],
                cv_folds=matching["cv_folds"],
                calibration=matching["calibration"],
                seed=seed,
            )
        summary, per_class = evaluate(classifier, val_x, val_frame[attribute].tolist())
        figures[f"{attribute}_accuracy"] = summary["accuracy"]
        figures[f"{attribute}_ece"] = summary["expected_calibration_error"]
        if attribute == "race":
            figures["race_balanced_accuracy"] = summary["balanced_accuracy"]
            figures.update(
                {f"race: {row['class']}": row["accuracy"] for _, row in per_class.iterrows()}
            )
    return figures


def report(row: dict) -> None:
    figures = ", ".join(
        f"{name} {row[name]:.3f}"
        for name in ("race_accuracy", "race_ece", "gender_accuracy", "age_accuracy")
    )
    seconds = f", trained in {row['train_seconds']:.0f} s" if "train_seconds" in row else ""
    print(
        f"{row['embedder']} (trainable blocks {row['trainable_blocks']}, classifiers fit on "
        f"{row['classifier_fit_on']}): {figures}{seconds}",
        flush=True,
    )


def run_blocks(
    blocks: nn.Module, cache: ActivationCache, *, batch_size: int, device
) -> ActivationCache:
    """Pretrained blocks applied to cached activations (both orientations)."""

    def through(part: torch.Tensor) -> torch.Tensor:
        batches = (part[i : i + batch_size].float() for i in range(0, len(part), batch_size))
        return cache_activations(blocks, batches, mirrored=False, device=device).original

    mirrored = through(cache.mirrored) if cache.mirrored is not None else None
    return ActivationCache(through(cache.original), mirrored)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aligned", default="results/aligned/fairface/shard-*.parquet")
    parser.add_argument("--manifest", type=Path, default=Path("results/manifests/fairface.parquet"))
    parser.add_argument("--weights", type=Path, default=SANDBERG, help="converted sandberg-keras")
    parser.add_argument("--config", type=Path, default=ROOT / "config/config.yaml")
    parser.add_argument(
        "--trainable-blocks", type=int, nargs="+", help="settings to compare (default: config)"
    )
    parser.add_argument("--epochs", type=int, help="override finetune.epochs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--sample", type=int, help="at most N crops per split and age group, for a smoke test"
    )
    parser.add_argument(
        "--fit-all-train",
        action="store_true",
        help="also fit the fine-tuned embeddings' classifiers on all of FairFace train",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="keep the frozen-block cache here and reuse it when inputs and settings match",
    )
    parser.add_argument("--output", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(args.config.read_text())
    settings = FineTuneSettings.from_config(config["finetune"])
    if args.epochs:
        settings = dataclasses.replace(settings, epochs=args.epochs)
    matching, seed = config["race_matching"], config["seed"]
    ks = sorted(set(args.trainable_blocks or [settings.trainable_blocks]), reverse=True)
    device = resolve_device(settings.device, key="finetune.device")

    shards = sorted(Path(p) for p in glob.glob(args.aligned))
    frame = labelled_crops(
        shards, args.manifest, splits=["train", "valid"], attributes=list(ATTRIBUTE_CLASSES)
    )
    if args.sample:
        frame = frame.groupby(["split", "age"]).head(args.sample).reset_index(drop=True)
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    val = frame[frame["split"] == "valid"].reset_index(drop=True)
    held_out = split_for_selection(train, fraction=settings.holdout_fraction, seed=seed)
    print(
        f"FairFace: {len(train)} train ({int((~held_out).sum())} fine-tuning, "
        f"{int(held_out.sum())} held out for selection), {len(val)} val; device {device}, "
        f"{args.threads} threads; {settings}"
    )

    base, _ = load_facenet("sandberg-keras", state_dict_path=args.weights)
    preprocess = preprocessing_for("sandberg-keras")
    blocks = facenet_blocks(base)
    lowest = len(FACENET_BLOCKS) - ks[0]

    def cache(crops: pd.Series, mirrored: bool) -> ActivationCache:
        batches = image_batches(
            crops.tolist(), batch_size=settings.batch_size, preprocess=preprocess
        )
        return cache_activations(
            nn.Sequential(*blocks[:lowest]), batches, mirrored=mirrored, device=device
        )

    def stored(cut: int, compute) -> dict[str, ActivationCache]:
        """``compute()``, or the copy kept in --cache-dir for the same inputs and cut."""
        if args.cache_dir is None:
            return compute()
        inputs = [(str(p), p.stat().st_size, p.stat().st_mtime) for p in [*shards, args.manifest]]
        key = json.dumps([inputs, cut, settings.flip, settings.holdout_fraction, seed, args.sample])
        path = args.cache_dir / f"frozen-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
        if path.exists():
            print(f"frozen-block activations read from {path}", flush=True)
            parts = torch.load(path, weights_only=True)
            return {name: ActivationCache(**part) for name, part in parts.items()}
        result = compute()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({name: dataclasses.asdict(part) for name, part in result.items()}, path)
        return result

    start, cpu_start = time.perf_counter(), time.process_time()
    caches = stored(
        lowest,
        lambda: {
            "fit": cache(train.loc[~held_out, "crop"], settings.flip),
            "selection": cache(train.loc[held_out, "crop"], False),
            "val": cache(val["crop"], False),
        },
    )
    cache_seconds = time.perf_counter() - start
    print(
        f"frozen blocks below cut {lowest}: {cache_seconds:.0f} s wall, "
        f"{time.process_time() - cpu_start:.0f} s CPU",
        flush=True,
    )

    fit_frame, selection_frame = train[~held_out], train[held_out]
    rows = []

    def embed(model, part: ActivationCache) -> np.ndarray:
        return embed_cached(model, part, batch_size=256, device=device)

    def cache_at(k: int) -> dict[str, ActivationCache]:
        """The shared cache advanced through the pretrained blocks below ``k``'s cut."""
        cut = len(FACENET_BLOCKS) - k
        if cut == lowest:
            return caches
        middle = nn.Sequential(*blocks[lowest:cut]).eval()
        return stored(
            cut,
            lambda: {
                n: run_blocks(middle, c, batch_size=256, device=device) for n, c in caches.items()
            },
        )

    # Settings in increasing cost; the frozen baseline is the pretrained network through the
    # cheapest setting's cache, L2-normalised as embed_faces does.
    ks = ks[::-1]
    advanced = cache_at(ks[0])
    pretrained = build_multitask(
        base, trainable_blocks=ks[0], attribute_classes=ATTRIBUTE_CLASSES, seed=seed
    ).eval()
    frozen_x = {name: embed(pretrained, part) for name, part in advanced.items()}
    frozen_x = {n: x / np.linalg.norm(x, axis=1, keepdims=True) for n, x in frozen_x.items()}
    rows.append(
        {
            "embedder": "frozen",
            "trainable_blocks": "-",
            "classifier_fit_on": f"all train ({len(train)})",
            **label_matching(
                np.concatenate([frozen_x["fit"], frozen_x["selection"]]),
                pd.concat([fit_frame, selection_frame]),
                frozen_x["val"],
                val,
                matching=matching,
                seed=seed,
            ),
        }
    )
    report(rows[-1])

    for k in ks:
        if k != ks[0]:
            advanced = cache_at(k)
        fresh, _ = load_facenet("sandberg-keras", state_dict_path=args.weights)
        model = build_multitask(
            fresh, trainable_blocks=k, attribute_classes=ATTRIBUTE_CLASSES, seed=seed
        )
        start, cpu_start = time.perf_counter(), time.process_time()
        history = train_multitask(
            model,
            advanced["fit"],
            class_indices(fit_frame, ATTRIBUTE_CLASSES),
            advanced["selection"],
            class_indices(selection_frame, ATTRIBUTE_CLASSES),
            settings=dataclasses.replace(settings, trainable_blocks=k),
            seed=seed,
            device=device,
        )
        train_seconds = time.perf_counter() - start
        train_cpu_seconds = time.process_time() - cpu_start
        selected = history.loc[history["selected"]].iloc[0]
        tuned_x = {name: embed(model, part) for name, part in advanced.items()}
        common = {
            "embedder": "finetuned",
            "trainable_blocks": k,
            "epochs_run": len(history),
            "selected_epoch": int(selected["epoch"]),
            "train_seconds": train_seconds,
            "train_cpu_seconds": train_cpu_seconds,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
        fits = {f"held-out train ({len(selection_frame)})": ("selection",)}
        if args.fit_all_train:
            fits[f"all train ({len(train)})"] = ("fit", "selection")
        for label, parts in fits.items():
            rows.append(
                {
                    **common,
                    "classifier_fit_on": label,
                    **label_matching(
                        np.concatenate([tuned_x[p] for p in parts]),
                        pd.concat(
                            [{"fit": fit_frame, "selection": selection_frame}[p] for p in parts]
                        ),
                        tuned_x["val"],
                        val,
                        matching=matching,
                        seed=seed,
                    ),
                }
            )
            report(rows[-1])

    table = (
        pd.DataFrame(rows).astype({"trainable_blocks": "string"}).fillna({"trainable_blocks": "-"})
    )
    summary = [
        "embedder",
        "trainable_blocks",
        "classifier_fit_on",
        "race_accuracy",
        "race_balanced_accuracy",
        "race_ece",
        "gender_accuracy",
        "gender_ece",
        "age_accuracy",
        "age_ece",
        "selected_epoch",
        "epochs_run",
        "train_seconds",
        "train_cpu_seconds",
    ]
    print(f"\nFairFace val ({len(val)} images); frozen-block cache {cache_seconds:.0f} s\n")
    print(table[summary].to_markdown(index=False, floatfmt=".3f"))
    per_race = [c for c in table.columns if c.startswith("race: ")]
    print("\nPer-race accuracy on FairFace val\n")
    print(
        table[["embedder", "trainable_blocks", "classifier_fit_on", *per_race]].to_markdown(
            index=False, floatfmt=".3f"
        )
    )
    if args.output:
        args.output.write_text(
            json.dumps(
                {
                    "cache_seconds": cache_seconds,
                    "settings": dataclasses.asdict(settings),
                    "rows": table.to_dict(orient="records"),
                },
                indent=2,
                default=float,
            )
        )


if __name__ == "__main__":
    main()
