"""Pure functions of the rule scripts and the Parquet schema helpers."""

import io
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fairfer.rule_inputs import rule_script
from fairfer.schemas import ALIGNED, MANIFEST, read_checked, write_parquet

summarise = rule_script("alignment_report").summarise
headline_metrics = rule_script("compare_strategies").headline_metrics


def test_alignment_summary_reconciles_statuses():
    statuses = pd.DataFrame(
        {
            "dataset": ["a", "a", "a", "a", "b"],
            "status": ["ok", "ok", "fallback", "rejected", "ok"],
            "detection_pass": [1, 2, None, None, 1],
        }
    )
    summary = summarise(statuses).set_index("dataset")
    assert summary.loc["a", "images"] == 4
    assert summary.loc["a", "detected_by_retry"] == 1
    assert summary.loc["b", "detected_by_retry"] == 0
    assert summary.loc["a", "detected_rate"] == pytest.approx(2 / 4)
    assert summary.loc["b", "rejected"] == 0


def test_undecodable_and_faceless_images_become_rejects():
    from align_faces import align_rows

    class NoFaceAligner:
        def align(self, images):
            return [None for _ in images]

    buffer = io.BytesIO()
    Image.new("L", (48, 48), 128).save(buffer, format="PNG")
    rows = pa.table(
        {
            "image_id": ["good", "broken", "empty"],
            "dataset": ["d"] * 3,
            "split": ["train"] * 3,
            "image": [buffer.getvalue(), buffer.getvalue()[:40], b""],
        }
    )
    records = align_rows(rows, NoFaceAligner())
    assert [r["status"] for r in records] == ["rejected"] * 3
    assert records[0]["reject_reason"] == "no face found"
    assert records[1]["reject_reason"].startswith("undecodable image")
    assert records[2]["reject_reason"].startswith("undecodable image")
    assert pa.Table.from_pylist(records, schema=ALIGNED).num_rows == 3


def test_labelled_split_keeps_only_majority_labelled_rows():
    from fairfer.training.data import labelled_split

    frame = pd.DataFrame(
        {"split": ["test", "test", "train"], "label_status": ["ok", "no_majority", "ok"]}
    )
    assert len(labelled_split(frame, "test")) == 1


def _comparison() -> pd.DataFrame:
    rows = []
    for strategy, delta in (("baseline", 0.0), ("reweighting", -0.02)):
        for metric in ("overall_accuracy", "accuracy_gap", "spd_mean"):
            rows.append(
                {
                    "strategy": strategy,
                    "attribute": "race",
                    "metric": metric,
                    "estimate": 0.8 + delta,
                    "estimate_ci_low": 0.78 + delta,
                    "estimate_ci_high": float("nan"),
                    "delta": delta,
                    "delta_ci_low": delta - 0.01,
                    "delta_ci_high": delta + 0.01,
                }
            )
    return pd.DataFrame(rows)


def test_headline_metrics_nest_strategy_and_attribute():
    metrics = headline_metrics(_comparison())
    race = metrics["reweighting"]["race"]
    assert race["overall_accuracy"] == 0.78
    assert race["accuracy_gap_delta"] == -0.02
    assert race["accuracy_gap_delta_ci_high"] == pytest.approx(-0.01)
    assert race["overall_accuracy_ci_high"] is None
    assert "spd_mean" not in race  # only the headline figures are tracked


def test_dvc_reads_the_metrics_file(tmp_path):
    import json
    import subprocess

    (tmp_path / "metrics.json").write_text(json.dumps(headline_metrics(_comparison())))
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    shown = subprocess.run(
        [*dvc, "metrics", "show", "--json", "metrics.json"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    )
    data = json.loads(shown.stdout)[""]["data"]["metrics.json"]["data"]
    assert data["reweighting"]["race"]["overall_accuracy"] == 0.78


def test_write_parquet_is_atomic_and_enforces_the_schema(tmp_path):
    frame = pd.DataFrame({"image_id": ["x"], "dataset": ["d"]})
    with pytest.raises(ValueError, match="missing"):
        write_parquet(frame, tmp_path / "m.parquet", MANIFEST)
    assert not (tmp_path / "m.parquet").exists()

    table = pa.table({"image_id": ["x"]})
    pq.write_table(table, tmp_path / "old.parquet")
    with pytest.raises(ValueError, match="rerun the rule"):
        read_checked(tmp_path / "old.parquet", MANIFEST)


def test_composition_plot_is_written(tmp_path):
    from fairfer.report.plots import plot_composition

    composition = pd.DataFrame(
        {
            "attribute": ["race", "race", "gender"],
            "split": "test",
            "group": ["White", "Black", "Male"],
            "count": [5, 3, 8],
            "share": [0.6, 0.4, 1.0],
            "abstained": [1, 0, 2],
            "abstained_share": [0.2, 0.0, 0.25],
        }
    )
    path = plot_composition(composition, tmp_path / "composition.png", title="test")
    assert path.stat().st_size > 1000


def test_fairface_archive_with_a_wrong_checksum_leaves_no_output(tmp_path):
    import hashlib
    import zipfile

    from download_fairface import download

    from fairfer.errors import ChecksumMismatchError

    source = tmp_path / "fairface.zip"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("train/1.jpg", b"jpeg")
        archive.writestr("val/1.jpg", b"jpeg")
    actual = hashlib.sha256(source.read_bytes()).hexdigest()
    expected = "ab" * 32
    archive_out = tmp_path / "out" / "fairface.zip"
    images_out = tmp_path / "out" / "images"
    with pytest.raises(ChecksumMismatchError) as error:
        download(str(source), expected, archive_out, images_out)
    for named in (str(source), expected, actual, "datasets.fairface.archive.sha256"):
        assert named in str(error.value)
    leftovers = list((tmp_path / "out").rglob("*")) if (tmp_path / "out").exists() else []
    assert leftovers == []

    download(str(source), actual, archive_out, images_out)
    assert (images_out / "train" / "1.jpg").read_bytes() == b"jpeg"


def test_report_shows_each_models_first_seed():
    from fairness_report import first_seed

    runs = pd.DataFrame(
        {"model": ["cnn", "cnn", "mlp", "mlp"], "seed": [1, 2, 0, 2], "strategy": ["b"] * 4}
    )
    assert first_seed(runs)[["model", "seed"]].values.tolist() == [["cnn", 1], ["mlp", 0]]
    assert first_seed(runs.drop(columns="seed")).equals(runs.drop(columns="seed"))
