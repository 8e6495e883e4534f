"""Auditing models fairfer did not train, end to end: a model fairfer trained, exported to
TorchScript and to ONNX and given back as a user's model, gets the same tables as its own
predictions handed over as a file; post-processing applies to audited models too."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from pipeline_support import DATA, snakemake

from fairfer.training.data import decode_images, emotion_rows, labelled_split
from fairfer.training.models import ModelSpec, build_network
from fairfer.training.trainer import Runtime, predict_proba

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not found at {DATA}"),
]
NATIVE = "results/models/compact_cnn/baseline/seed-0/model.pt"
AUDITED = ["native_file", "cnn_torchscript", "cnn_onnx"]


class Logits(torch.nn.Module):
    """fairfer's network returning only the emotion logits, as a user's model would."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network(inputs)[0]


def native_network(run: Path) -> tuple[torch.nn.Module, list[str]]:
    checkpoint = torch.load(run / NATIVE, map_location="cpu", weights_only=False)
    network = build_network(
        ModelSpec.from_config(checkpoint["model_params"]), n_classes=len(checkpoint["classes"])
    )
    network.load_state_dict(checkpoint["network"])
    return network.eval(), checkpoint["classes"]


def predictions_file(run: Path, split: str, network, classes, path: Path) -> None:
    """fairfer's own float32 predictions of a split, as a user's predictions file (CSV)."""
    rows = labelled_split(emotion_rows(run / "results/manifests/ferplus.parquet", None), split)
    images = decode_images(rows["image"].tolist(), size=48, channels=1)
    runtime = Runtime(device=torch.device("cpu"), mixed_precision=False)
    probabilities = predict_proba(network, images, runtime=runtime)
    frame = pd.DataFrame(probabilities, columns=classes)
    frame.insert(0, "emotion", np.asarray(classes)[probabilities.argmax(1)])
    frame.insert(0, "image_id", rows["image_id"].to_numpy())
    frame.to_csv(path, index=False)


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory, ci_run) -> Path:
    workdir = tmp_path_factory.mktemp("pipeline_audit")
    shutil.copytree(ci_run, workdir, symlinks=True, dirs_exist_ok=True)
    network, classes = native_network(workdir)
    models = workdir / "audited"
    models.mkdir()
    example = torch.zeros(2, 1, 48, 48)
    torch.jit.trace(Logits(network), example).save(str(models / "cnn.pt"))
    torch.onnx.export(
        Logits(network), (example,), str(models / "cnn.onnx"), input_names=["image"],
        dynamic_axes={"image": {0: "n"}}, dynamo=False,
    )  # fmt: skip
    for split in ("test", "valid"):
        predictions_file(workdir, split, network, classes, models / f"{split}.csv")
    # fairfer's network standardises 0-255 pixels itself and predicts with the mirror image.
    spec = {
        "size": 48, "grayscale": True, "source": "image", "pixel_scale": 255, "mean": [0.0],
        "std": [1.0], "class_order": classes, "output": "logits", "test_time_flip": True,
    }  # fmt: skip
    overlay = {
        "audit": {
            "models": {
                "native_file": {
                    "predictions": "audited/test.csv",
                    "valid_predictions": "audited/valid.csv",
                },
                "cnn_torchscript": {"torchscript": "audited/cnn.pt", "input": spec},
                "cnn_onnx": {"onnx": "audited/cnn.onnx", "input": spec},
            }
        }
    }
    (workdir / "config" / "audit.yaml").write_text(yaml.safe_dump(overlay))
    snakemake(workdir, "--configfile", "config/ci.yaml", "config/audit.yaml", "--printshellcmds")
    return workdir


def read(run: Path, relative: str) -> pd.DataFrame:
    return pd.read_parquet(run / relative)


def test_exported_models_get_the_tables_of_the_native_predictions(audit_run):
    native = read(audit_run, "results/predictions/native_file/baseline/seed-0.parquet")
    for model in ("cnn_torchscript", "cnn_onnx"):
        audited = read(audit_run, f"results/predictions/{model}/baseline/seed-0.parquet")
        assert audited["image_id"].tolist() == native["image_id"].tolist()
        assert (audited["y_pred"] == native["y_pred"]).all()
        np.testing.assert_allclose(
            np.stack(audited["probabilities"]), np.stack(native["probabilities"]), atol=1e-4
        )
        for table in ("summary", "group_metrics", "class_disparities"):
            ours = read(audit_run, f"results/fairness/{model}/baseline/seed-0/{table}.parquet")
            theirs = read(
                audit_run, f"results/fairness/native_file/baseline/seed-0/{table}.parquet"
            )
            pd.testing.assert_frame_equal(
                ours.drop(columns="model"), theirs.drop(columns="model"), atol=1e-4
            )
    # The native run predicted under bf16 autocast; float32 differs on a handful of images.
    trained = read(audit_run, "results/predictions/compact_cnn/baseline/seed-0.parquet")
    assert (trained["y_pred"].to_numpy() == native["y_pred"].to_numpy()).mean() >= 0.97


def test_audited_models_are_models_of_the_comparison_report_and_metrics(audit_run):
    comparison = read(audit_run, "results/fairness/comparison.parquet")
    assert set(AUDITED) <= set(comparison["model"])
    audited = comparison[comparison["model"].isin(AUDITED)]
    assert set(audited["strategy"]) == {"baseline", "postprocess_recall", "postprocess_worst_group"}
    notes = audited.dropna(subset=["strategy_note"])
    assert notes["strategy_note"].str.contains("inferred").all()
    metrics = json.loads((audit_run / "results/metrics.json").read_text())
    assert set(AUDITED) <= set(metrics)
    page = (audit_run / "results/report/fairness_report.html").read_text()
    assert all(model in page for model in AUDITED)


def test_post_processing_fits_on_valid_only(audit_run):
    report = json.loads(
        (
            audit_run / "results/models/compact_cnn/postprocess_recall/seed-0/postprocess.json"
        ).read_text()
    )
    assert report["group_labels"] == ["inferred"]
    assert report["valid_after"]["recall_gap"] <= report["valid_before"]["recall_gap"]
    assert report["valid_after"]["accuracy"] >= report["valid_before"]["accuracy"] - 0.01 - 1e-9
