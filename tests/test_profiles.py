"""The cluster profiles plan the whole DAG with the resources they promise (``-m pipeline``).

Dry runs only: the SLURM profile is run for real by ``test_slurm.py``. The Kubernetes profile
cannot run here, so its dry run swaps the S3 bucket for a local directory (storage plugin
``fs``) holding ``data/``: Snakemake then plans every job as on a cluster without a shared
filesystem, each input retrieved from and each output sent to storage, after the executor and
S3 plugins have accepted the profile's keys.
"""

import re

import pytest
from pipeline_support import DATA, scratch_workflow, snakemake

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}"),
]

#: Every rule the default configuration plans (evaluate_model, evaluation_tables and
#: evaluation_comparison run only with evaluation.datasets; test_dry_runs plans them).
EVERY_RULE = {
    "download_fairface",
    "ingest_ferplus",
    "ingest_fairface",
    "align_faces",
    "alignment_report",
    "download_facenet_weights",
    "convert_facenet_weights",
    "embed_faces",
    "render_fairface_domain",
    "group_labels",
    "audit_dataset",
    "augment_demographics",
    "train_model",
    "postprocess_predictions",
    "fairness_tables",
    "compare_strategies",
    "gradcam_maps",
    "fairness_report",
}


def planned_jobs(dry_run: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run prints."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        resources = re.search(r"\n\s+resources: (.*)", block)
        if rule and rule.group(1) != "all":
            pairs = resources.group(1).split(", ") if resources else []
            jobs.append((rule.group(1), dict(pair.split("=", 1) for pair in pairs)))
    return jobs


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    return scratch_workflow(tmp_path_factory.mktemp("profiles"))


def test_slurm_profile_sends_training_to_the_gpu_partition(workflow):
    jobs = planned_jobs(snakemake(workflow, "--workflow-profile", "slurm", "-n").stdout)
    assert {rule for rule, _ in jobs} == EVERY_RULE
    for rule, resources in jobs:
        if rule.startswith("download_"):
            continue  # local rules: no SLURM job
        if rule == "train_model":
            assert (resources["slurm_partition"], resources["gpu"]) == ("gpu", "1")
        else:
            assert resources["slurm_partition"] == "cpu"
            assert "gpu" not in resources
        assert int(resources["mem_mb"]) >= 1000
        assert int(resources["runtime"]) >= 10


def test_kubernetes_profile_plans_everything_through_storage(workflow, tmp_path):
    storage = tmp_path / "bucket"
    storage.mkdir()
    (storage / "data").symlink_to(workflow / "data")
    result = snakemake(
        workflow,
        "--workflow-profile",
        "kubernetes",
        "-n",
        "--default-storage-provider",
        "fs",
        "--default-storage-prefix",
        str(storage),
    )
    jobs = planned_jobs(result.stdout)
    assert {rule for rule, _ in jobs} == EVERY_RULE
    assert "(retrieve from storage)" in result.stdout
    assert "(send to storage)" in result.stdout
    # Package modules travel with the deployed sources, not through the bucket.
    assert re.search(r"input: .*\bscripts/fairfer/training/trainer\.py\b(?! \()", result.stdout)
    for rule, resources in jobs:
        assert int(resources["disk_mb"]) > 0
        if rule == "train_model":
            assert (resources["gpu"], resources["gpu_manufacturer"]) == ("1", "nvidia")
