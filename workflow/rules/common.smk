import hashlib
import json
import sys
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

EMOTION_DATASET = config["emotion_dataset"]
DATASETS = [EMOTION_DATASET, "fairface"]
STRATEGIES = list(config["strategies"])
MODELS = list(config["training"]["models"])
SEEDS = list(config["training"]["seeds"])
# Every training run, in the order compare_strategies reads their summaries.
RUNS = [
    {"model": m, "strategy": s, "seed": seed}
    for m in MODELS
    for s in STRATEGIES
    for seed in (config["models"].get(m, {}).get("seeds") or SEEDS)
]
AUGMENTATION_STRATEGIES = [s for s in STRATEGIES if s.startswith("augmentation")]
# Second emotion dataset of cross-dataset dynamic weighting, if configured.
SECOND_DATASET = config["strategies"].get("dynamic_weighting", {}).get("second_dataset")
# Datasets whose faces are aligned and embedded when a model or strategy needs them.
FACE_DATASETS = DATASETS + [d for d in [SECOND_DATASET] if d and d not in DATASETS]
SHARDS = list(range(config["alignment"]["shards"]))


def check_strategies():
    if "baseline" not in STRATEGIES:
        raise ValueError(
            "config key strategies must include 'baseline': every table compares against it"
        )
    undefined = [m for m in MODELS if m not in config["models"]]
    if undefined:
        raise ValueError(
            f"config key training.models names {undefined}, which are not defined under "
            f"models (defined: {sorted(config['models'])})"
        )
    for name in MODELS:
        model = config["models"][name]
        if (model["architecture"] == "embedding_mlp") != (model["input"] == "embeddings"):
            raise ValueError(
                f"config key models.{name}: architecture embedding_mlp reads input embeddings, "
                "and only it does"
            )
    if SECOND_DATASET == EMOTION_DATASET:
        raise ValueError(
            "config key strategies.dynamic_weighting.second_dataset must differ from "
            f"emotion_dataset ({EMOTION_DATASET})"
        )
    if config["embedding"]["weights"] == "random" and not config["embedding"][
        "allow_random_weights"
    ]:
        raise ValueError(
            "config key embedding.weights is 'random' but embedding.allow_random_weights is "
            "false: set it to true to accept untrained embeddings (the outputs are marked)"
        )


# What each manually obtained dataset must look like, for the error a missing copy raises.
EXPECTED_LAYOUTS = {
    "ferplus": "FER2013Train/, FER2013Valid/, FER2013Test/ (PNGs + label.csv) and "
    "fer2013new.csv, as written by Microsoft's FERPlus generate_training_data.py",
    "rafdb": "RAF-DB's basic/ folder: EmoLabel/list_patition_label.txt, "
    "Image/aligned/*_aligned.jpg and, if you have them, Annotation/manual/*_manu_attri.txt "
    "(or the Kaggle layout: train_labels.csv, test_labels.csv, DATASET/{train,test}/<1..7>/); "
    "RAF-DB is released on request by its authors",
    "fairface": "the official FairFace zip (fairface-img-margin025-trainval.zip)",
    "fairface_labels": "the official fairface_label_train.csv / fairface_label_val.csv",
}


def check_dataset_paths():
    """Fail before any job starts when a configured local dataset path does not exist."""
    fairface = config["datasets"]["fairface"]
    local = {
        f"datasets.{dataset}.path": (
            config["datasets"].get(dataset, {}).get("path", f"data/{dataset}"),
            EXPECTED_LAYOUTS[dataset],
        )
        for dataset in {EMOTION_DATASET, SECOND_DATASET} - {None}
    }
    local |= {
        "datasets.fairface.labels.train": (
            fairface["labels"]["train"],
            EXPECTED_LAYOUTS["fairface_labels"],
        ),
        "datasets.fairface.labels.val": (
            fairface["labels"]["val"],
            EXPECTED_LAYOUTS["fairface_labels"],
        ),
    }
    if "://" not in fairface["archive"]["url"]:
        local["datasets.fairface.archive.url"] = (
            fairface["archive"]["url"],
            EXPECTED_LAYOUTS["fairface"],
        )
    for key, (path, layout) in local.items():
        if not Path(path).exists():
            raise FileNotFoundError(
                f"{path} (config key {key}) does not exist. Place there {layout}; or set "
                "the key to your local copy with --config or an extra --configfile "
                "(README.md, 'Datasets')."
            )


check_strategies()
check_dataset_paths()


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def alignment_params(wildcards):
    return {**config["alignment"]["common"], **config["alignment"][wildcards.dataset]}


def facenet_state_dict():
    """Converted Sandberg FaceNet weights, named by the source file's sha256."""
    if config["embedding"]["weights"] != "sandberg-keras":
        return []
    digest = config["embedding"]["sandberg_keras"]["sha256"][:16]
    return f"resources/facenet/sandberg-keras-{digest}.pt"


def strategy_params(wildcards):
    return config["strategies"][wildcards.strategy]


def model_params(wildcards):
    """A model's settings; its seed list is left out, so adding a seed reruns no other."""
    return {k: v for k, v in config["models"][wildcards.model].items() if k != "seeds"}


def face_inputs(model, dataset):
    """The aligned crops or embeddings a model reads (none for gray48 images)."""
    source = config["models"][model]["input"]
    if source == "embeddings":
        return shard_files(rules.embed_faces.output.embeddings, dataset)
    if source == "aligned":
        return shard_files(rules.align_faces.output.aligned, dataset)
    return []


def training_inputs(wildcards):
    inputs = {
        "manifest": f"results/manifests/{EMOTION_DATASET}.parquet",
        "group_labels": rules.match_race_labels.output.labels,
        "model_inputs": face_inputs(wildcards.model, EMOTION_DATASET),
    }
    if wildcards.strategy in AUGMENTATION_STRATEGIES:
        inputs["augmented"] = expand(
            rules.augment_demographics.output.augmented, strategy=wildcards.strategy
        )
    if wildcards.strategy == "dynamic_weighting" and SECOND_DATASET:
        inputs["second_manifest"] = f"results/manifests/{SECOND_DATASET}.parquet"
        inputs["second_model_inputs"] = face_inputs(wildcards.model, SECOND_DATASET)
    return inputs


def training_memory_mb(wildcards):
    """Decoded inputs dominate: aligned RGB crops take far more than 48x48 gray images."""
    model = config["models"][wildcards.model]
    if model["input"] == "aligned":
        side = model.get("image_size", 112)
        return 4000 + int(45000 * 3 * side * side / 2**20)
    return 4000


def run_files(pattern):
    """``pattern`` filled in for every training run (model, strategy, seed)."""
    return [pattern.format(**run) for run in RUNS]


def shard_files(pattern, dataset):
    return expand(pattern, dataset=dataset, shard=SHARDS)


def all_outputs():
    return run_files("results/fairness/{model}/{strategy}/seed-{seed}/intervals.md") + [
        "results/fairness/comparison.md",
        "results/metrics.json",
        "results/group_labels/classifier_report.json",
        "results/group_labels/composition.png",
        "results/faces/alignment_report.csv",
    ]
