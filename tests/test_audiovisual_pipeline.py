"""The audio-visual branch end to end: a CREMA-D in the release layout (real metadata, clips
built from real FairFace faces and synthesised speech, tests/cremad_layout.py) through the
per-modality fairness tables, the modality comparison, the crowd's accuracy and the report."""

import json
from pathlib import Path

import pandas as pd
import pytest
from cremad_layout import BAD_MEDIA, build_cremad, varied_actors
from pipeline_support import DATA, reuse_fairface, scratch_workflow, snakemake

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.skipif(
        not (DATA / "crema-d" / "VideoDemographics.csv").is_file(),
        reason=f"real CREMA-D metadata not found at {DATA / 'crema-d'}",
    ),
]

MODELS = ["visual_mlp", "audio_cnn", "fusion_early", "fusion_late"]
STRATEGIES = ["baseline", "group_dro", "postprocess_recall"]
FIXTURE_CONFIG = """datasets:
  cremad:
    frames_per_clip: 3
    # 26 actors: enough test actors for groups in a small fixture.
    split_fractions: {train: 0.5, valid: 0.25, test: 0.25}
training:
  strategies: [baseline, group_dro, postprocess_recall]
  seeds: [0]
"""


@pytest.fixture(scope="module")
def cremad_run(tmp_path_factory, ci_run) -> Path:
    """24 actors x 2 sentences x 6 emotions, plus the broken clips, with FairFace's ingest,
    alignment and embeddings reused from the CI run."""
    workdir = scratch_workflow(tmp_path_factory.mktemp("pipeline_cremad"))
    shared = DATA / "crema-d"
    build_cremad(
        shared,
        DATA / "fairface",
        workdir / "data" / "crema-d",
        actors=varied_actors(shared, 24),
        sentences=["TIE", "IOM"],
    )
    reuse_fairface(ci_run, workdir)
    (workdir / "config" / "cremad_fixture.yaml").write_text(FIXTURE_CONFIG)
    snakemake(
        workdir,
        "--configfile",
        "config/ci.yaml",
        "config/cremad.yaml",
        "config/cremad_fixture.yaml",
        # A flag between: --configfile would take the next word for one more file.
        "--printshellcmds",
    )
    return workdir


def test_clips_and_frames_reconcile(cremad_run):
    report = json.loads((cremad_run / "results/clips/cremad/report.json").read_text())
    listed = len(pd.read_csv(DATA / "crema-d" / "SentenceFilenames.csv"))
    assert report["clips_listed"] == listed
    rejected = sum(report["clips_rejected_at_ingest"].values())
    assert rejected + report["clips_not_sampled"] + report["clips_decoded"] == listed
    assert sum(report["clips_by_status"].values()) == report["clips_decoded"]
    assert report["clips_rejected_at_ingest"]["corrupt_video"] == 1
    statuses = pd.read_parquet(cremad_run / "results/clips/cremad/inputs.parquet")
    status = statuses.set_index("image_id")["status"]
    assert status[BAD_MEDIA["no_audio"]] == "no_audio"
    assert status[BAD_MEDIA["no_face"]] == "no_face"
    assert status[BAD_MEDIA["audio_too_short"]] == "audio_too_short"
    assert status[BAD_MEDIA["resampled"]] == "ok"
    audio = pd.read_parquet(cremad_run / "results/audio/cremad.parquet").set_index("clip_id")
    assert audio.loc[BAD_MEDIA["resampled"], "sample_rate_in"] == 22050
    assert audio.loc[BAD_MEDIA["no_audio"], "source"] == "video"
    # Per frame: every sampled frame is in the frames manifest, aligned and embedded.
    frames = pd.read_parquet(
        cremad_run / "results/manifests/cremad_frames.parquet", columns=["image_id"]
    )
    assert len(frames) == report["frames_sampled"] == report["frames_embedded"]
    assert sum(report["frames_by_alignment_status"].values()) == report["frames_sampled"]
    assert report["frames_with_face"] == report["frames_by_alignment_status"]["ok"]


def test_groups_come_from_the_metadata(cremad_run):
    demographics = pd.read_csv(DATA / "crema-d" / "VideoDemographics.csv", dtype=str)
    sex = demographics.set_index("ActorID")["Sex"]
    predictions = pd.read_parquet(
        cremad_run / "results/predictions/audio_cnn/baseline/seed-0.parquet"
    )
    assert (
        (
            predictions[[f"{a}_source" for a in ("race", "gender", "age", "ethnicity")]]
            == "ground_truth"
        )
        .all()
        .all()
    )
    assert (predictions["gender"] == predictions["image_id"].str[:4].map(sex)).all()
    manifest = pd.read_parquet(
        cremad_run / "results/manifests/cremad.parquet", columns=["subject_id", "split"]
    )
    assert manifest.groupby("subject_id")["split"].nunique().max() == 1


def test_every_modality_has_its_tables_and_fusion_is_not_worse(cremad_run):
    for model in MODELS:
        for strategy in STRATEGIES:
            folder = cremad_run / f"results/fairness/{model}/{strategy}/seed-0"
            summary = pd.read_parquet(folder / "summary.parquet")
            assert {"race", "gender", "age", "ethnicity", "race x gender"} <= set(
                summary["attribute"]
            )
    comparison = pd.read_parquet(cremad_run / "results/fairness/modality_comparison.parquet")
    assert set(comparison["reference"]) == {"audio_cnn", "visual_mlp"}
    late = comparison[
        (comparison["modality"] == "fusion_late")
        & (comparison["metric"] == "overall_accuracy")
        & (comparison["attribute"] == "gender")
    ]
    # Not below either single modality beyond the paired interval's noise.
    assert len(late) == 2 * len(STRATEGIES)
    assert (late["delta_ci_high"] >= 0).all()
    # The audio model learns the synthesised prosody; the FairFace faces show no emotion.
    accuracy = comparison[
        (comparison["metric"] == "overall_accuracy") & (comparison["attribute"] == "gender")
    ]
    audio = accuracy[accuracy["reference"] == "audio_cnn"]["baseline"].iloc[0]
    assert audio > 0.6
    # Post-processing applies to the late fusion too, with the metadata's groups.
    report = json.loads(
        (
            cremad_run / "results/models/fusion_late/postprocess_recall/seed-0/postprocess.json"
        ).read_text()
    )
    assert report["group_labels"] == ["ground_truth"]


def test_crowd_reference_and_report(cremad_run):
    crowd = pd.read_parquet(cremad_run / "results/fairness/crowd_accuracy.parquet")
    release = crowd[(crowd["scope"] == "release") & (crowd["group"] == "all")].set_index("modality")
    assert (release["clips"] == 7442).all()
    # Majority votes of the release's raters: audio < visual < audio-visual, as published.
    assert release.loc["audio", "recognition"] < release.loc["visual", "recognition"]
    assert release.loc["visual", "recognition"] < release.loc["audio-visual", "recognition"]
    assert "test" in set(crowd["scope"])
    page = (cremad_run / "results/report/fairness_report.html").read_text()
    assert "Modality comparison" in page and "crowd" in page
    metrics = json.loads((cremad_run / "results/metrics.json").read_text())
    assert set(MODELS) <= set(metrics)
