"""Pure functions of the rule scripts and the Parquet schema helpers."""

import io
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from alignment_report import summarise  # noqa: E402
from compare_strategies import headline_metrics  # noqa: E402

from fairfer.schemas import ALIGNED, MANIFEST, read_checked, write_parquet  # noqa: E402


def test_alignment_summary_reconciles_statuses():
    statuses = pd.DataFrame(
        {"dataset": ["a", "a", "a", "b"], "status": ["ok", "fallback", "rejected", "ok"]}
    )
    summary = summarise(statuses).set_index("dataset")
    assert summary.loc["a", "images"] == 3
    assert summary.loc["a", "detected_rate"] == pytest.approx(1 / 3)
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
    from fairfer.training_data import labelled_split

    frame = pd.DataFrame(
        {"split": ["test", "test", "train"], "label_status": ["ok", "no_majority", "ok"]}
    )
    assert len(labelled_split(frame, "test")) == 1


def test_headline_metrics_nest_model_strategy_and_attribute():
    aggregated = pd.DataFrame(
        {
            "model": ["cnn"],
            "strategy": ["baseline"],
            "attribute": ["race"],
            "overall_accuracy_mean": [0.8],
            "overall_accuracy_std": [0.01],
            "dp_difference_max_mean": [float("nan")],
        }
    )
    metrics = headline_metrics(aggregated)
    figures = metrics["cnn"]["baseline"]["race"]
    assert figures["overall_accuracy"] == 0.8 and figures["overall_accuracy_std"] == 0.01
    assert figures["dp_difference_max"] is None and figures["accuracy_gap"] is None


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
    from fairfer.plots import plot_composition

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
