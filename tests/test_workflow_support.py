"""The workflow's planning checks and rerun tracking, as package functions."""

from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config

from fairfer.config_checks import extra_attributes, run_problem
from fairfer.datasets.layouts import dataset_path_errors, missing_dataset_error
from fairfer.rule_inputs import package_modules

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def config(**override) -> dict:
    base = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    update_config(base, override)
    return base


def modules(rule: str) -> set[str]:
    found = package_modules(SCRIPTS / f"{rule}.py", SCRIPTS / "fairfer")
    return {path.relative_to(SCRIPTS).as_posix() for path in found}


def test_rerun_tracking_follows_the_dotted_modules_a_rule_imports():
    # Direct imports, their packages' __init__ and what those modules import in turn.
    assert {
        "fairfer/__init__.py",
        "fairfer/training/__init__.py",
        "fairfer/training/trainer.py",
        "fairfer/training/data.py",
        "fairfer/training/models.py",
        "fairfer/schemas.py",
        "fairfer/images.py",
    } <= modules("train_model")
    assert not any(name.startswith("fairfer/report/") for name in modules("train_model"))
    assert {
        "fairfer/report/html.py",
        "fairfer/report/plots.py",
        "fairfer/fairness/tables.py",
    } <= modules("fairness_report")


def test_package_modules_resolve_from_imports_of_subpackages_and_names(tmp_path):
    package = tmp_path / "fairfer"
    (package / "phase").mkdir(parents=True)
    for name in ("__init__.py", "phase/__init__.py", "phase/a.py", "phase/b.py", "top.py"):
        (package / name).write_text("")
    (package / "phase/a.py").write_text("from fairfer.top import X\n")
    script = tmp_path / "rule.py"
    script.write_text("from fairfer.phase import a\nimport fairfer.phase.b\n")
    found = {p.relative_to(package).as_posix() for p in package_modules(script, package)}
    assert found == {"__init__.py", "phase/__init__.py", "phase/a.py", "phase/b.py", "top.py"}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"training": {"strategies": ["reweighting"]}}, "must include 'baseline'"),
        ({"training": {"strategies": ["baseline", "magic"]}}, "names ['magic']"),
        ({"training": {"models": ["vgg"]}}, "training.models names ['vgg']"),
        ({"fairness": {"attributes": ["country"]}}, "provides only race, gender and age"),
        ({"evaluation": {"datasets": ["ferplus"]}}, "lists the emotion dataset ferplus"),
        (
            {
                "training": {"strategies": ["baseline", "postprocess_recall"]},
                "strategies": {"postprocess_recall": {"base": "group_dro"}},
            },
            "strategies.postprocess_recall.base is 'group_dro'",
        ),
    ],
)
def test_cross_key_problems_are_one_paragraph(override, expected):
    problem = run_problem(config(**override))
    assert expected in problem and "\n" not in problem


def test_shipped_config_has_no_cross_key_problem_and_extra_attributes_are_found():
    assert run_problem(config()) is None
    custom = config(
        emotion_dataset="generic",
        fairness={"attributes": ["race", ["gender", "country"]]},
        strategies={"reweighting": {"groups": ["skin_tone"]}},
    )
    assert run_problem(custom) is None
    assert extra_attributes(custom) == ["country", "skin_tone"]


def test_missing_datasets_name_the_key_the_path_and_the_layout(tmp_path):
    settings = config(emotion_dataset="rafdb", datasets={"rafdb": {"path": str(tmp_path / "raf")}})
    message = missing_dataset_error(settings, "rafdb")
    assert "datasets.rafdb.path" in message and "EmoLabel/list_patition_label.txt" in message
    (tmp_path / "raf/EmoLabel").mkdir(parents=True)
    (tmp_path / "raf/EmoLabel/list_patition_label.txt").touch()
    assert missing_dataset_error(settings, "rafdb") is None
    settings["datasets"]["fairface"]["labels"]["train"] = str(tmp_path / "nope.csv")
    errors = dataset_path_errors(settings, ["rafdb"])
    assert f"{tmp_path}/nope.csv (config key datasets.fairface.labels.train)" in errors
