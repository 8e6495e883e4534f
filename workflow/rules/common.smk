import ast
import hashlib
import json
import os
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


# Shard patterns as plain strings for expand(): with a default storage provider (the
# Kubernetes profile) rules.<rule>.output holds storage objects, which expand() refuses.
ALIGNED_SHARD = "results/aligned/{dataset}/shard-{shard}.parquet"
EMBEDDED_SHARD = "results/embeddings/{dataset}/shard-{shard}.parquet"


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


SCRIPTS = Path(workflow.basedir).parent / "scripts"


def package_modules(rule_script):
    """The scripts/fairfer modules a rule script imports, directly or through other modules.

    Rules list them as inputs because Snakemake's code trigger sees only the rule's own
    script: with them, an edit to scripts/fairfer/training.py reruns train_model, and
    `dvc repro` (which reruns a stage when its code changed) gets the same answer.
    """
    package = SCRIPTS / "fairfer"
    pending, found = [SCRIPTS / f"{rule_script}.py"], set()
    while pending:
        for node in ast.walk(ast.parse(pending.pop().read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fairfer"):
                submodule = node.module.partition(".")[2]
                names = [submodule] if submodule else [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [
                    alias.name.partition(".")[2]
                    for alias in node.names
                    if alias.name.startswith("fairfer.")
                ]
            else:
                continue
            for name in names:
                source = package / f"{name.split('.')[0]}.py"
                if source.is_file() and source not in found:
                    found.add(source)
                    pending.append(source)
    # local(): source files travel with the deployed workflow, never through a storage provider.
    return [local(os.path.relpath(source)) for source in sorted(found)]


def retry_scaled(amount):
    """A resource that doubles with each attempt: a job killed for running out of time or
    memory is resubmitted with twice as much (profiles set `retries`)."""
    return lambda wildcards, attempt: amount * 2 ** (attempt - 1)
