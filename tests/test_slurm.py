"""The small real run through the SLURM profile on a real single-node cluster (``-m slurm``).

``tests/slurm/cluster.sh`` starts munged, slurmctld and slurmd on this machine (installing the
Debian packages when missing; needs root), with partitions named as in
``workflow/profiles/slurm`` and one stand-in GPU, so the profile runs unchanged: training jobs
go to the ``gpu`` partition with ``--gpus=1`` and run on the CPU. The only additions are for
this cluster, which has no accounting database: job status comes from ``squeue``, and status
checks are frequent. The outputs must equal those of the session's local run byte for byte, a
failing job must fail the workflow, and the daemons are stopped whatever happens.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from pipeline_support import (
    DATA,
    ROOT,
    SNAKEMAKE,
    ci_training_runs,
    environment,
    result_files,
    reuse_downloaded_weights,
    scratch_workflow,
)

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}"),
    pytest.mark.skipif(os.geteuid() != 0, reason="starting SLURM daemons needs root"),
]

# The test cluster has no slurmdbd (sacct fails); squeue keeps finished jobs for MinJobAge.
TEST_CLUSTER_OPTIONS = [
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--seconds-between-status-checks",
    "2",
]
# squeue columns of a job: the plugin names the rule in the job's comment.
JOB_FIELDS = "partition:|,tres-per-job:|,state:|,comment:"


@pytest.fixture(scope="module")
def slurm_environment():
    """Environment variables pointing the SLURM commands at a throw-away cluster."""
    # Not under pytest's 0700 temporary directory: munged (user munge) must reach its socket.
    run_dir = Path(tempfile.mkdtemp(prefix="fairfer-slurm-"))
    script = ROOT / "tests" / "slurm" / "cluster.sh"
    try:
        subprocess.run(["bash", script, "up", run_dir], check=True, timeout=600)
        yield {**environment(), "SLURM_CONF": str(run_dir / "slurm.conf")}
    finally:
        subprocess.run(["bash", script, "down", run_dir], check=True, timeout=120)
        shutil.rmtree(run_dir)


def slurm_snakemake(
    workdir: Path, env: dict[str, str], *args: str, limit: int = 2400
) -> subprocess.CompletedProcess:
    # The plugin can keep polling a cluster that stopped answering: bound every call.
    command = ["timeout", "-k", "10", str(limit), *SNAKEMAKE, "--workflow-profile", "slurm"]
    command += ["--configfile", "config/ci.yaml", *TEST_CLUSTER_OPTIONS, *args]
    return subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=limit + 60
    )


@pytest.fixture(scope="module")
def slurm_run(slurm_environment, tmp_path_factory) -> Path:
    workdir = scratch_workflow(tmp_path_factory.mktemp("slurm_run"))
    reuse_downloaded_weights(workdir)
    result = slurm_snakemake(workdir, slurm_environment)
    if result.returncode != 0:
        raise AssertionError(f"SLURM run failed:\n{result.stderr[-8000:]}")
    return workdir


def test_slurm_run_equals_the_local_run(slurm_run, ci_run):
    log = max((slurm_run / ".snakemake" / "log").glob("*.snakemake.log")).read_text()
    assert "Job" in log and "has been submitted with SLURM jobid" in log
    slurm_outputs, local_outputs = result_files(slurm_run), result_files(ci_run)
    assert sorted(slurm_outputs) == sorted(local_outputs)
    differing = [path for path in local_outputs if slurm_outputs[path] != local_outputs[path]]
    assert differing == []


def test_training_jobs_ran_on_the_gpu_partition_with_a_gpu(slurm_run, slurm_environment):
    # Finished jobs stay listed for the cluster's MinJobAge (an hour).
    listing = subprocess.run(
        ["squeue", "--states=all", "--noheader", "-O", JOB_FIELDS],
        env=slurm_environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    jobs = [line.split("|") for line in listing.splitlines()]
    training = [job for job in jobs if job[3].startswith("rule_train_model")]
    assert len(training) == ci_training_runs(slurm_run)
    for partition, gpus, state, _ in training:
        assert (partition, gpus, state) == ("gpu", "gres:gpu:1", "COMPLETED")
    others = [job for job in jobs if not job[3].startswith("rule_train_model")]
    assert others and {(job[0], job[2]) for job in others} == {("cpu", "COMPLETED")}


def test_a_failing_job_fails_the_workflow(slurm_run, slurm_environment, tmp_path):
    workdir = tmp_path / "failing"
    shutil.copytree(slurm_run, workdir, symlinks=True)
    # A corrupt intermediate: the job that reads it fails on the cluster.
    (workdir / "results" / "group_labels" / "ferplus.parquet").write_bytes(b"not parquet")
    target = "results/augmented/ferplus/augmentation.parquet"
    # The target goes before --forcerun, whose list would swallow it (and run `all` instead).
    result = slurm_snakemake(
        workdir, slurm_environment, target, "--forcerun", "augment_demographics", limit=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-4000:]
    assert "failed, SLURM status is: 'FAILED'" in output
    assert not (workdir / target).exists()
