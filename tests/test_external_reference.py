"""FairFace-trained classifiers evaluated on another dataset's taxonomy (UTKFace)."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fairfer.datasets.utkface import RACE_TO_FAIRFACE
from fairfer.group_labels.external import (
    TAXONOMIES,
    Taxonomy,
    evaluate_in_taxonomy,
    fairface_labels_in_taxonomy,
)
from fairfer.rule_inputs import rule_script
from fairfer.schemas import ATTRIBUTE_CLASSES, FAIRFACE_RACES, embeddings_schema

match = rule_script("group_labels").match

UTK_RACE = TAXONOMIES["utkface"]["race"]


def test_race_mapping_merges_fairface_posteriors_into_utkface_classes():
    probabilities = np.eye(len(FAIRFACE_RACES)) * 0.4 + 0.6 / len(FAIRFACE_RACES)
    collapsed = UTK_RACE.collapse(probabilities, FAIRFACE_RACES)
    assert UTK_RACE.classes == ("White", "Black", "Asian", "Indian", "Others")
    np.testing.assert_allclose(collapsed.sum(axis=1), 1.0)
    east_asian = FAIRFACE_RACES.index("East Asian")
    # East Asian mass plus Southeast Asian's share lands on Asian.
    assert collapsed[east_asian, 2] == pytest.approx(0.4 + 2 * 0.6 / 7)
    assert fairface_labels_in_taxonomy(
        ["Southeast Asian", "Middle Eastern", "Latino_Hispanic", "Indian"], UTK_RACE, "race"
    ) == ["Asian", "Others", "Others", "Indian"]


def test_a_mapping_must_partition_the_fairface_classes():
    overlapping = Taxonomy(("A", "B"), {"A": FAIRFACE_RACES, "B": ("White",)})
    with pytest.raises(ValueError, match="'White' maps to 'A' and 'B'"):
        overlapping.collapse(np.ones((1, 7)) / 7, FAIRFACE_RACES)
    partial = Taxonomy(("A",), {"A": FAIRFACE_RACES[:-1]})
    with pytest.raises(ValueError, match="unmapped \\['Middle Eastern'\\]"):
        partial.collapse(np.ones((1, 7)) / 7, FAIRFACE_RACES)


def test_evaluation_in_the_target_taxonomy():
    def one_hot(name, confidence=0.9):
        row = np.full(len(FAIRFACE_RACES), (1 - confidence) / 6)
        row[FAIRFACE_RACES.index(name)] = confidence
        return row

    probabilities = np.stack(
        [
            one_hot("East Asian"),
            one_hot("Southeast Asian"),
            one_hot("Middle Eastern"),
            one_hot("White"),
            one_hot("Black"),
        ]
    )
    labels = ["Asian", "Asian", "Others", "Black", None]
    summary, per_class = evaluate_in_taxonomy(
        probabilities, labels, attribute="race", taxonomy=UTK_RACE, evaluated_on="utkface"
    )
    assert summary["n_evaluated"] == 4 and summary["n_unlabelled"] == 1
    assert summary["accuracy"] == pytest.approx(0.75)
    matrix = np.asarray(summary["confusion_matrix"])
    assert matrix[2, 2] == 2 and matrix[4, 4] == 1 and matrix[1, 0] == 1
    assert per_class.set_index("class").loc["Asian", ["count", "accuracy"]].tolist() == [2, 1.0]
    assert np.isnan(per_class.set_index("class").loc["Indian", "accuracy"])
    assert set(per_class["evaluated_on"]) == {"utkface"}
    assert summary["taxonomy"]["from_fairface"]["Others"] == list(RACE_TO_FAIRFACE["Others"])
    assert 0 <= summary["expected_calibration_error"] <= 1
    with pytest.raises(ValueError, match="'Hispanic'"):
        evaluate_in_taxonomy(
            probabilities[:1],
            ["Hispanic"],
            attribute="race",
            taxonomy=UTK_RACE,
            evaluated_on="utkface",
        )


# --- group_labels with an external reference, on synthetic embeddings ----------------


UTK_RACE_OF = {fairface: utk for utk, merged in RACE_TO_FAIRFACE.items() for fairface in merged}


def _people(rng, n, centres):
    """Demographics drawn at random and embeddings that carry them (one block per attribute)."""
    labels = {a: rng.choice(classes, size=n) for a, classes in ATTRIBUTE_CLASSES.items()}
    blocks = [
        np.stack([centres[a][list(ATTRIBUTE_CLASSES[a]).index(v)] for v in labels[a]])
        for a in ATTRIBUTE_CLASSES
    ]
    embeddings = np.concatenate(blocks, axis=1) + rng.normal(scale=0.6, size=(n, 24))
    return pd.DataFrame(labels), embeddings.astype(np.float32)


def _write(directory, dataset, frame, embeddings, splits):
    directory.mkdir(parents=True, exist_ok=True)
    frame = frame.assign(image_id=[f"{dataset}{i}" for i in range(len(frame))], dataset=dataset)
    frame["split"] = splits
    manifest = directory / f"{dataset}.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), manifest)
    schema = embeddings_schema(24, weights="random", weights_sha256="none")
    shard = directory / dataset / "shard-0.parquet"
    shard.parent.mkdir()
    table = pa.table(
        {
            "image_id": frame["image_id"],
            "dataset": frame["dataset"],
            "split": frame["split"],
            "alignment_status": ["ok"] * len(frame),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel()), 24),
        },
        schema=schema,
    )
    pq.write_table(table, shard)
    return [shard], manifest


def test_match_reports_utkface_alongside_fairface_valid(tmp_path):
    rng = np.random.default_rng(0)
    centres = {a: rng.normal(scale=3, size=(len(c), 8)) for a, c in ATTRIBUTE_CLASSES.items()}
    fairface, fairface_x = _people(rng, 900, centres)
    reference = _write(
        tmp_path, "fairface", fairface, fairface_x, ["train"] * 600 + ["valid"] * 300
    )
    target, target_x = _people(rng, 50, centres)
    target = target.assign(race=None, gender=None, age=None)
    emotion = _write(tmp_path, "ferplus", target, target_x, ["test"] * 50)
    utk, utk_x = _people(rng, 300, centres)
    utk["race"] = utk["race"].map(UTK_RACE_OF)
    utk.loc[:9, "gender"] = None  # unlabelled rows are left out, not counted wrong
    external = {"utkface": _write(tmp_path, "utkface", utk, utk_x, ["test"] * 300)}

    matching = {
        "regularization_grid": [1.0],
        "cv_folds": 3,
        "calibration": "temperature",
        "abstain_below": 0.5,
    }
    labels, report, per_class = match(
        *reference, *emotion, matching=matching, seed=0, external_references=external
    )
    assert len(labels) == 50
    evaluation = report["external_evaluation"]["utkface"]
    assert evaluation["n_images"] == evaluation["n_embedded"] == 300
    race = evaluation["attributes"]["race"]
    assert race["taxonomy"]["classes"] == ["White", "Black", "Asian", "Indian", "Others"]
    assert race["accuracy"] > 0.8 and np.asarray(race["confusion_matrix"]).shape == (5, 5)
    # Five merged classes are easier than FairFace's seven: the same-taxonomy figure is given.
    assert (
        race["fairface_valid_same_taxonomy"]["accuracy"]
        >= report["attributes"]["race"]["clean"]["accuracy"]
    )
    assert evaluation["attributes"]["gender"]["n_unlabelled"] == 10
    assert evaluation["attributes"]["age"]["taxonomy"]["classes"] == list(ATTRIBUTE_CLASSES["age"])
    assert list(per_class.columns) == ["evaluated_on", "attribute", "class", "count", "accuracy"]
    counts = per_class.groupby(["evaluated_on", "attribute"]).size().to_dict()
    assert counts[("utkface", "race")] == 5 and counts[("fairface_valid", "race")] == 7
    json.dumps(report)  # the report is written as JSON


def test_match_without_external_references_is_unchanged(tmp_path):
    rng = np.random.default_rng(1)
    centres = {a: rng.normal(scale=3, size=(len(c), 8)) for a, c in ATTRIBUTE_CLASSES.items()}
    fairface, fairface_x = _people(rng, 600, centres)
    reference = _write(
        tmp_path, "fairface", fairface, fairface_x, ["train"] * 450 + ["valid"] * 150
    )
    target, target_x = _people(rng, 20, centres)
    emotion = _write(tmp_path, "rafdb", target.assign(race=None), target_x, ["test"] * 20)
    matching = {
        "regularization_grid": [1.0],
        "cv_folds": 2,
        "calibration": "none",
        "abstain_below": 0.5,
    }
    labels, report, per_class = match(*reference, *emotion, matching=matching, seed=0)
    assert "external_evaluation" not in report
    assert set(per_class["evaluated_on"]) == {"fairface_valid"}
    assert report["ground_truth_attributes"] == ["gender", "age"]
    assert set(labels["race_source"]) == {"inferred"}


def test_match_measures_in_domain_and_fits_on_the_rendered_copy(tmp_path):
    """The rendered FairFace copy: evaluated in domain beside clean val, and fit_on honoured."""
    rng = np.random.default_rng(3)
    centres = {a: rng.normal(scale=3, size=(len(c), 8)) for a, c in ATTRIBUTE_CLASSES.items()}
    fairface, fairface_x = _people(rng, 600, centres)
    splits = ["train"] * 450 + ["valid"] * 150
    reference = _write(tmp_path, "fairface", fairface, fairface_x, splits)
    # The same people, degraded: noisier embeddings, as low-resolution grayscale faces give.
    degraded_x = fairface_x + rng.normal(scale=2.0, size=fairface_x.shape).astype(np.float32)
    domain_dir = tmp_path / "domain"
    domain = _write(domain_dir, "fairface", fairface, degraded_x, splits)
    target, target_x = _people(rng, 30, centres)
    target = target.assign(race=None, gender=None, age=None)
    emotion = _write(tmp_path, "ferplus", target, target_x, ["test"] * 30)
    matching = {
        "regularization_grid": [1.0],
        "cv_folds": 2,
        "calibration": "temperature",
        "abstain_below": 0.5,
    }
    reports = {}
    for fit_on in ("clean", "domain", "both"):
        _, reports[fit_on], per_class = match(
            *reference,
            *emotion,
            matching={**matching, "fit_on": fit_on},
            seed=0,
            domain=domain,
            domain_render={"size": 48, "grayscale": True, "crop_fraction": 0.7},
        )
    race = reports["clean"]["attributes"]["race"]
    assert race["in_domain"]["accuracy"] < race["clean"]["accuracy"]
    assert np.asarray(race["in_domain"]["confusion_matrix"]).sum() == 150
    assert reports["clean"]["n_train"] == 450 and reports["both"]["n_train"] == 900
    assert reports["domain"]["fit_on"] == "domain"
    assert set(per_class["evaluated_on"]) == {"fairface_valid", "fairface_valid_rendered"}
    from fairfer.fairness.uncertainty import label_accuracies

    assert label_accuracies(reports["clean"])["race"] == race["in_domain"]["accuracy"]
    json.dumps(reports["both"])


def test_fit_on_domain_without_a_rendered_copy_is_an_error(tmp_path):
    rng = np.random.default_rng(4)
    centres = {a: rng.normal(scale=3, size=(len(c), 8)) for a, c in ATTRIBUTE_CLASSES.items()}
    fairface, fairface_x = _people(rng, 100, centres)
    reference = _write(tmp_path, "fairface", fairface, fairface_x, ["train"] * 80 + ["valid"] * 20)
    emotion = _write(tmp_path, "ferplus", fairface.iloc[:5], fairface_x[:5], ["test"] * 5)
    matching = {
        "regularization_grid": [1.0],
        "cv_folds": 2,
        "calibration": "none",
        "abstain_below": 0.5,
        "fit_on": "domain",
    }
    with pytest.raises(ValueError, match="fit_on"):
        match(*reference, *emotion, matching=matching, seed=0)
