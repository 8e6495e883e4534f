import hashlib
import json
import sys
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

EMOTION_DATASET = config["emotion_dataset"]
DATASETS = [EMOTION_DATASET, "fairface"]
STRATEGIES = list(config["strategies"])
SHARDS = list(range(config["alignment"]["shards"]))


def check_strategies():
    if "baseline" not in STRATEGIES:
        raise ValueError(
            "config key strategies must include 'baseline': every table compares against it"
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
        f"datasets.{EMOTION_DATASET}.path": (
            config["datasets"][EMOTION_DATASET]["path"],
            EXPECTED_LAYOUTS[EMOTION_DATASET],
        ),
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


def finetune_mem_mb(wildcards, input):
    """Memory of finetune_facenet: the float16 activation cache of FairFace train at the cut
    (mirror images included), plus the network and the crops.

    The number of images is estimated from the aligned shards (about 17 kB per PNG crop).
    """
    trainable = config["finetune"]["trainable_blocks"]
    # Activation values per image at the cut below the trainable blocks (160x160 input).
    per_image = (
        1792 * 3 * 3 if trainable <= 6
        else 896 * 8 * 8 if trainable <= 17
        else 256 * 17 * 17 if trainable <= 23
        else 3 * 160 * 160
    )
    images = sum(Path(path).stat().st_size for path in input.aligned) / 17_000
    copies = 2 if config["finetune"]["flip"] else 1
    return int(3000 + 2 * per_image * images * copies / 2**20 + input.size_mb)


def race_matching_embeddings(dataset):
    """Embedding shards match_race_labels reads for ``dataset``, per race_matching.embedder."""
    directory = {"frozen": "embeddings", "finetuned": "embeddings_finetuned"}[
        config["race_matching"]["embedder"]
    ]
    return shard_files(f"results/{directory}/{{dataset}}/shard-{{shard}}.parquet", dataset)


def race_matching_fit_subset():
    """Fine-tuned embeddings: the classifiers fit only on the images fine-tuning held out."""
    if config["race_matching"]["embedder"] == "finetuned":
        return "results/finetune/roles.parquet"
    return []


def strategy_params(wildcards):
    return config["strategies"][wildcards.strategy]


def training_inputs(wildcards):
    inputs = {
        "manifest": f"results/manifests/{EMOTION_DATASET}.parquet",
        "group_labels": rules.match_race_labels.output.labels,
    }
    if wildcards.strategy == "augmentation":
        inputs["augmented"] = rules.augment_demographics.output.augmented
    return inputs


def shard_files(pattern, dataset):
    return expand(pattern, dataset=dataset, shard=SHARDS)


def all_outputs():
    return expand("results/fairness/{strategy}/intervals.md", strategy=STRATEGIES) + [
        "results/fairness/comparison.md",
        "results/metrics.json",
        "results/group_labels/classifier_report.json",
        "results/group_labels/composition.png",
        "results/faces/alignment_report.csv",
    ]
