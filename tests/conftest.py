"""Make the ``fairfer`` package importable from ``scripts/`` without installing it, and share
one finished small pipeline run between the end-to-end tests of a session."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory) -> pathlib.Path:
    """A finished run of config/ci.yaml in a scratch copy of the workflow; tests only read it
    (or copy it before changing anything)."""
    from pipeline_support import reuse_downloaded_weights, scratch_workflow, snakemake

    workdir = scratch_workflow(tmp_path_factory.mktemp("pipeline"))
    reuse_downloaded_weights(workdir)
    snakemake(workdir)
    return workdir
