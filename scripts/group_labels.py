"""Fit race/gender/age classifiers on FairFace embeddings and label every emotion-dataset image.

The classifiers are evaluated on FairFace validation and, when configured, on other labelled
demographic datasets (external references such as UTKFace) in those datasets' taxonomies.
"""

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from fairfer.fairness.uncertainty import label_accuracies
from fairfer.group_labels.classifiers import (
    AttributeClassifier,
    composition,
    evaluate,
    fit_attribute_classifier,
    label_targets,
    prefer_ground_truth,
)
from fairfer.group_labels.correction import corrected_composition_table, label_errors
from fairfer.group_labels.external import (
    TAXONOMIES,
    evaluate_in_taxonomy,
    fairface_labels_in_taxonomy,
)
from fairfer.report.plots import plot_composition
from fairfer.schemas import (
    ATTRIBUTE_CLASSES,
    extra_attributes_of,
    group_labels_schema,
    schema_metadata,
    write_parquet,
)

logger = logging.getLogger(__name__)


def read_embeddings(shards: list[Path]) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Concatenate embedding shards into an id frame and a float32 matrix of the features the
    classifiers read: ``label_features`` where embed_faces wrote them, else ``embedding``."""
    tables = [pq.read_table(path) for path in shards]
    column = "label_features" if "label_features" in tables[0].column_names else "embedding"
    vectors = [c for c in ("embedding", "label_features") if c in tables[0].column_names]
    ids = pd.concat([t.drop(vectors).to_pandas() for t in tables], ignore_index=True)
    matrix = np.concatenate(
        [
            t[column]
            .combine_chunks()
            .flatten()
            .to_numpy(zero_copy_only=False)
            .astype(np.float32)
            .reshape(t.num_rows, -1)
            for t in tables
            if t.num_rows
        ]
    )
    return ids, matrix, schema_metadata(shards[0])


#: Where each evaluation of the classifiers is made, as ``evaluated_on`` in the per-class CSV.
EVALUATED_ON = {"clean": "fairface_valid", "in_domain": "fairface_valid_rendered"}


def evaluate_external(
    classifiers: Mapping[str, AttributeClassifier],
    references: Mapping[str, tuple[Sequence[Path], Path]],
    fairface_valid_x: np.ndarray,
    fairface_valid: pd.DataFrame,
) -> tuple[dict, list[pd.DataFrame]]:
    """Score the classifiers on each external reference, in that dataset's taxonomy.

    ``references`` maps a dataset name to its embedding shards and manifest. Each attribute's
    summary also holds FairFace validation scored in the same taxonomy
    (``fairface_valid_same_taxonomy``), the like-for-like comparison.
    """
    report, tables = {}, []
    for dataset, (shards, manifest_path) in references.items():
        ids, embeddings, _ = read_embeddings(list(shards))
        truth = pq.read_table(manifest_path, columns=["image_id", *ATTRIBUTE_CLASSES]).to_pandas()
        rows = ids[["image_id"]].merge(truth, on="image_id", how="left", validate="one_to_one")
        entry: dict = {"n_images": len(truth), "n_embedded": len(ids), "attributes": {}}
        for attribute, classifier in classifiers.items():
            taxonomy = TAXONOMIES[dataset][attribute]
            summary, per_class = evaluate_in_taxonomy(
                classifier.predict_proba(embeddings),
                [None if pd.isna(label) else label for label in rows[attribute]],
                attribute=attribute,
                taxonomy=taxonomy,
                evaluated_on=dataset,
            )
            same_taxonomy, _ = evaluate_in_taxonomy(
                classifier.predict_proba(fairface_valid_x),
                fairface_labels_in_taxonomy(fairface_valid[attribute], taxonomy, attribute),
                attribute=attribute,
                taxonomy=taxonomy,
                evaluated_on="fairface_valid",
            )
            summary["fairface_valid_same_taxonomy"] = {
                key: same_taxonomy[key]
                for key in ("accuracy", "balanced_accuracy", "expected_calibration_error")
            }
            logger.info(
                "%s on %s: accuracy %.4f (FairFace valid in the same taxonomy %.4f), ECE %.4f",
                attribute,
                dataset,
                summary["accuracy"],
                same_taxonomy["accuracy"],
                summary["expected_calibration_error"],
            )
            entry["attributes"][attribute] = summary
            tables.append(per_class)
        report[dataset] = entry
    return report, tables


def labelled_embeddings(
    shards: Sequence[Path], manifest: Path
) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """Embeddings of a labelled reference with its race, gender and age from ``manifest``."""
    ids, x, metadata = read_embeddings(list(shards))
    labels = pq.read_table(manifest, columns=["image_id", *ATTRIBUTE_CLASSES]).to_pandas()
    return ids.merge(labels, on="image_id", how="left", validate="one_to_one"), x, metadata


def fit_rows(
    reference: pd.DataFrame,
    domain: pd.DataFrame | None,
    *,
    fit_on: str,
    fit_subset: Path | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Which clean and which rendered FairFace rows the classifiers are fitted on."""
    if fit_on != "clean" and domain is None:
        raise ValueError(
            f"race_matching.fit_on is {fit_on!r} but no rendered FairFace was given "
            "(render_fairface_domain)"
        )
    clean = (reference["split"] == "train").to_numpy() & (fit_on in ("clean", "both"))
    rendered = None
    if domain is not None:
        rendered = (domain["split"] == "train").to_numpy() & (fit_on in ("domain", "both"))
    if fit_subset is not None:
        # Fine-tuned embeddings: FaceNet was trained on the other train images, whose
        # embeddings would make the classifiers (and their calibration) overconfident.
        roles = pq.read_table(fit_subset).to_pandas()
        unseen = roles.loc[roles["role"] == "selection", "image_id"]
        clean &= reference["image_id"].isin(unseen).to_numpy()
        if rendered is not None:
            rendered &= domain["image_id"].isin(unseen).to_numpy()
    return clean, rendered


def label_dataset(
    classifiers: Mapping[str, object],
    shards: Sequence[Path],
    manifest: Path,
    *,
    abstain_below: float,
    features: Mapping[str, Mapping[str, str]],
) -> tuple[pd.DataFrame, dict]:
    """Group labels of one dataset's images: its own annotations where it has them, else the
    classifiers' calibrated labels (pooled per subject where subjects are known).

    ``features`` names the embeddings metadata the classifiers were fitted on, so that a
    dataset embedded with other classifier features is refused rather than mislabelled.
    """
    target_ids, target_x, target_metadata = read_embeddings(shards)
    has_subjects = "subject_id" in pq.read_schema(manifest).names
    extra = extra_attributes_of(manifest)
    manifest_ids = pq.read_table(
        manifest,
        columns=["image_id", "dataset", "split", *ATTRIBUTE_CLASSES, *extra]
        + (["subject_id"] if has_subjects else []),
    ).to_pandas()
    if not has_subjects:
        manifest_ids["subject_id"] = None
    subjects = target_ids[["image_id"]].merge(
        manifest_ids[["image_id", "subject_id"]], on="image_id", how="left"
    )["subject_id"]
    found = {
        name: m.get("label_features", "embedding")
        for name, m in {**features, str(manifest): target_metadata}.items()
    }
    if len(set(found.values())) > 1:
        raise ValueError(
            f"the embeddings files carry different classifier features ({found}): they were "
            "written with different race_matching.features / flip_average settings. Rerun "
            "embed_faces for all of them (snakemake --forcerun embed_faces)."
        )
    predicted, pooling = [target_ids[["image_id"]]], {}
    for attribute, classifier in classifiers.items():
        labelled, pooling[attribute] = label_targets(
            classifier, target_x, abstain_below=abstain_below, subjects=subjects
        )
        predicted.append(labelled)
    inferred = pd.concat(predicted, axis=1)
    # Images rejected at alignment have no embedding: they stay in the table, unlabelled.
    group_labels = manifest_ids[["image_id", "dataset", "split"]].merge(
        inferred, on="image_id", how="left", validate="one_to_one"
    )
    for attribute in ATTRIBUTE_CLASSES:
        group_labels[f"{attribute}_source"] = "inferred"
        group_labels[f"{attribute}_abstained"] = (
            group_labels[f"{attribute}_abstained"].astype("boolean").fillna(True).astype(bool)
        )
    group_labels, ground_truth = prefer_ground_truth(group_labels, manifest_ids, ATTRIBUTE_CLASSES)
    # Attributes beyond race, gender and age are the dataset's own columns, never inferred.
    truth = manifest_ids.set_index("image_id")
    for attribute in extra:
        group_labels[attribute] = truth[attribute].reindex(group_labels["image_id"]).to_numpy()
        group_labels[f"{attribute}_source"] = "ground_truth"
        group_labels[f"{attribute}_abstained"] = False
    return group_labels, {
        "pooling": pooling,
        "ground_truth_attributes": ground_truth + extra,
        "extra_attributes": extra,
    }


FIT_ON_TEXT = {
    "clean": "FairFace train",
    "domain": "FairFace train rendered like the emotion dataset",
    "both": "FairFace train, clean and rendered like the emotion dataset",
}


def match(
    reference_shards: list[Path],
    reference_manifest: Path,
    target_shards: list[Path],
    target_manifest: Path,
    *,
    matching: dict,
    seed: int,
    external_references: Mapping[str, tuple[Sequence[Path], Path]] | None = None,
    fit_subset: Path | None = None,
    domain: tuple[Sequence[Path], Path] | None = None,
    domain_render: dict | None = None,
    evaluation_datasets: Mapping[str, tuple[Sequence[Path], Path]] | None = None,
    evaluation_labels: dict[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Fit, evaluate (clean FairFace val and, with ``domain``, rendered FairFace val) and label.

    ``domain`` is the rendered FairFace (embedding shards and manifest) that
    ``render_fairface_domain`` made to look like the emotion dataset's images. Its val split is
    where the classifiers are measured for the tables (``in_domain``); clean val stays beside it
    (``clean``). ``matching["fit_on"]`` picks the training images (clean, domain or both).
    ``evaluation_datasets`` (embedding shards and manifest per dataset) are the other emotion
    datasets the models are also evaluated on; their group labels are put into
    ``evaluation_labels`` (their own annotations where they have them, else inferred by the
    same classifiers, whose in-domain accuracy was measured for the emotion dataset's look).
    """
    fit_on = matching.get("fit_on", "clean")
    reference, reference_x, metadata = labelled_embeddings(reference_shards, reference_manifest)
    rendered, rendered_x, rendered_metadata = (None, None, None)
    if domain is not None:
        rendered, rendered_x, rendered_metadata = labelled_embeddings(*domain)
    train, rendered_train = fit_rows(reference, rendered, fit_on=fit_on, fit_subset=fit_subset)
    held_out = (reference["split"] == "valid").to_numpy()
    train_x = reference_x[train]
    train_rows = reference.loc[train]
    if rendered_train is not None and rendered_train.any():
        train_x = np.concatenate([train_x, rendered_x[rendered_train]])
        train_rows = pd.concat([train_rows, rendered.loc[rendered_train]], ignore_index=True)
    evaluations = {"clean": (reference_x[held_out], reference.loc[held_out])}
    if rendered is not None:
        in_domain = (rendered["split"] == "valid").to_numpy()
        evaluations["in_domain"] = (rendered_x[in_domain], rendered.loc[in_domain])

    report: dict = {
        "embedding_weights": metadata.get("weights"),
        "random_weights": metadata.get("random_weights") == "true",
        "embedder": metadata.get("embedder", "frozen"),
        "features": metadata.get("label_features", "embedding"),
        "embedding_weights_sha256": metadata.get("weights_sha256"),
        "classifiers_fit_on": FIT_ON_TEXT[fit_on]
        + (" (images held out from fine-tuning)" if fit_subset is not None else ""),
        "fit_on": fit_on,
        "n_train": len(train_rows),
        "domain_render": domain_render,
        "evaluations": {
            name: {
                "evaluated_on": EVALUATED_ON[name],
                "n_evaluated": len(rows),
            }
            for name, (_, rows) in evaluations.items()
        },
        "attributes": {},
    }
    per_class_tables = []
    classifiers = {}
    evaluation_labels = {} if evaluation_labels is None else evaluation_labels
    for attribute, classes in ATTRIBUTE_CLASSES.items():
        classifier = fit_attribute_classifier(
            train_x,
            train_rows[attribute].tolist(),
            attribute=attribute,
            classes=classes,
            regularization_grid=matching["regularization_grid"],
            cv_folds=matching["cv_folds"],
            calibration=matching["calibration"],
            seed=seed,
            # A clean image and its rendered copy stay in one cross-validation fold.
            groups=train_rows["image_id"].to_numpy(),
        )
        entry: dict = {
            "classes": list(classes),
            "cv_accuracy": classifier.cv_accuracy,
            "regularization": classifier.regularization,
            "temperature": classifier.temperature,
        }
        for name, (x, rows) in evaluations.items():
            summary, per_class = evaluate(classifier, x, rows[attribute].tolist())
            logger.info(
                "%s on %s: accuracy %.4f, balanced %.4f, ECE %.4f",
                attribute,
                EVALUATED_ON[name],
                summary["accuracy"],
                summary["balanced_accuracy"],
                summary["expected_calibration_error"],
            )
            entry[name] = {
                key: summary[key]
                for key in (
                    "n_evaluated",
                    "accuracy",
                    "balanced_accuracy",
                    "expected_calibration_error",
                    "uncalibrated_expected_calibration_error",
                    "confusion_matrix",
                )
            }
            entry[name]["per_class_accuracy"] = dict(
                zip(per_class["class"], per_class["accuracy"].astype(float), strict=True)
            )
            per_class_tables.append(per_class.assign(evaluated_on=EVALUATED_ON[name]))
        report["attributes"][attribute] = entry
        classifiers[attribute] = classifier
    group_labels, labelling = label_dataset(
        classifiers,
        target_shards,
        target_manifest,
        abstain_below=matching["abstain_below"],
        features={"FairFace": metadata}
        | ({} if rendered_metadata is None else {"rendered FairFace": rendered_metadata}),
    )
    if any(p["n_subjects"] for p in labelling["pooling"].values()):
        report["subject_pooling"] = labelling["pooling"]
    report["ground_truth_attributes"] = labelling["ground_truth_attributes"]
    report["extra_attributes"] = labelling["extra_attributes"]
    for name, (shards, manifest) in (evaluation_datasets or {}).items():
        labels, evaluated = label_dataset(
            classifiers,
            shards,
            manifest,
            abstain_below=matching["abstain_below"],
            features={"FairFace": metadata},
        )
        evaluation_labels[name] = labels
        report.setdefault("evaluation_datasets", {})[name] = {
            "ground_truth_attributes": evaluated["ground_truth_attributes"],
            "n_images": len(labels),
        }
    if external_references:
        report["external_evaluation"], external_tables = evaluate_external(
            classifiers, external_references, *evaluations["clean"]
        )
        per_class_tables += external_tables
    per_class = pd.concat(per_class_tables, ignore_index=True)
    return (
        group_labels,
        report,
        per_class[["evaluated_on", "attribute", "class", "count", "accuracy"]],
    )


def per_dataset(
    datasets: Sequence[str], shards: Sequence[str], manifests: Sequence[str]
) -> dict[str, tuple[list[Path], Path]]:
    """Each dataset's embedding shards (``.../<dataset>/shard-*``) and manifest
    (``.../<dataset>.parquet``), from a rule's flat input lists."""
    return {
        dataset: (
            [Path(p) for p in shards if Path(p).parent.name == dataset],
            next(Path(p) for p in manifests if Path(p).stem == dataset),
        )
        for dataset in datasets
    }


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    group_labels, report, per_class = match(
        [Path(p) for p in snakemake.input.reference],
        Path(snakemake.input.reference_manifest),
        [Path(p) for p in snakemake.input.target],
        Path(snakemake.input.target_manifest),
        matching=snakemake.params.matching,
        seed=snakemake.params.seed,
        external_references=per_dataset(
            snakemake.params.external_references,
            snakemake.input.external,
            snakemake.input.external_manifests,
        ),
        fit_subset=Path(snakemake.input.fit_subset) if snakemake.input.get("fit_subset") else None,
        domain=(
            [Path(p) for p in snakemake.input.domain],
            Path(snakemake.input.domain_manifest),
        ),
        domain_render=snakemake.params.domain_render,
        evaluation_datasets=per_dataset(
            snakemake.params.evaluation_datasets,
            snakemake.input.evaluation,
            snakemake.input.evaluation_manifests,
        ),
        evaluation_labels=(evaluation_labels := {}),
    )
    extra = report["extra_attributes"]
    write_parquet(group_labels, snakemake.output.labels, group_labels_schema(extra))
    for dataset, path in zip(
        snakemake.params.evaluation_datasets, snakemake.output.evaluation_labels, strict=True
    ):
        # Race, gender and age only: another dataset's own attributes are not this run's.
        write_parquet(evaluation_labels[dataset], path, group_labels_schema())
    Path(snakemake.output.report).write_text(json.dumps(report, indent=2) + "\n")
    per_class.to_csv(snakemake.output.per_class, index=False)
    table = corrected_composition_table(
        composition(group_labels, [*ATTRIBUTE_CLASSES, *extra]),
        label_errors(report, **snakemake.params.matching["correction"]),
        label_accuracies(report),
        draws=snakemake.params.uncertainty["draws"],
        level=snakemake.params.uncertainty["level"],
        seed=snakemake.params.seed,
    )
    table.to_csv(snakemake.output.composition, index=False)
    plot_composition(
        table,
        Path(snakemake.output.composition_plot),
        title=f"{snakemake.params.dataset}: composition by demographic group",
    )
