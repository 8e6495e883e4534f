"""One finished small pipeline run shared between the end-to-end tests of a session.

The ``fairfer`` package is the installed one (``envs/install.sh`` installs it in editable
mode); rule scripts are loaded from their files (``fairfer.rule_inputs.rule_script``).
"""

import pathlib

import pytest


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory) -> pathlib.Path:
    """A finished run of config/ci.yaml in a scratch copy of the workflow; tests only read it
    (or copy it before changing anything)."""
    from pipeline_support import reuse_downloaded_weights, scratch_workflow, snakemake

    workdir = scratch_workflow(tmp_path_factory.mktemp("pipeline"))
    reuse_downloaded_weights(workdir)
    snakemake(workdir)
    return workdir
