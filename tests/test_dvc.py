"""DVC over the Snakemake workflow, end to end on the small real run (``pytest -m pipeline``).

A scratch git + DVC project is made from the session's finished run (``ci_run``), with
``config/ci.yaml`` merged into ``config/config.yaml`` because the stages' commands and params
use the default config file, and a local-path remote. The tests then follow a user: record the
finished run with ``dvc repro`` (no job reruns), ``dvc push``, ``git clone`` elsewhere,
``tools/pull_results.sh``, and check that Snakemake plans nothing and ``dvc status`` is clean,
that ``dvc exp run`` with a changed training parameter reruns only training and the tables,
that metrics and plots render, and that editing a package module reruns the rules importing it.
"""

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pipeline_support import DATA, ROOT, environment, result_files
from snakemake.utils import update_config

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}"),
]

PROJECT_FILES = ("dvc.yaml", "data.dvc", ".dvcignore", ".gitignore", "tools")
# The stages' outputs (dvc.yaml), whose files must come back unchanged.
EMBEDDINGS_OUTPUTS = ("results/manifests", "results/aligned", "results/embeddings")


def run(workdir: Path, *command: str, timeout: int = 1800) -> str:
    result = subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=environment()
    )
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{output[-6000:]}")
    return output


def git(workdir: Path, *args: str) -> str:
    return run(workdir, "git", *args)


def identify(workdir: Path) -> None:
    """A committer for git and for the commits `dvc exp run` makes."""
    git(workdir, "config", "user.name", "fairfer test")
    git(workdir, "config", "user.email", "test@example.org")


def modification_times(workdir: Path, *tops: str) -> dict[str, int]:
    return {
        str(path.relative_to(workdir)): path.stat().st_mtime_ns
        for top in tops
        for path in (workdir / top).rglob("*")
        if path.is_file()
    }


@dataclass
class Project:
    workdir: Path
    remote: Path
    repro_output: str
    mtimes_before_repro: dict[str, int]


@pytest.fixture(scope="module")
def project(ci_run, tmp_path_factory) -> Project:
    """The finished run as a git + DVC project, recorded with `dvc repro` and pushed."""
    workdir = tmp_path_factory.mktemp("dvc_project")
    shutil.copytree(ci_run, workdir, symlinks=True, dirs_exist_ok=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, workdir / name)
        else:
            shutil.copy2(source, workdir / name)
    shutil.copytree(ROOT / ".dvc", workdir / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    update_config(config, yaml.safe_load((workdir / "config" / "ci.yaml").read_text()))
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # DVC hashes real files: hard links to the shared datasets instead of symlinks.
    for dataset in ("ferplus", "fairface"):
        (workdir / "data" / dataset).unlink()
        shutil.copytree(DATA / dataset, workdir / "data" / dataset, copy_function=hard_link)

    remote = tmp_path_factory.mktemp("dvc_remote")
    git(workdir, "init", "--quiet")
    identify(workdir)
    run(workdir, "dvc", "remote", "modify", "storage", "url", str(remote))
    run(workdir, "dvc", "commit", "--force", "data.dvc")
    # Caching rewrote data/ (new files, new directory times); a project that tracked its data
    # before the run would have the old times, so restore them.
    for path in (workdir / "data").rglob("*"):
        original = (DATA / path.relative_to(workdir / "data")).stat()
        os.utime(path, ns=(original.st_atime_ns, original.st_mtime_ns))
    mtimes = modification_times(workdir, "results", "resources/facenet")
    repro_output = run(workdir, "dvc", "repro")
    git(workdir, "add", "-A")
    git(workdir, "commit", "--quiet", "-m", "small run")
    run(workdir, "dvc", "push")
    return Project(workdir, remote, repro_output, mtimes)


def hard_link(source: str, destination: str) -> None:
    Path(destination).hardlink_to(source)


@pytest.fixture(scope="module")
def clone(project, tmp_path_factory) -> Path:
    """A fresh clone of the project with everything pulled from the remote."""
    workdir = tmp_path_factory.mktemp("dvc_clone") / "fairfer"
    git(project.workdir.parent, "clone", "--quiet", str(project.workdir), str(workdir))
    for name in ("workflow", "scripts", "config", "envs"):
        assert (workdir / name).is_dir(), f"{name}/ is not committed"
    identify(workdir)
    run(workdir, "tools/pull_results.sh")
    return workdir


def test_repro_records_a_finished_snakemake_run_without_rerunning_jobs(project):
    for stage in ("embeddings", "group_labels", "models", "fairness"):
        assert f"Running stage '{stage}'" in project.repro_output
    assert project.repro_output.count("Nothing to be done") == 4
    assert modification_times(project.workdir, "results", "resources/facenet") == (
        project.mtimes_before_repro
    )
    assert "up to date" in run(project.workdir, "dvc", "status")
    # A second repro has nothing to do at all.
    assert "didn't change, skipping" in run(project.workdir, "dvc", "repro")


def test_pulled_clone_plans_nothing_and_is_clean(project, clone):
    assert result_files(clone) == result_files(project.workdir)
    planned = run(clone, "snakemake", "-n")
    assert "Nothing to be done" in planned
    assert "missing provenance" not in planned
    assert "Data and pipelines are up to date" in run(clone, "dvc", "status")


def test_exp_run_with_a_training_parameter_reruns_only_training_and_tables(clone):
    upstream = modification_times(clone, *EMBEDDINGS_OUTPUTS, "results/group_labels")
    augmented = modification_times(clone, "results/augmented")
    models = modification_times(clone, "results/models")

    output = run(clone, "dvc", "exp", "run", "-S", "config/config.yaml:models.compact_cnn.epochs=1")

    for skipped in ("embeddings", "group_labels"):
        assert f"Stage '{skipped}' didn't change, skipping" in output
    for rerun in ("models", "fairness"):
        assert f"Running stage '{rerun}'" in output
    assert "rule train_model:" in output
    for not_rerun in ("augment_demographics", "group_labels", "align_faces"):
        assert f"rule {not_rerun}:" not in output
    assert modification_times(clone, *EMBEDDINGS_OUTPUTS, "results/group_labels") == upstream
    assert modification_times(clone, "results/augmented") == augmented
    changed = modification_times(clone, "results/models")
    cnn = [path for path in models if path.startswith("results/models/compact_cnn/")]
    assert cnn and all(changed[path] != models[path] for path in cnn)
    mlp = [path for path in models if path.startswith("results/models/embedding_mlp/")]
    assert mlp and all(changed[path] == models[path] for path in mlp)
    history = clone / "results/models/compact_cnn/baseline/seed-0/history.csv"
    history = history.read_text().splitlines()
    assert len(history) == 2  # header and the one epoch
    assert "Nothing to be done" in run(clone, "snakemake", "-n")


def test_metrics_and_plots_show_the_fairness_summary(clone):
    metrics = json.loads(run(clone, "dvc", "metrics", "show", "--json"))
    figures = next(iter(metrics.values()))["data"]["results/metrics.json"]["data"]
    assert set(figures) == {"compact_cnn", "embedding_mlp", "group_labels"}
    assert 0 <= figures["compact_cnn"]["baseline"]["race"]["worst_group_accuracy"] <= 1
    # The inferred labels' accuracy where used, tracked beside the models' figures.
    assert 0 < figures["group_labels"]["attributes"]["race"]["in_domain"]["accuracy"] <= 1
    run(clone, "dvc", "plots", "show", "--out", "plots")
    page = (clone / "plots" / "index.html").read_text()
    figures = sorted((clone / "results/report/figures").glob("*.png"))
    assert figures
    # The composition and every report figure, copied next to the page.
    assert len(list((clone / "plots" / "static").glob("*.png"))) == len(figures) + 1
    assert "composition" in page and figures[0].stem in page


def test_editing_a_package_module_reruns_the_rules_that_import_it(project):
    module = project.workdir / "scripts" / "fairfer" / "training" / "trainer.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# an edit\n")
        planned = run(project.workdir, "snakemake", "-n")
        assert "rule train_model:" in planned
        assert "rule fairness_tables:" in planned
        for unaffected in ("align_faces", "embed_faces", "augment_demographics"):
            assert f"rule {unaffected}:" not in planned
        assert "changed deps" in run(project.workdir, "dvc", "status", "models")
    finally:
        module.write_text(original)


def test_commit_records_the_same_lock_as_repro(project):
    """After a run outside DVC (say on a cluster), `dvc commit -f` records it like repro."""
    lock = project.workdir / "dvc.lock"
    recorded = lock.read_text()
    lock.unlink()
    try:
        run(project.workdir, "dvc", "commit", "--force")
        assert yaml.safe_load(lock.read_text()) == yaml.safe_load(recorded)
    finally:
        lock.write_text(recorded)
