import hashlib
import json
import os
from pathlib import Path

import yaml

# The installed package (envs/install.sh); its sources, for the rerun tracking below.
from fairfer import config_checks, rule_inputs
from fairfer.config_checks import (
    attribute_names,
    coerce_strings,
    config_error,
    extra_attributes,
    run_problem,
)
from fairfer.datasets.layouts import dataset_path_errors, expected_layout

SCRIPTS = Path(workflow.basedir).parent / "scripts"

CONFIG_SCHEMA = Path(workflow.basedir) / "schemas" / "config.schema.yaml"
_schema = yaml.safe_load(CONFIG_SCHEMA.read_text())
# --config hands nested values over as strings; read them as the schema's types.
_coerced = coerce_strings(dict(config), _schema)
config.clear()
config.update(_coerced)
_problem = config_error(config, _schema, where=os.path.relpath(CONFIG_SCHEMA))
if _problem:
    # One paragraph instead of Snakemake's dump of the whole schema.
    raise ValueError(_problem)
# Cross-key checks (strategies, models, attributes, datasets), before any name is used.
_problem = run_problem(config)
if _problem:
    raise ValueError(_problem)

EMOTION_DATASET = config["emotion_dataset"]
# Demographic references besides FairFace, on which the FairFace-trained classifiers are
# evaluated (group_labels); aligned and embedded like every other dataset.
EXTERNAL_REFERENCES = list(config["race_matching"]["external_references"])
# FairFace rendered like the emotion dataset's images (render_fairface_domain): aligned and
# embedded like every dataset, with the emotion dataset's alignment settings, so that the
# classifiers are measured (and, with race_matching.fit_on, fitted) where their labels are used.
DOMAIN_DATASET = "fairface_domain"
DOMAIN_RENDER = config["race_matching"]["domain_render"][EMOTION_DATASET]
FIT_ON = config["race_matching"]["fit_on"]
# FairFace splits rendered: val measures the classifiers; train only when they fit on it.
DOMAIN_SPLITS = ["valid"] if FIT_ON == "clean" else ["train", "valid"]
# Other emotion datasets every trained model is also evaluated on (evaluation.smk).
EVALUATION_DATASETS = list(config["evaluation"]["datasets"])
# Audio-visual emotion datasets (audiovisual.smk): their manifest has one row per clip, and
# the frames sampled from each clip's video form a dataset of their own, aligned and embedded
# like any other.
AUDIOVISUAL_DATASETS = list(config_checks.AUDIOVISUAL_DATASETS)
AUDIOVISUAL = EMOTION_DATASET in AUDIOVISUAL_DATASETS
FRAMES_DATASET = f"{EMOTION_DATASET}_frames"
DATASETS = [
    EMOTION_DATASET,
    *([FRAMES_DATASET] if AUDIOVISUAL else []),
    "fairface",
    DOMAIN_DATASET,
    *EXTERNAL_REFERENCES,
    *[d for d in EVALUATION_DATASETS if d not in EXTERNAL_REFERENCES],
]
# Datasets read from a folder: placed by hand ("manual") or unpacked from an archive by
# download_dataset. FairFace has its own download rule (download_fairface).
# Second emotion dataset of cross-dataset dynamic weighting, if configured.
SECOND_DATASET = (
    config["strategies"].get("dynamic_weighting", {}).get("second_dataset")
    if "dynamic_weighting" in config["training"]["strategies"]
    else None
)
FOLDER_DATASETS = list(
    dict.fromkeys(
        [EMOTION_DATASET, *EXTERNAL_REFERENCES, *EVALUATION_DATASETS]
        + [d for d in [SECOND_DATASET] if d]
    )
)
ARCHIVE_DATASETS = [d for d in FOLDER_DATASETS if config["datasets"][d]["source"] != "manual"]
STRATEGIES = list(config["training"]["strategies"])
# Post-processing strategies adjust a trained strategy's predictions (postprocess_predictions);
# the others are trained.
POSTPROCESS_STRATEGIES = [s for s in STRATEGIES if s in config_checks.POSTPROCESS_STRATEGIES]
TRAINED_STRATEGIES = [s for s in STRATEGIES if s not in POSTPROCESS_STRATEGIES]
# Every comparison is against this strategy (fairfer.config_checks.run_problem checks it is run).
BASELINE = config_checks.BASELINE
TRAINING_MODELS = list(config["training"]["models"])
# Users' own models (audit.models), scored without training (audit.smk).
AUDITED_MODELS = list(config["audit"]["models"])
MODELS = TRAINING_MODELS + AUDITED_MODELS
SEEDS = list(config["training"]["seeds"])


def model_seeds(model):
    """A model's own ``seeds`` if it has them, else ``training.seeds``; an audited model is
    one model (seed 0)."""
    if model in AUDITED_MODELS:
        return [0]
    return config["models"].get(model, {}).get("seeds") or SEEDS


def model_strategies(model):
    """Every strategy for a trained model; an audited one has its own predictions (baseline)
    and the post-processing of them, where it gives validation predictions to fit on."""
    if model not in AUDITED_MODELS:
        return STRATEGIES
    settings = config["audit"]["models"][model]
    has_valid = bool(settings.get("valid_predictions")) or not settings.get("predictions")
    return [BASELINE] + [
        s
        for s in POSTPROCESS_STRATEGIES
        if has_valid and config["strategies"][s]["base"] == BASELINE
    ]


# Every run, in the order compare_strategies reads their summaries.
RUNS = [
    {"model": m, "strategy": s, "seed": seed}
    for m in MODELS
    for s in model_strategies(m)
    for seed in model_seeds(m)
]
# Models with a spatial input, which Grad-CAM can explain.
IMAGE_MODELS = [
    m for m in TRAINING_MODELS if config["models"][m]["input"] in ("gray48", "aligned")
]
# Late fusion models average two trained models' posteriors (fuse_predictions); the others
# are trained (train_model).
LATE_FUSION_MODELS = [m for m in TRAINING_MODELS if config["models"][m]["input"] == "posteriors"]
TRAINED_MODELS = [m for m in TRAINING_MODELS if m not in LATE_FUSION_MODELS]
# Model inputs read from clip_inputs' output (an audio-visual dataset's clips).
CLIP_INPUTS = config_checks.CLIP_INPUTS
# Grad-CAM grids: every strategy of each image model, at that model's first seed.
GRADCAM_RUNS = [
    run
    for run in RUNS
    if run["model"] in IMAGE_MODELS
    and run["strategy"] in TRAINED_STRATEGIES
    and run["seed"] == model_seeds(run["model"])[0]
]
AUGMENTATION_STRATEGIES = [s for s in STRATEGIES if s.startswith("augmentation")]
# Datasets whose faces are aligned and embedded when a model or strategy needs them.
FACE_DATASETS = DATASETS + [d for d in [SECOND_DATASET] if d and d not in DATASETS]
SHARDS = list(range(config["alignment"]["shards"]))


# Attributes a run analyses beyond race, gender and age: columns of the emotion dataset.
EXTRA_ATTRIBUTES = extra_attributes(config)
# Attributes of the evaluation datasets' tables: the emotion dataset's own columns beyond race,
# gender and age are not theirs.
EVALUATION_ATTRIBUTES = [
    attribute
    for attribute in config["fairness"]["attributes"]
    if not set(attribute_names(attribute)) & set(EXTRA_ATTRIBUTES)
]


def dataset_folder(dataset):
    """Input of a dataset's ingest step: the placed folder, or the unpacked archive."""
    settings = config["datasets"][dataset]
    if settings["source"] == "manual":
        return settings["path"]
    return f"resources/datasets/{dataset}"


def dataset_root(dataset):
    """Params function: the folder a dataset's adapter reads, from its ingest rule's input
    (the placed folder itself, or archive_root inside the unpacked archive)."""
    settings = config["datasets"][dataset]
    inner = "" if settings["source"] == "manual" else settings["archive_root"]
    return lambda wildcards, input: str(Path(input.root, inner))


_problem = dataset_path_errors(config, FOLDER_DATASETS)
if _problem:
    raise FileNotFoundError(_problem)


def ingest_checks():
    """Settings of the split checks at ingest (fairfer.datasets.checks)."""
    return {
        "class_absent_from_train": config["ingest"]["class_absent_from_train"],
        "min_group_size": config["fairness"]["min_group_size"],
    }


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def alignment_params(wildcards):
    # The rendered FairFace, and a clip dataset's frames, are aligned as the emotion dataset.
    dataset = (
        EMOTION_DATASET
        if wildcards.dataset in (DOMAIN_DATASET, FRAMES_DATASET)
        else wildcards.dataset
    )
    return {**config["alignment"]["common"], **config["alignment"][dataset]}


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
    """Embedding shards group_labels reads for ``dataset``, per race_matching.embedder."""
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


def model_params(wildcards):
    """A model's settings; its seed list is left out, so adding a seed reruns no other."""
    return {k: v for k, v in config["models"][wildcards.model].items() if k != "seeds"}


def face_inputs(model, dataset):
    """The aligned crops, embeddings or clip inputs a model reads (none for gray48 images)."""
    source = config["models"][model]["input"]
    if source in CLIP_INPUTS:
        return [f"results/clips/{dataset}/inputs.parquet"]
    if source == "embeddings":
        return shard_files(EMBEDDED_SHARD, dataset)
    if source == "aligned":
        return shard_files(ALIGNED_SHARD, dataset)
    return []


def training_inputs(wildcards):
    inputs = {
        "manifest": f"results/manifests/{EMOTION_DATASET}.parquet",
        "group_labels": rules.group_labels.output.labels,
        "model_inputs": face_inputs(wildcards.model, EMOTION_DATASET),
    }
    if wildcards.strategy in AUGMENTATION_STRATEGIES:
        inputs["augmented"] = AUGMENTED_SET.format(strategy=wildcards.strategy)
    if config["training"]["init"] == "baseline" and wildcards.strategy != BASELINE:
        # Fine-tuned from the same model and seed's trained baseline.
        inputs["init"] = (
            f"results/models/{wildcards.model}/{BASELINE}/seed-{wildcards.seed}/model.pt"
        )
    if wildcards.strategy == "dynamic_weighting" and SECOND_DATASET:
        inputs["second_manifest"] = f"results/manifests/{SECOND_DATASET}.parquet"
        inputs["second_model_inputs"] = face_inputs(wildcards.model, SECOND_DATASET)
    return inputs


# Shard patterns as plain strings for expand(): with a default storage provider (the
# Kubernetes profile) rules.<rule>.output holds storage objects, which expand() refuses.
ALIGNED_SHARD = "results/aligned/{dataset}/shard-{shard}.parquet"
EMBEDDED_SHARD = "results/embeddings/{dataset}/shard-{shard}.parquet"
AUGMENTED_SET = f"results/augmented/{EMOTION_DATASET}/{{strategy}}.parquet"
PREDICTIONS = "results/predictions/{model}/{strategy}/seed-{seed}.parquet"
EVALUATION_PREDICTIONS = (
    "results/evaluation/{dataset}/predictions/{model}/{strategy}/seed-{seed}.parquet"
)
EVALUATION_TABLES = "results/evaluation/{dataset}/fairness/{model}/{strategy}/seed-{seed}"
GRADCAM_MAP = "results/report/gradcam/{model}/{strategy}/seed-{seed}.png"
# Per-run fairness tables: .format(table=...) first, then run_files() fills the run.
FAIRNESS_TABLE = "results/fairness/{{model}}/{{strategy}}/seed-{{seed}}/{table}.parquet"


def fusion_components(kind):
    """Input function: the two component models' predictions of the same strategy and seed."""

    def files(wildcards):
        pattern = PREDICTIONS if kind == "test" else VALID_PREDICTIONS
        return [
            pattern.format(model=m, strategy=wildcards.strategy, seed=wildcards.seed)
            for m in config["models"][wildcards.model]["components"]
        ]

    return files


VALID_PREDICTIONS = "results/models/{model}/{strategy}/seed-{seed}/valid_predictions.parquet"


def postprocess_base(kind):
    """Input function: the base strategy's valid or test predictions of the same model, seed."""

    def files(wildcards):
        base = config["strategies"][wildcards.strategy]["base"]
        pattern = PREDICTIONS if kind == "test" else VALID_PREDICTIONS
        return pattern.format(model=wildcards.model, strategy=base, seed=wildcards.seed)

    return files


def audited_files(wildcards):
    """The user's files an audit reads (so that replacing one reruns it)."""
    settings = config["audit"]["models"][wildcards.model]
    keys = ("predictions", "valid_predictions", "torchscript", "onnx")
    return [settings[key] for key in keys if settings.get(key)]


def audited_crops(wildcards):
    settings = config["audit"]["models"][wildcards.model]
    if (settings.get("input") or {}).get("source") == "aligned":
        return shard_files(ALIGNED_SHARD, EMOTION_DATASET)
    return []


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


# Runs with a checkpoint of their own: a trained model and strategy.
TRAINED_RUNS = [
    run
    for run in RUNS
    if run["model"] in TRAINED_MODELS and run["strategy"] in TRAINED_STRATEGIES
]


def evaluation_run_files(dataset):
    """Every trained run's predictions on an evaluation dataset."""
    return [EVALUATION_PREDICTIONS.format(dataset=dataset, **run) for run in TRAINED_RUNS]


def shard_files(pattern, dataset):
    return expand(pattern, dataset=dataset, shard=SHARDS)


def all_outputs():
    return run_files("results/fairness/{model}/{strategy}/seed-{seed}/summary.md") + [
        "results/fairness/comparison.md",
        "results/metrics.json",
        "results/report/fairness_report.html",
        "results/group_labels/classifier_report.json",
        "results/group_labels/composition.png",
        "results/audit/bias_metrics.csv",
        "results/faces/alignment_report.csv",
    ] + (
        [
            "results/fairness/modality_comparison.md",
            "results/fairness/crowd_accuracy.md",
            f"results/clips/{EMOTION_DATASET}/report.json",
        ]
        if AUDIOVISUAL
        else []
    ) + [
        path
        for dataset in EVALUATION_DATASETS
        for path in [
            f"results/evaluation/{dataset}/comparison.md",
            *[
                f"{EVALUATION_TABLES}/summary.md".format(dataset=dataset, **run)
                for run in TRAINED_RUNS
            ],
        ]
    ]


def package_modules(rule_script):
    """The package modules a rule script imports (fairfer.rule_inputs), as rule inputs."""
    sources = rule_inputs.package_modules(SCRIPTS / f"{rule_script}.py", SCRIPTS / "fairfer")
    # local(): source files travel with the deployed workflow, never through a storage provider.
    return [local(os.path.relpath(source)) for source in sources]


def retry_scaled(amount):
    """A resource that doubles with each attempt: a job killed for running out of time or
    memory is resubmitted with twice as much (profiles set `retries`). ``amount`` is a number
    or a function of the wildcards."""

    def scaled(wildcards, attempt):
        base = amount(wildcards) if callable(amount) else amount
        return base * 2 ** (attempt - 1)

    return scaled
