"""The run's configuration checked against its JSON schema, with errors a user can act on.

Snakemake's own validation prints the whole schema on a failure (thousands of lines for one
misspelled key) and ``--config key=value`` hands nested values over as strings
(``--config fairness='{min_group_size: 10}'`` gives ``"10"``). :func:`coerce_strings` reads such
strings as YAML where the schema wants a number, a boolean, null or a list, and
:func:`config_error` explains the first real problem in one paragraph: the key, the value
found, what is allowed and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import jsonschema
import yaml


def _resolve(schema: Mapping, root: Mapping) -> Mapping:
    while isinstance(schema, Mapping) and "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _types(schema: Mapping, root: Mapping) -> set[str]:
    schema = _resolve(schema, root)
    declared = schema.get("type")
    types = set([declared] if isinstance(declared, str) else declared or [])
    if "enum" in schema:
        types |= {
            {bool: "boolean", int: "integer", float: "number", str: "string"}.get(type(v), "null")
            for v in schema["enum"]
        }
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        types |= _types(branch, root)
    return types


def _child(schema: Mapping, key: Any, root: Mapping) -> Mapping | None:
    schema = _resolve(schema, root)
    if isinstance(key, int):
        items = schema.get("items")
        return items if isinstance(items, Mapping) else None
    if key in schema.get("properties", {}):
        return schema["properties"][key]
    for pattern_schema in schema.get("patternProperties", {}).values():
        return pattern_schema
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, Mapping) else None


def coerce_strings(config: Any, schema: Mapping, root: Mapping | None = None) -> Any:
    """``config`` with strings read as YAML wherever the schema does not allow a string there.

    A string stays a string where the schema allows one, or where YAML gives a value of a type
    the schema does not allow either (validation then names it).
    """
    root = schema if root is None else root
    if isinstance(config, dict):
        result = {}
        for key, value in config.items():
            child = _child(schema, key, root)
            result[key] = coerce_strings(value, child, root) if child is not None else value
        return result
    if isinstance(config, list):
        child = _child(schema, 0, root)
        return [coerce_strings(v, child, root) if child is not None else v for v in config]
    if isinstance(config, str):
        types = _types(schema, root)
        if not types or "string" in types:
            return config
        try:
            value = yaml.safe_load(config)
        except yaml.YAMLError:
            return config
        found = {
            bool: "boolean",
            int: "integer",
            float: "number",
            type(None): "null",
            list: "array",
            dict: "object",
        }.get(type(value))
        allowed = types | ({"number"} if "integer" in types and found == "integer" else set())
        if found in allowed or (found == "integer" and "number" in types):
            return coerce_strings(value, schema, root)
    return config


def _key(path: Any) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in path]
    return "".join(parts).lstrip(".") or "(top level)"


def _allowed(error: jsonschema.ValidationError, root: Mapping) -> str:
    schema = _resolve(error.schema, root)
    validator = error.validator
    if validator == "enum":
        return f"one of {list(schema['enum'])}"
    if validator == "type":
        return f"a value of type {schema['type']}"
    if validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bounds = {
            "minimum": ">=",
            "exclusiveMinimum": ">",
            "maximum": "<=",
            "exclusiveMaximum": "<",
        }
        limits = [f"{bounds[k]} {schema[k]}" for k in bounds if k in schema]
        return "a number " + " and ".join(limits)
    if validator == "pattern":
        return f"a name matching {schema['pattern']}"
    if validator in ("minItems", "maxItems", "uniqueItems"):
        return f"a list with {validator} {schema[validator]}"
    if validator == "required":
        return f"the keys {schema['required']}"
    return f"what the schema's {validator!r} rule allows"


def config_error(config: Mapping, schema: Mapping, *, where: str) -> str | None:
    """One paragraph on the first problem of ``config`` (None when it is valid).

    ``where`` names the schema file, for a user who wants the full description.
    """
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return None
    key = _key(error.absolute_path)
    fix = (
        "Correct it in your --configfile overlay (or --config), or drop the key to keep the "
        f"shipped value; {where} describes every key."
    )
    if error.validator == "additionalProperties":
        schema_here = _resolve(error.schema, schema)
        known = sorted(schema_here.get("properties", {}))
        unknown = [k for k in error.instance if k not in known] if known else []
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return (
            f"Config key {key}: unknown key {', '.join(hints) or error.message}. Allowed keys "
            f"there: {known}. {fix}"
        )
    description = _resolve(error.schema, schema).get("description")
    shown = repr(error.instance)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    if error.validator == "oneOf" and isinstance(error.instance, (str, list)):
        allowed = "a name or a list of names (an intersection)"
    else:
        allowed = _allowed(error, schema)
    text = f"Config key {key}: found {shown}; allowed: {allowed}."
    if description:
        text += f" ({' '.join(str(description).split())})"
    return f"{text} {fix}"


#: Attributes inferred from FairFace where a dataset lacks them; any other is a dataset column.
INFERABLE_ATTRIBUTES: tuple[str, ...] = ("race", "gender", "age")
#: Every comparison is against this strategy.
BASELINE = "baseline"


def attribute_names(value: object) -> list[str]:
    """The distinct column names in an attribute setting (a name, or a list of names and of
    lists of names for intersections), in order of first appearance."""
    if isinstance(value, str):
        return [value]
    return list(dict.fromkeys(name for item in value or [] for name in attribute_names(item)))


def extra_attributes(config: Mapping) -> list[str]:
    """Attributes the run analyses beyond race, gender and age (``fairness.attributes``, the
    selected strategies' groups, attributes and cells, ``report.gradcam.attribute``): columns
    the emotion dataset must provide, never invented."""
    names = attribute_names(config["fairness"]["attributes"])
    for strategy in config["training"]["strategies"]:
        for key in ("groups", "attributes", "cells"):
            names += attribute_names(config["strategies"].get(strategy, {}).get(key))
    names.append(config["report"]["gradcam"]["attribute"])
    extra = [n for n in names if n not in INFERABLE_ATTRIBUTES and n not in ("emotion", "dataset")]
    return list(dict.fromkeys(extra))


#: Inputs that are vectors, read by embedding_mlp.
VECTOR_INPUTS: tuple[str, ...] = ("embeddings", "clip_embeddings", "egemaps")
#: Inputs read from an audio-visual dataset's clip inputs (rule clip_inputs).
CLIP_INPUTS: tuple[str, ...] = ("clip_embeddings", "logmel", "egemaps", "audiovisual")
#: The inputs each architecture other than the image networks reads (fairfer.training.models
#: checks a model entry against the same table; this module stays free of torch).
ARCHITECTURE_INPUTS: dict[str, tuple[str, ...]] = {
    "embedding_mlp": VECTOR_INPUTS,
    "audio_cnn": ("logmel",),
    "fusion_net": ("audiovisual",),
    "late_fusion": ("posteriors",),
}
#: Model inputs that exist only for an audio-visual dataset's clips.
CLIP_MODEL_INPUTS: tuple[str, ...] = (*CLIP_INPUTS, "posteriors")
AUDIOVISUAL_DATASETS: tuple[str, ...] = ("cremad",)
#: Strategies that adjust a trained strategy's predictions (fairfer.training.postprocessing).
POSTPROCESS_STRATEGIES: tuple[str, ...] = ("postprocess_recall", "postprocess_worst_group")
#: Attributes beyond race, gender and age each emotion dataset has (generic: any column).
DATASET_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "ferplus": (),
    "rafdb": (),
    "cremad": ("ethnicity",),
}


def _and_list(names: list[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}"


def audit_problem(config: Mapping) -> str | None:
    """Audited models whose names clash, or that cannot apply to the emotion dataset."""
    audited = list(config["audit"]["models"])
    clash = [m for m in audited if m in config["training"]["models"] or m == "group_labels"]
    if clash:
        return (
            f"config key audit.models names {clash}, which are also trained models (or the "
            "reserved group_labels); give the audited models other names."
        )
    if audited and config["emotion_dataset"] in AUDIOVISUAL_DATASETS:
        return (
            f"config key audit.models is not supported with the audio-visual dataset "
            f"{config['emotion_dataset']}: audited models read images. Set it to {{}}."
        )
    return None


def audiovisual_problem(config: Mapping) -> str | None:
    """Models that do not fit the emotion dataset's kind (images or clips), late-fusion
    components and modality references that are not trained models."""
    emotion = config["emotion_dataset"]
    models = list(config["training"]["models"])
    clip = [m for m in models if config["models"][m]["input"] in CLIP_MODEL_INPUTS]
    audiovisual = emotion in AUDIOVISUAL_DATASETS
    if audiovisual and len(clip) < len(models):
        others = [m for m in models if m not in clip]
        return (
            f"config key training.models names {others} for the audio-visual dataset {emotion}, "
            "whose samples are clips: use clip models (inputs clip_embeddings, logmel, egemaps, "
            "audiovisual, posteriors), e.g. training.models: [visual_mlp, audio_cnn, "
            "fusion_early, fusion_late] as config/cremad.yaml sets."
        )
    if not audiovisual and clip:
        return (
            f"config key training.models names the clip models {clip}, but emotion_dataset "
            f"{emotion} has images, not clips; they need emotion_dataset cremad."
        )
    for name in models:
        model = config["models"][name]
        if model["input"] != "posteriors":
            continue
        components = list(model.get("components", []))
        wrong = [
            c for c in components
            if c not in models or config["models"][c]["input"] == "posteriors"
        ]  # fmt: skip
        if wrong:
            return (
                f"config key models.{name}.components names {wrong}, which are not trained "
                f"models of training.models ({models}); late fusion averages two of them."
            )
    if audiovisual:
        missing = [m for m in config["audiovisual"]["references"] if m not in models]
        if missing:
            return (
                f"config key audiovisual.references names {missing}, which are not in "
                f"training.models ({models}); the modality comparison needs their predictions."
            )
        if config["evaluation"]["datasets"]:
            return (
                "config key evaluation.datasets is not supported with an audio-visual "
                f"emotion dataset ({emotion}): its models read clips, the others' images. Set "
                "it to []."
            )
    return None


def run_problem(config: Mapping) -> str | None:
    """The first cross-key problem of a schema-valid configuration, in one paragraph."""
    strategies = list(config["training"]["strategies"])
    models = list(config["training"]["models"])
    emotion = config["emotion_dataset"]
    undefined = [s for s in strategies if s not in config["strategies"]]
    if undefined:
        return (
            f"config key training.strategies names {undefined}, which are not defined under "
            f"strategies (defined: {sorted(config['strategies'])}). Define them there, or "
            "remove them from the list."
        )
    if BASELINE not in strategies:
        return (
            f"config key training.strategies is {strategies}: it must include {BASELINE!r}, "
            "which every table compares against. Add it to the list."
        )
    undefined = [m for m in models if m not in config["models"]]
    if undefined:
        return (
            f"config key training.models names {undefined}, which are not defined under "
            f"models (defined: {sorted(config['models'])}). Define them there, or remove them "
            "from the list."
        )
    if "group_labels" in [*models, *strategies]:
        return (
            "config: 'group_labels' is reserved (results/metrics.json keeps the labels' "
            "accuracy under it); rename that model or strategy."
        )
    for name in models:
        model = config["models"][name]
        for architecture, inputs in ARCHITECTURE_INPUTS.items():
            if (model["architecture"] == architecture) != (model["input"] in inputs):
                return (
                    f"config key models.{name}: architecture {architecture} reads input "
                    f"{' or '.join(inputs)}, and only it does; set architecture and input "
                    "accordingly."
                )
    problem = audiovisual_problem(config) or audit_problem(config)
    if problem:
        return problem
    for name in strategies:
        base = config["strategies"][name].get("base")
        if name in POSTPROCESS_STRATEGIES and (
            base not in strategies or base in POSTPROCESS_STRATEGIES
        ):
            return (
                f"config key strategies.{name}.base is {base!r}: a post-processing strategy "
                f"adjusts a trained strategy's predictions, so base must be one of the trained "
                f"strategies of training.strategies "
                f"({[s for s in strategies if s not in POSTPROCESS_STRATEGIES]})."
            )
    extra = extra_attributes(config)
    allowed = DATASET_ATTRIBUTES.get(emotion)
    if extra and allowed is not None and set(extra) - set(allowed):
        return (
            f"config names the attributes {extra} (fairness.attributes, a strategy's groups or "
            f"report.gradcam.attribute), but emotion_dataset {emotion} provides only "
            f"{_and_list(['race', 'gender', 'age', *allowed])}; other attributes are never "
            "invented. Remove them, or use a generic dataset (emotion_dataset: generic) whose "
            "CSV has those columns."
        )
    if emotion in config["evaluation"]["datasets"]:
        return (
            f"config key evaluation.datasets lists the emotion dataset {emotion}: its own test "
            "split is always evaluated. List only other emotion datasets."
        )
    second = None
    if "dynamic_weighting" in strategies:
        second = config["strategies"].get("dynamic_weighting", {}).get("second_dataset")
    if second == emotion:
        return (
            "config key strategies.dynamic_weighting.second_dataset must differ from "
            f"emotion_dataset ({emotion}); set it to another emotion dataset or null."
        )
    embedding = config["embedding"]
    if embedding["weights"] == "random" and not embedding["allow_random_weights"]:
        return (
            "config key embedding.weights is 'random' but embedding.allow_random_weights is "
            "false: set it to true to accept untrained embeddings (the outputs are marked)."
        )
    return None
