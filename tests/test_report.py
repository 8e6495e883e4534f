"""The HTML report: self-contained, and rendered by a real headless browser with no network."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from browser import CHROMIUM, render
from PIL import Image

from fairfer.fairness.dataset_audit import audit_dataset
from fairfer.fairness.tables import compare_runs, fairness_tables
from fairfer.report.html import external_references
from fairfer.report.plots import plot_composition, plot_gradcam_grid, plot_npmi_heatmaps
from fairfer.rule_inputs import rule_script

report = rule_script("fairness_report").report

CLASSES = ["neutral", "happiness", "surprise"]
ATTRIBUTES = ["race", ["race", "gender"]]


def predictions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "image_id": [f"i{i}" for i in range(n)],
            "race": rng.choice(["White", "Black", "Indian"], n, p=[0.6, 0.33, 0.07]),
            "race_source": "inferred",
            "gender": rng.choice(["Male", "Female"], n),
            "gender_source": "inferred",
            "y_true": rng.choice(CLASSES, n),
        }
    )
    frame.loc[:4, "race"] = None  # a few unknown
    runs = []
    for strategy, accuracy in (("baseline", 0.7), ("reweighting", 0.8)):
        right = rng.random(n) < accuracy
        runs.append(
            frame.assign(
                strategy=strategy,
                y_pred=np.where(right, frame["y_true"], rng.choice(CLASSES, n)),
            )
        )
    return pd.concat(runs, ignore_index=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("report")
    frame = predictions()
    options = {"attributes": ATTRIBUTES, "classes": CLASSES, "draws": 30}
    tables = fairness_tables(frame, min_group_size=30, label_accuracy={"race": 0.57}, **options)
    comparison = compare_runs(frame, **options)["over_seeds"]
    composition = pd.DataFrame(
        {"attribute": "race", "group": ["White", "Black"], "count": [6, 3], "abstained": [1, 0]}
    )
    composition_plot = plot_composition(composition, workdir / "composition.png", title="test")
    cells = pd.DataFrame({"group": ["White", "Black"], "class": "neutral", "y_pred": "neutral"})
    gradcam = plot_gradcam_grid(
        np.full((2, 48, 48), 128, dtype=np.uint8),
        np.random.default_rng(0).random((2, 48, 48)),
        cells,
        workdir / "baseline.png",
        title="Grad-CAM",
    )
    audited = frame[frame["strategy"] == "baseline"].rename(columns={"y_true": "emotion"})
    posteriors = np.tile([0.8, 0.1, 0.1], (len(audited), 1))
    audit, npmi = audit_dataset(
        audited,
        attributes=["race", "gender"],
        sources={"race": "inferred", "gender": "ground_truth"},
        posteriors={"race": (posteriors, ["White", "Black", "Indian"])},
        draws=10,
    )
    audit_plot = plot_npmi_heatmaps(npmi, workdir / "npmi.png", title="test")
    html = report(
        frame,
        tables,
        comparison,
        {"attributes": {"race": {"accuracy": 0.57, "balanced_accuracy": 0.55}}},
        classes=CLASSES,
        attributes=ATTRIBUTES,
        figure_directory=workdir / "figures",
        composition_plot=composition_plot,
        gradcam_plots=[gradcam],
        settings={
            "dataset": "test <set>",
            "baseline": "baseline",
            "min_group_size": 30,
            "uncertainty": {"method": "multiple_imputation", "draws": 30, "level": 0.95},
        },
        audit=audit,
        audit_plot=audit_plot,
    )
    path = workdir / "fairness_report.html"
    path.write_text(html, encoding="utf-8")
    return path


def test_report_has_every_section_and_flags(page):
    html = page.read_text()
    for heading in (
        "Headline comparison",
        "By race",
        "By race x gender",
        "Per-class disparities",
        "Confusion matrices per group",
        "Grad-CAM",
        "Dataset and group labels",
        "Dataset audit: representational and stereotypical bias",
        "Definitions and methods",
    ):
        assert f">{heading}</h2>" in html
    assert "test &lt;set&gt;" in html  # text is escaped
    assert "labels: race: inferred (accuracy 0.570)" in html
    assert "<tr class='small'>" in html  # Indian, about 20 images, is flagged, not dropped
    assert "<tr class='unknown'>" in html
    assert "Δ " in html and "Xu et al. 2020" in html
    assert external_references(html) == []


def test_external_references_are_found():
    page = (
        "<img src='data:image/png;base64,AAA'><a href='#x'></a><link href=\"https://cdn/x.css\">"
        "<div style=\"background: url('http://x/y.png')\"></div><script src=//evil></script>"
    )
    assert external_references(page) == ["https://cdn/x.css", "//evil", "http://x/y.png"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_renders_offline_in_headless_chromium(page, tmp_path):
    rendered = render(page, tmp_path)
    assert rendered.images >= 8
    assert rendered.decoded == rendered.images  # every figure decoded from its data: URI
    assert rendered.tables >= 6 and rendered.rows > 20
    assert [r for r in rendered.resources if not r.startswith("data:")] == []
    assert "Headline comparison" in rendered.dom
    # Wide tables scroll inside their box: the page itself never scrolls sideways.
    assert rendered.page_width <= rendered.viewport_width
    assert rendered.unboxed_wide_tables == 0
    with Image.open(rendered.screenshot) as shot:
        colours = shot.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is None or len(colours) > 50  # not a blank page
