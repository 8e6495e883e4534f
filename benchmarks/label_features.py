"""Print whether richer features of the frozen FaceNet label race, gender and age better.

The race/gender/age classifiers of ``group_labels`` read the 128-d L2-normalised FaceNet
embedding. This benchmark extracts, in one forward pass per batch of aligned FairFace crops
(and one more for their mirror images), the features of the same frozen network at several
depths:

- ``embedding``: the 128-d normalised embedding (what the pipeline uses today);
- ``pooled``: the 1792-d output of ``avgpool_1a`` (the input of the bottleneck);
- ``mixed_6a``, ``mixed_7a``: the outputs of those blocks, global-average-pooled (896-d and
  1792-d);
- each with ``+flip``: the features of the crop and of its mirror image averaged (the
  embedding normalised again after averaging);

fits the calibrated logistic regressions of ``fairfer.group_labels.classifiers`` (C chosen by
stratified cross-validation on the training rows only, temperature calibration) on FairFace
train, clean, rendered like the emotion dataset (``fairface_domain``, rule
``render_fairface_domain``) or both, and prints accuracy, balanced accuracy and ECE on clean
FairFace val and on rendered FairFace val (the in-domain figure). FairFace val is only scored;
nothing is chosen on it.

Features are cached per dataset, layer and flip as float16 ``.npy`` files (with the image ids)
under ``--cache``, so a rerun only fits. The network runs in float32 with batch normalisation
folded into the convolutions, as the embedding rule's ``InferenceNetwork`` does; ``--bf16``
casts it to bfloat16 as the rule does with ``embedding.precision: auto`` on a CPU with native
bfloat16.

    .venv/bin/python benchmarks/label_features.py --results /work/fullrun/results \\
        --threads 2 --json /tmp/label_features.json
"""

import argparse
import glob
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from facenet_pytorch.models.inception_resnet_v1 import BasicConv2d
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from fairfer.faces.embedding import crops_to_tensor
from fairfer.faces.facenet import load_facenet, preprocessing_for
from fairfer.faces.finetune import labelled_crops
from fairfer.group_labels.classifiers import evaluate, fit_attribute_classifier
from fairfer.schemas import ATTRIBUTE_CLASSES

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]

LAYERS = ("embedding", "pooled", "mixed_6a", "mixed_7a")
VARIANTS = (*LAYERS, *(f"{layer}+flip" for layer in LAYERS))
DATASETS = ("fairface", "fairface_domain")
SPLITS = ("train", "valid")


def shards_of(results: Path, dataset: str) -> list[Path]:
    shards = sorted(
        Path(p) for p in glob.glob(str(results / "aligned" / dataset / "shard-*.parquet"))
    )
    if not shards:
        raise SystemExit(f"no aligned crops under {results / 'aligned' / dataset}")
    return shards


def index(results: Path, dataset: str, limit: int | None) -> pd.DataFrame:
    """Non-rejected train and val crops in file order, with labels; the first ``limit`` of each."""
    rows = pd.concat(
        [
            pq.read_table(s, columns=["image_id", "split", "status"]).to_pandas()
            for s in shards_of(results, dataset)
        ],
        ignore_index=True,
    )
    rows = rows[(rows["status"] != "rejected") & rows["split"].isin(SPLITS)]
    if limit is not None:
        rows = rows.groupby("split", sort=False).head(limit)
    labels = pq.read_table(
        results / "manifests" / f"{dataset}.parquet", columns=["image_id", *ATTRIBUTE_CLASSES]
    ).to_pandas()
    rows = rows.drop(columns="status").merge(labels, on="image_id", how="left", validate="1:1")
    return rows.reset_index(drop=True)


class Features(nn.Module):
    """The frozen FaceNet returning its features at several depths from one forward pass."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        # Fold batch norm into the convolutions in place (the module tree, and so the hooks,
        # stay), as InferenceNetwork's torch.fx fusion does.
        for module in model.modules():
            if isinstance(module, BasicConv2d):
                module.conv = fuse_conv_bn_eval(module.conv, module.bn)
                module.bn = nn.Identity()
        self.model = model.eval().to(dtype=dtype, memory_format=torch.channels_last)
        self.dtype = dtype
        self.captured: dict[str, torch.Tensor] = {}
        for name in ("mixed_6a", "mixed_7a", "avgpool_1a"):
            getattr(self.model, name).register_forward_hook(self._keep(name))

    def _keep(self, name: str):
        def hook(module, inputs, output):
            self.captured[name] = output

        return hook

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.captured.clear()
        out = self.model(x.to(dtype=self.dtype, memory_format=torch.channels_last))
        return {
            "embedding": F.normalize(out.float(), dim=1),
            "pooled": self.captured["avgpool_1a"].float().flatten(1),
            "mixed_6a": self.captured["mixed_6a"].float().mean(dim=(2, 3)),
            "mixed_7a": self.captured["mixed_7a"].float().mean(dim=(2, 3)),
        }


def extract(
    features: Features, preprocess, crops: list[bytes], *, batch_size: int
) -> tuple[dict[str, np.ndarray], dict]:
    """Every variant of every crop (float16), and the time it took."""
    parts: dict[str, list[np.ndarray]] = {v: [] for v in VARIANTS}
    start = time.perf_counter()
    network = 0.0
    for first in range(0, len(crops), batch_size):
        x = preprocess(crops_to_tensor(crops[first : first + batch_size]))
        tick = time.perf_counter()
        plain = features(x)
        mirrored = features(torch.flip(x, dims=[3]))
        network += time.perf_counter() - tick
        for layer in LAYERS:
            averaged = (plain[layer] + mirrored[layer]) / 2
            if layer == "embedding":
                averaged = F.normalize(averaged, dim=1)
            parts[layer].append(plain[layer].numpy().astype(np.float16))
            parts[f"{layer}+flip"].append(averaged.numpy().astype(np.float16))
        done = min(first + batch_size, len(crops))
        if (first // batch_size) % 20 == 0 or done == len(crops):
            print(
                f"  {done}/{len(crops)} crops, {done / (time.perf_counter() - start):.1f} images/s",
                flush=True,
            )
    wall = time.perf_counter() - start
    stats = {
        "images": len(crops),
        "wall_seconds": wall,
        "network_seconds": network,
        "images_per_second": len(crops) / wall,
    }
    return {v: np.concatenate(p) for v, p in parts.items()}, stats


def cached_features(
    args, dataset: str, rows: pd.DataFrame, features: Features, preprocess, precision: str
) -> tuple[dict[str, np.ndarray], dict | None]:
    """Features of ``rows`` in their order, from ``--cache`` when it holds them all."""
    shards = shards_of(args.results, dataset)
    key = {
        "shards": [[str(s), s.stat().st_size, s.stat().st_mtime] for s in shards],
        "weights": str(args.weights),
        "precision": precision,
    }
    folder = args.cache / f"{args.weights.stem}-{precision}" / dataset
    ids_file, key_file = folder / "ids.txt", folder / "key.json"
    wanted = rows["image_id"].tolist()
    files = {v: folder / f"{v}.npy" for v in VARIANTS}
    if (
        key_file.exists()
        and json.loads(key_file.read_text()) == key
        and ids_file.exists()
        and all(f.exists() for f in files.values())
    ):
        cached = pd.Index(ids_file.read_text().splitlines())
        positions = cached.get_indexer(wanted)
        if (positions >= 0).all():
            print(f"{dataset}: {len(wanted)} crops' features read from {folder}", flush=True)
            return {v: np.load(f, mmap_mode="r")[positions] for v, f in files.items()}, None

    print(f"{dataset}: extracting features of {len(wanted)} crops", flush=True)
    crops = labelled_crops(
        shards,
        args.results / "manifests" / f"{dataset}.parquet",
        splits=list(SPLITS),
        attributes=list(ATTRIBUTE_CLASSES),
    ).set_index("image_id")["crop"]
    values, stats = extract(features, preprocess, crops.loc[wanted].tolist(), batch_size=64)
    print(
        f"{dataset}: {stats['images']} crops (and mirror images) in {stats['wall_seconds']:.1f} s "
        f"wall ({stats['network_seconds']:.1f} s in the network): "
        f"{stats['images_per_second']:.1f} images/s",
        flush=True,
    )
    folder.mkdir(parents=True, exist_ok=True)
    for variant, array in values.items():
        np.save(files[variant], array)
    ids_file.write_text("\n".join(wanted) + "\n")
    key_file.write_text(json.dumps(key))
    return values, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("/work/fullrun/results"))
    parser.add_argument(
        "--weights",
        type=Path,
        help="converted sandberg-keras state dict (default: resources/facenet/ next to --results)",
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/label_features_cache"))
    parser.add_argument("--features", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--attributes", nargs="+", choices=list(ATTRIBUTE_CLASSES), default=list(ATTRIBUTE_CLASSES)
    )
    parser.add_argument("--fit-on", choices=["clean", "domain", "both"], default="both")
    parser.add_argument("--grid", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--cv-folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads while fitting (threaded OpenBLAS spun on the shared machine)",
    )
    parser.add_argument("--bf16", action="store_true", help="run the network in bfloat16")
    parser.add_argument(
        "--limit",
        type=int,
        help="only the first N train and N val crops of each dataset, for a quick check (about 400 "
        "for every age class to be in train)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.weights is None:
        found = sorted(
            glob.glob(str(args.results.parent / "resources/facenet/sandberg-keras-*.pt"))
        )
        found = found or sorted(glob.glob(str(ROOT / "resources/facenet/sandberg-keras-*.pt")))
        if not found:
            raise SystemExit("no resources/facenet/sandberg-keras-*.pt: pass --weights")
        args.weights = Path(found[0])

    precision = "bfloat16" if args.bf16 else "float32"
    model, _ = load_facenet("sandberg-keras", state_dict_path=args.weights, seed=0)
    features = Features(model, torch.bfloat16 if args.bf16 else torch.float32)
    preprocess = preprocessing_for("sandberg-keras")

    data = {}
    extraction = {}
    for dataset in DATASETS:
        rows = index(args.results, dataset, args.limit)
        values, stats = cached_features(args, dataset, rows, features, preprocess, precision)
        data[dataset] = (rows, values)
        if stats is not None:
            extraction[dataset] = stats
    if extraction:
        images = sum(s["images"] for s in extraction.values())
        wall = sum(s["wall_seconds"] for s in extraction.values())
        print(
            f"\nFeature extraction ({precision}, {args.threads} threads, batch 64, each crop "
            f"and its mirror image): {images} crops in {wall:.1f} s, {images / wall:.1f} "
            "images/s\n"
        )

    fit_parts = {"clean": ["fairface"], "domain": ["fairface_domain"], "both": list(DATASETS)}
    fit_parts = fit_parts[args.fit_on]
    train_masks = {d: (data[d][0]["split"] == "train").to_numpy() for d in DATASETS}
    val_masks = {d: (data[d][0]["split"] == "valid").to_numpy() for d in DATASETS}
    fit_rows = pd.concat([data[d][0][train_masks[d]] for d in fit_parts], ignore_index=True)
    scored = {"clean": "fairface", "in_domain": "fairface_domain"}
    print(
        f"Fit on {args.fit_on}: {len(fit_rows)} FairFace train crops; scored on "
        f"{int(val_masks['fairface'].sum())} clean and "
        f"{int(val_masks['fairface_domain'].sum())} rendered val crops; C grid {args.grid}, "
        f"{args.cv_folds} folds\n",
        flush=True,
    )

    figures: dict = {
        "settings": {
            "results": str(args.results),
            "weights": str(args.weights),
            "precision": precision,
            "fit_on": args.fit_on,
            "grid": args.grid,
            "cv_folds": args.cv_folds,
            "seed": args.seed,
            "limit": args.limit,
            "n_train": len(fit_rows),
            "n_val": {name: int(val_masks[d].sum()) for name, d in scored.items()},
        },
        "extraction": extraction,
        "variants": {},
    }
    for variant in args.features:
        fit_x = np.concatenate(
            [np.asarray(data[d][1][variant][train_masks[d]], dtype=np.float32) for d in fit_parts]
        )
        val_x = {
            name: np.asarray(data[d][1][variant][val_masks[d]], dtype=np.float32)
            for name, d in scored.items()
        }
        entry: dict = {"dims": int(fit_x.shape[1])}
        for attribute in args.attributes:
            start = time.perf_counter()
            with threadpool_limits(args.blas_threads, user_api="blas"):
                classifier = fit_attribute_classifier(
                    fit_x,
                    fit_rows[attribute].tolist(),
                    attribute=attribute,
                    classes=ATTRIBUTE_CLASSES[attribute],
                    regularization_grid=args.grid,
                    cv_folds=args.cv_folds,
                    calibration="temperature",
                    seed=args.seed,
                    groups=fit_rows["image_id"].to_numpy(),
                )
            seconds = time.perf_counter() - start
            result = {
                "fit_seconds": seconds,
                "C": classifier.regularization,
                "cv_accuracy": classifier.cv_accuracy,
                "temperature": classifier.temperature,
            }
            for name, d in scored.items():
                summary, per_class = evaluate(
                    classifier, val_x[name], data[d][0].loc[val_masks[d], attribute].tolist()
                )
                result[name] = {
                    "accuracy": summary["accuracy"],
                    "balanced_accuracy": summary["balanced_accuracy"],
                    "ece": summary["expected_calibration_error"],
                    "uncalibrated_ece": summary["uncalibrated_expected_calibration_error"],
                    "per_class": dict(zip(per_class["class"], per_class["accuracy"], strict=True)),
                    "confusion_matrix": summary["confusion_matrix"],
                }
            entry[attribute] = result
            print(
                f"{variant} ({entry['dims']}-d) {attribute}: fitted in {seconds:.1f} s, "
                f"C={classifier.regularization:g}, in-domain accuracy "
                f"{result['in_domain']['accuracy']:.3f}",
                flush=True,
            )
        figures["variants"][variant] = entry

    print(
        f"\n## Features vs evaluation (accuracy / balanced accuracy / ECE; fit on {args.fit_on})\n"
    )
    print("| features | attribute | dims | fit s | C | clean val | rendered val (in-domain) |")
    print("|---|---|---|---|---|---|---|")
    for attribute in args.attributes:
        for variant in args.features:
            entry = figures["variants"][variant]
            result = entry[attribute]
            cells = [
                f"{result[n]['accuracy']:.3f} / {result[n]['balanced_accuracy']:.3f} / "
                f"{result[n]['ece']:.3f}"
                for n in scored
            ]
            print(
                f"| {variant} | {attribute} | {entry['dims']} | {result['fit_seconds']:.1f} | "
                f"{result['C']:g} | {cells[0]} | {cells[1]} |"
            )

    if "race" in args.attributes:
        best = max(
            args.features, key=lambda v: figures["variants"][v]["race"]["in_domain"]["accuracy"]
        )
        race = figures["variants"][best]["race"]["in_domain"]
        baseline = figures["variants"].get("embedding", {}).get("race", {}).get("in_domain")
        versus = (
            f" (embedding: {baseline['accuracy']:.3f})"
            if baseline is not None and best != "embedding"
            else ""
        )
        print(
            f"\nBest in-domain race accuracy: {best}, {race['accuracy']:.3f} "
            f"(balanced {race['balanced_accuracy']:.3f}){versus}"
        )
        figures["best_in_domain_race"] = best
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
