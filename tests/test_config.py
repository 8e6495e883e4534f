"""The shipped configurations satisfy the JSON schema, and bad ones fail naming the key."""

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from snakemake.utils import update_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def merged(base: dict, override: dict) -> dict:
    """``override`` over ``base`` as Snakemake merges an extra --configfile."""
    result = copy.deepcopy(base)
    update_config(result, copy.deepcopy(override))
    return result


def test_default_config_is_valid():
    jsonschema.validate(load("config.yaml"), SCHEMA)


@pytest.mark.parametrize("overlay", ["ci.yaml", "presets/cpu.yaml", "presets/gpu.yaml"])
def test_ci_config_and_presets_are_valid_over_the_default(overlay):
    config = merged(load("config.yaml"), load(overlay))
    jsonschema.validate(config, SCHEMA)
    assert set(config["training"]["models"]) <= set(config["models"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"models": {"compact_cnn": {"epochs": -1}}}, "epochs"),
        ({"strategies": {"unknown_strategy": {}}}, "unknown_strategy"),
        ({"models": {"compact_cnn": {"batch_size": "large"}}}, "batch_size"),
        ({"models": {"compact_cnn": {"architecture": "vgg99"}}}, "vgg99"),
        ({"models": {"Bad-Name": {}}}, "Bad-Name"),
        ({"training": {"seeds": [0, 0]}}, "seeds"),
        ({"strategies": {"group_dro": {"by_class": "yes"}}}, "by_class"),
        ({"strategies": {"adversarial": {"weight": -1}}}, "weight"),
        ({"datasets": {"fairface": {"archive": {"sha256": "abc"}}}}, "sha256"),
        ({"datasets": {"ferplus": {"source": "ftp://host/fer.zip"}}}, "ftp://host/fer.zip"),
        ({"datasets": {"rafdb": {"source": "kaggle://only-owner"}}}, "kaggle://only-owner"),
        ({"datasets": {"fairface": {"archive": {"url": "manual"}}}}, "manual"),
        ({"datasets": {"utkface": {"archive_root": "../up"}}}, "../up"),
        ({"emotion_dataset": "affectnet"}, "affectnet"),
        ({"race_matching": {"external_references": ["fairface"]}}, "external_references"),
        ({"datasets": {"generic": {"emotion_aliases": {"joy": ""}}}}, "joy"),
        ({"race_matching": {"embedder": "tuned"}}, "embedder"),
        ({"finetune": {"trainable_blocks": 25}}, "trainable_blocks"),
        ({"finetune": {"holdout_fraction": 0.0}}, "holdout_fraction"),
        ({"finetune": {"device": "tpu"}}, "device"),
    ],
)
def test_bad_values_are_rejected_naming_the_key(override, key):
    with pytest.raises(jsonschema.ValidationError) as error:
        jsonschema.validate(merged(load("config.yaml"), override), SCHEMA)
    assert key in str(error.value)


@pytest.mark.parametrize(
    "override",
    [
        {"datasets": {"rafdb": {"source": "kaggle://shuvoalok/raf-db-dataset"}}},
        {"datasets": {"utkface": {"source": "https://host/UTKFace.tar.gz", "sha256": None}}},
        {"datasets": {"generic": {"source": "/data/mine.zip", "archive_root": "mine/v2"}}},
        {"datasets": {"ferplus": {"source": "kaggle://o/d/fer2013.csv?version=2"}}},
        {
            "datasets": {
                "fairface": {
                    "archive": {"url": "data/fairface-img-margin125-trainval.zip", "sha256": None}
                }
            }
        },
        {"emotion_dataset": "generic", "race_matching": {"external_references": ["utkface"]}},
    ],
)
def test_source_kinds_and_dataset_choices_are_accepted(override):
    jsonschema.validate(merged(load("config.yaml"), override), SCHEMA)


def test_every_schema_property_is_described():
    def walk(node, path):
        if isinstance(node, dict):
            for name, child in node.get("properties", {}).items():
                assert "description" in child or "$ref" in child, (
                    f"{path}.{name} lacks a description"
                )
                walk(child, f"{path}.{name}")

    walk(SCHEMA, "config")


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        target = SCHEMA
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def test_values_live_in_the_config_and_types_in_the_schema():
    """One place for defaults: config/config.yaml has a value for every key the schema
    describes (and nothing else, by additionalProperties), and the schema holds no defaults.
    Entries a user adds under a name (models, strategies) need the schema's required keys only;
    a model's optional settings default in fairfer.training.models.ModelSpec."""
    assert "default:" not in (ROOT / "workflow/schemas/config.schema.yaml").read_text()

    def walk(schema: dict, value, path: str) -> None:
        schema = _resolve(schema)
        if not isinstance(value, dict):
            return
        for name, child in schema.get("properties", {}).items():
            assert name in value, (
                f"config/config.yaml lacks {path}.{name}, which the schema describes"
            )
            walk(child, value[name], f"{path}.{name}")

    walk(SCHEMA, load("config.yaml"), "config")
