import ast
import hashlib
import json
import os
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

SCRIPTS = Path(workflow.basedir).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
from fairfer.config_checks import coerce_strings, config_error  # noqa: E402

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
# Fills in the schema's defaults.
validate(config, schema="../schemas/config.schema.yaml")

EMOTION_DATASET = config["emotion_dataset"]
# Demographic references besides FairFace, on which the FairFace-trained classifiers are
# evaluated (match_race_labels); aligned and embedded like every other dataset.
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
DATASETS = [
    EMOTION_DATASET,
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
# Every comparison is against this strategy (check_strategies makes sure it is configured).
BASELINE = "baseline"
MODELS = list(config["training"]["models"])
SEEDS = list(config["training"]["seeds"])


def model_seeds(model):
    """A model's own ``seeds`` if it has them, else ``training.seeds``."""
    return config["models"].get(model, {}).get("seeds") or SEEDS


# Every training run, in the order compare_strategies reads their summaries.
RUNS = [
    {"model": m, "strategy": s, "seed": seed}
    for m in MODELS
    for s in STRATEGIES
    for seed in model_seeds(m)
]
# Models with a spatial input, which Grad-CAM can explain.
IMAGE_MODELS = [m for m in MODELS if config["models"][m]["input"] != "embeddings"]
# Grad-CAM grids: every strategy of each image model, at that model's first seed.
GRADCAM_RUNS = [
    run
    for run in RUNS
    if run["model"] in IMAGE_MODELS
    and run["seed"] == model_seeds(run["model"])[0]
]
AUGMENTATION_STRATEGIES = [s for s in STRATEGIES if s.startswith("augmentation")]
# Datasets whose faces are aligned and embedded when a model or strategy needs them.
FACE_DATASETS = DATASETS + [d for d in [SECOND_DATASET] if d and d not in DATASETS]
SHARDS = list(range(config["alignment"]["shards"]))


# Attributes a run analyses beyond race, gender and age (inferred where a dataset lacks them):
# columns of the emotion dataset, never invented. From fairness.attributes, the strategies'
# groups and report.gradcam.attribute.
INFERABLE_ATTRIBUTES = ["race", "gender", "age"]


def _attribute_names(value):
    if isinstance(value, str):
        return [value]
    return [name for item in value or [] for name in _attribute_names(item)]


EXTRA_ATTRIBUTES = list(
    dict.fromkeys(
        name
        for name in _attribute_names(config["fairness"]["attributes"])
        + [
            name
            for strategy in STRATEGIES
            for key in ("groups", "attributes", "cells")
            for name in _attribute_names(config["strategies"].get(strategy, {}).get(key))
        ]
        + [config["report"]["gradcam"]["attribute"]]
        if name not in INFERABLE_ATTRIBUTES and name not in ("emotion", "dataset")
    )
)


# Attributes of the evaluation datasets' tables: the emotion dataset's own columns beyond race,
# gender and age are not theirs.
EVALUATION_ATTRIBUTES = [
    attribute
    for attribute in config["fairness"]["attributes"]
    if not set(_attribute_names(attribute)) & set(EXTRA_ATTRIBUTES)
]


def check_strategies():
    undefined = [s for s in STRATEGIES if s not in config["strategies"]]
    if undefined:
        raise ValueError(
            f"config key training.strategies names {undefined}, which are not defined under "
            f"strategies (defined: {sorted(config['strategies'])}). Define them there, or "
            "remove them from the list."
        )
    if BASELINE not in STRATEGIES:
        raise ValueError(
            f"config key training.strategies is {STRATEGIES}: it must include {BASELINE!r}, "
            "which every table compares against. Add it to the list."
        )
    if EXTRA_ATTRIBUTES and EMOTION_DATASET != "generic":
        raise ValueError(
            f"config names the attributes {EXTRA_ATTRIBUTES} (fairness.attributes, a "
            f"strategy's groups or report.gradcam.attribute), but emotion_dataset "
            f"{EMOTION_DATASET} provides only race, gender and age; other attributes are "
            "never invented. Remove them, or use a generic dataset (emotion_dataset: generic) "
            "whose CSV has those columns."
        )
    reserved = [name for name in [*MODELS, *STRATEGIES] if name == "group_labels"]
    if reserved:
        raise ValueError(
            "config: 'group_labels' is reserved (results/metrics.json keeps the labels' "
            "accuracy under it); rename that model or strategy"
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
    if EMOTION_DATASET in EVALUATION_DATASETS:
        raise ValueError(
            f"config key evaluation.datasets lists the emotion dataset {EMOTION_DATASET}: its "
            "own test split is always evaluated. List only other emotion datasets."
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


# What each dataset must look like (key: dataset, or dataset/layout), for the errors that a
# missing or misplaced copy raises.
EXPECTED_LAYOUTS = {
    "ferplus/png_folders": "FER2013Train/, FER2013Valid/, FER2013Test/ (PNGs + label.csv) and "
    "fer2013new.csv, as written by Microsoft's FERPlus generate_training_data.py",
    "ferplus/fer2013_csv": "fer2013.csv (the ICML 2013 challenge file, columns emotion, pixels, "
    "Usage) and fer2013new.csv (the FER+ votes from github.com/microsoft/FERPlus), whose rows "
    "correspond one to one",
    "rafdb": "RAF-DB's basic/ folder: EmoLabel/list_patition_label.txt, "
    "Image/aligned/*_aligned.jpg and, if you have them, Annotation/manual/*_manu_attri.txt "
    "(or the Kaggle layout: train_labels.csv, test_labels.csv, DATASET/{train,test}/<1..7>/)",
    "generic/csv": "a CSV (datasets.generic.manifest_csv) with columns path and emotion "
    "(optional: race, gender, age, subject_id, split) and the images at those paths, relative "
    "to the folder",
    "generic/folder_sets": "images/<set_id>/*.jpg (datasets.generic.image_glob) and a CSV "
    "(datasets.generic.metadata_csv) with one row per set: set_id and optional emotion, race, "
    "gender, age, subject_id, split",
    "generic/class_folders": "one folder per emotion, <emotion>/<image> (e.g. happy/0001.png), "
    "optionally under split folders train/, val/, test/",
    "utkface": "UTKFace images named [age]_[gender]_[race]_[date&time].jpg (or .jpg.chip.jpg), "
    "e.g. the folder UTKFace/ of the aligned-and-cropped release",
    "fairface": "the official FairFace zip (fairface-img-margin025-trainval.zip or "
    "fairface-img-margin125-trainval.zip, both with train/ and val/ at the top)",
    "fairface_labels": "the official fairface_label_train.csv / fairface_label_val.csv",
}
# Where a copy can be obtained, for the same errors.
OBTAIN = {
    "ferplus": "FER2013 from the ICML 2013 challenge (Kaggle), votes from "
    "github.com/microsoft/FERPlus",
    "rafdb": "RAF-DB is released on request by its authors (whdeng.cn/raf); the Kaggle "
    "re-packaging kaggle://shuvoalok/raf-db-dataset also works as a source",
    "utkface": "susanqq.github.io/UTKFace (UTKFace.tar.gz), or Kaggle copies such as "
    "kaggle://jangedoo/utkface-new with archive_root UTKFace",
}


def obtain(dataset):
    return f" Obtain it from: {OBTAIN[dataset]}." if dataset in OBTAIN else ""


def layout_key(dataset):
    settings = config["datasets"][dataset]
    if dataset == "ferplus":
        return f"ferplus/{settings['layout']}"
    if dataset == "generic":
        return f"generic/{settings['format']}"
    return dataset


def required_files(dataset):
    """Files a dataset folder must hold, each as alternatives (any one of them will do)."""
    settings = config["datasets"][dataset]
    if dataset == "ferplus":
        votes = [] if settings["votes_csv"] else [("fer2013new.csv",)]
        if settings["layout"] == "fer2013_csv":
            return [("fer2013.csv",), *votes]
        splits = ("FER2013Train", "FER2013Valid", "FER2013Test")
        return [(f"{split}/label.csv",) for split in splits] + votes
    if dataset == "rafdb":
        official = ("EmoLabel/list_patition_label.txt", "EmoLabel/list_partition_label.txt")
        kaggle = ("train_labels.csv",)
        layouts = {"official": official, "kaggle": kaggle, "auto": official + kaggle}
        return [layouts[settings["layout"]]]
    if dataset == "generic":
        if settings["format"] == "class_folders":
            return []
        key = "manifest_csv" if settings["format"] == "csv" else "metadata_csv"
        return [(settings[key],)]
    return []


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


def missing_dataset_error(dataset):
    """Why a manually placed dataset is unusable, with what to place where; None if fine."""
    settings = config["datasets"][dataset]
    root = Path(settings["path"])
    missing = [
        " or ".join(str(root / name) for name in alternatives)
        for alternatives in required_files(dataset)
        if not any((root / name).exists() for name in alternatives)
    ]
    votes_csv = settings.get("votes_csv")
    if votes_csv and not Path(votes_csv).is_file():
        missing.append(f"{votes_csv} (config key datasets.{dataset}.votes_csv)")
    if root.is_dir() and not missing:
        return None
    what = f"{root} does not exist" if not root.is_dir() else "missing: " + "; ".join(missing)
    return (
        f"Dataset {dataset} (config key datasets.{dataset}.path, source: manual, so you place "
        f"its files yourself): {what}. Place in {root} {EXPECTED_LAYOUTS[layout_key(dataset)]}."
        f"{obtain(dataset)} Or set datasets.{dataset}.path to your copy, or "
        f"datasets.{dataset}.source to an archive the pipeline fetches (local path, http(s):// "
        "or kaggle://owner/dataset; docs/datasets.md)."
    )


def check_dataset_paths():
    """Fail before any job starts when a dataset the run needs is not where configured."""
    errors = []
    for dataset in FOLDER_DATASETS:
        settings = config["datasets"][dataset]
        if settings["source"] == "manual":
            errors.append(missing_dataset_error(dataset))
        elif "://" not in settings["source"] and not Path(settings["source"]).is_file():
            sha256 = settings["sha256"]
            errors.append(
                f"{settings['source']} (config key datasets.{dataset}.source) does not exist. "
                f"Place there the archive of {dataset}"
                + (f" (sha256 {sha256})" if sha256 else "")
                + f" holding {EXPECTED_LAYOUTS[layout_key(dataset)]}"
                + (f" under {settings['archive_root']}/" if settings["archive_root"] else "")
                + f".{obtain(dataset)}"
            )
    fairface = config["datasets"]["fairface"]
    for split, path in fairface["labels"].items():
        if not Path(path).is_file():
            errors.append(
                f"{path} (config key datasets.fairface.labels.{split}) does not exist. Place "
                f"there {EXPECTED_LAYOUTS['fairface_labels']}."
            )
    archive = fairface["archive"]
    if "://" not in archive["url"] and not Path(archive["url"]).is_file():
        sha256 = f" (sha256 {archive['sha256']})" if archive["sha256"] else ""
        errors.append(
            f"{archive['url']} (config key datasets.fairface.archive.url) does not exist. "
            f"Place there {EXPECTED_LAYOUTS['fairface']}{sha256}."
        )
    errors = [error for error in errors if error]
    if errors:
        raise FileNotFoundError(
            "\n".join(errors)
            + "\nSet keys with --config or an extra --configfile (docs/datasets.md)."
        )


check_strategies()
check_dataset_paths()


def ingest_checks():
    """Settings of the split checks at ingest (fairfer.dataset_checks)."""
    return {
        "class_absent_from_train": config["ingest"]["class_absent_from_train"],
        "min_group_size": config["fairness"]["min_group_size"],
    }


def dataset_config(wildcards):
    return config["datasets"][wildcards.dataset]


def alignment_params(wildcards):
    # The rendered FairFace is aligned exactly as the dataset it imitates.
    dataset = EMOTION_DATASET if wildcards.dataset == DOMAIN_DATASET else wildcards.dataset
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


def model_params(wildcards):
    """A model's settings; its seed list is left out, so adding a seed reruns no other."""
    return {k: v for k, v in config["models"][wildcards.model].items() if k != "seeds"}


def face_inputs(model, dataset):
    """The aligned crops or embeddings a model reads (none for gray48 images)."""
    source = config["models"][model]["input"]
    if source == "embeddings":
        return shard_files(EMBEDDED_SHARD, dataset)
    if source == "aligned":
        return shard_files(ALIGNED_SHARD, dataset)
    return []


def training_inputs(wildcards):
    inputs = {
        "manifest": f"results/manifests/{EMOTION_DATASET}.parquet",
        "group_labels": rules.match_race_labels.output.labels,
        "model_inputs": face_inputs(wildcards.model, EMOTION_DATASET),
    }
    if wildcards.strategy in AUGMENTATION_STRATEGIES:
        inputs["augmented"] = AUGMENTED_SET.format(strategy=wildcards.strategy)
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


def evaluation_run_files(dataset):
    """Every training run's predictions on an evaluation dataset."""
    return [EVALUATION_PREDICTIONS.format(dataset=dataset, **run) for run in RUNS]


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
    ] + [
        path
        for dataset in EVALUATION_DATASETS
        for path in [
            f"results/evaluation/{dataset}/comparison.md",
            *[f"{EVALUATION_TABLES}/summary.md".format(dataset=dataset, **run) for run in RUNS],
        ]
    ]


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
    memory is resubmitted with twice as much (profiles set `retries`). ``amount`` is a number
    or a function of the wildcards."""

    def scaled(wildcards, attempt):
        base = amount(wildcards) if callable(amount) else amount
        return base * 2 ** (attempt - 1)

    return scaled
