"""How far to trust a table built on inferred race: estimators against the truth.

On FairFace val rendered like the emotion dataset (rule ``render_fairface_domain``), where the
true race of every face is known, a real classifier's predictions for another task (gender,
from the same embeddings) play the emotion model. Each resample splits rendered val in two
halves: the first measures the race classifier's confusion matrix (as rendered val does in
the pipeline), the second is the "dataset" whose per-race gender accuracy is tabulated with

- the true race (the truth),
- the inferred race (observed: today's point estimate),
- multiple imputation (the mean over draws of race sampled from the calibrated posteriors),
- the matrix-method correction with the first half's confusion matrix,

all through ``fairfer.fairness.tables.fairness_tables``, the function the pipeline's tables use. It
prints each estimator's bias, mean absolute error and RMSE against the truth for the accuracy
gap, the worst group's accuracy and the per-group accuracies, and how often each interval
covers the truth. The classifiers are fitted on FairFace train only.

    .venv/bin/python benchmarks/label_correction_truth.py --results results --resamples 20
"""

import argparse
import glob
from pathlib import Path

import numpy as np
import pandas as pd

from fairfer.fairness.tables import fairness_tables, prepare
from fairfer.fairness.uncertainty import replicate_figures
from fairfer.group_labels.classifiers import fit_attribute_classifier
from fairfer.group_labels.correction import LabelErrors
from fairfer.rule_inputs import rule_script
from fairfer.schemas import ATTRIBUTE_CLASSES

ROOT = Path(__file__).resolve().parents[1]
labelled_embeddings = rule_script("group_labels").labelled_embeddings

RACES = ATTRIBUTE_CLASSES["race"]


def load(results: Path, dataset: str):
    shards = sorted(glob.glob(str(results / "embeddings" / dataset / "shard-*.parquet")))
    if not shards:
        raise SystemExit(f"no embeddings under {results / 'embeddings' / dataset}")
    return labelled_embeddings(
        [Path(s) for s in shards], results / "manifests" / f"{dataset}.parquet"
    )[:2]


def fit(rows, x, attribute, args):
    return fit_attribute_classifier(
        x,
        rows[attribute].tolist(),
        attribute=attribute,
        classes=ATTRIBUTE_CLASSES[attribute],
        regularization_grid=args.grid,
        cv_folds=args.cv_folds,
        calibration="temperature",
        seed=args.seed,
        groups=rows["image_id"].to_numpy(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--fit-on", choices=["clean", "domain", "both"], default="clean")
    parser.add_argument("--task", default="gender", choices=["gender", "age"])
    parser.add_argument("--resamples", type=int, default=20)
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--grid", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    clean_rows, clean_x = load(args.results, "fairface")
    domain_rows, domain_x = load(args.results, "fairface_domain")
    parts = []
    if args.fit_on in ("clean", "both"):
        parts.append((clean_rows, clean_x))
    if args.fit_on in ("domain", "both"):
        parts.append((domain_rows, domain_x))
    train_rows = pd.concat([p[0] for p in parts], ignore_index=True)
    train_x = np.concatenate([p[1] for p in parts])
    train = (train_rows["split"] == "train").to_numpy()
    race_model = fit(train_rows[train], train_x[train], "race", args)
    task_model = fit(train_rows[train], train_x[train], args.task, args)

    valid = (domain_rows["split"] == "valid").to_numpy()
    rows, x = domain_rows[valid].reset_index(drop=True), domain_x[valid]
    posterior = race_model.predict_proba(x)
    inferred = np.asarray(RACES)[posterior.argmax(axis=1)]
    task_classes = list(ATTRIBUTE_CLASSES[args.task])
    task_pred = np.asarray(task_classes)[task_model.predict_proba(x).argmax(axis=1)]
    print(
        f"rendered FairFace val: {len(rows)} faces; race classifier (fit on {args.fit_on}) "
        f"in-domain accuracy {(inferred == rows['race']).mean():.3f}; {args.task} model "
        f"accuracy {(task_pred == rows[args.task]).mean():.3f}"
    )

    records, per_group = [], []
    for resample in range(args.resamples):
        rng = np.random.default_rng([args.seed, resample])
        half = rng.permutation(len(rows)) < len(rows) // 2
        confusion = pd.crosstab(
            pd.Categorical(rows.loc[half, "race"], RACES),
            pd.Categorical(inferred[half], RACES),
            dropna=False,
        ).to_numpy()
        target = ~half
        base = pd.DataFrame(
            {
                "image_id": rows.loc[target, "image_id"].to_numpy(),
                "strategy": "task_model",
                "y_true": rows.loc[target, args.task].to_numpy(),
                "y_pred": task_pred[target],
            }
        )
        truth_frame = base.assign(
            race=rows.loc[target, "race"].to_numpy(), race_source="ground_truth"
        )
        observed_frame = base.assign(race=inferred[target], race_source="inferred")
        options = {"attributes": ["race"], "classes": task_classes, "seed": resample}
        truth = fairness_tables(truth_frame, draws=0, **options)
        posteriors = {
            "race": pd.DataFrame(
                posterior[target], index=base["image_id"].to_numpy(), columns=list(RACES)
            )
        }
        observed = fairness_tables(
            observed_frame,
            draws=args.draws,
            posteriors=posteriors,
            corrections={"race": LabelErrors("race", RACES, confusion, None)},
            **options,
        )
        runs, codings = prepare(
            observed_frame, attributes=["race"], classes=task_classes, posteriors=posteriors
        )
        imputed = replicate_figures(
            runs, codings, draws=args.draws, seed=resample, posteriors=posteriors
        )["multiple_imputation"]["race"]
        t_summary, o_summary = truth["summary"].iloc[0], observed["summary"].iloc[0]
        imputed_gap = float(np.nanmean(imputed["summary"]["accuracy_gap"]))
        imputed_worst = float(np.nanmean(imputed["summary"]["worst_group_accuracy"]))
        record = {
            "truth_gap": t_summary["accuracy_gap"],
            "truth_worst": t_summary["worst_group_accuracy"],
            "observed_gap": o_summary["accuracy_gap"],
            "observed_worst": o_summary["worst_group_accuracy"],
            "imputed_gap": imputed_gap,
            "imputed_worst": imputed_worst,
            "corrected_gap": o_summary["accuracy_gap_corrected"],
            "corrected_worst": o_summary["worst_group_accuracy_corrected"],
        }
        for name in ("observed", "imputed", "corrected"):
            if name == "observed":
                low, high = o_summary["accuracy_gap_ci_low"], o_summary["accuracy_gap_ci_high"]
            elif name == "imputed":
                low, high = o_summary["accuracy_gap_mi_low"], o_summary["accuracy_gap_mi_high"]
            else:
                low = o_summary["accuracy_gap_corrected_ci_low"]
                high = o_summary["accuracy_gap_corrected_ci_high"]
            record[f"{name}_covers"] = bool(low <= t_summary["accuracy_gap"] <= high)
        records.append(record)
        true_groups = truth["group_metrics"].set_index("group")["accuracy"]
        groups = observed["group_metrics"].set_index("group")
        imputed_groups = np.nanmean(imputed["group"]["accuracy"][0], axis=0)
        names = list(codings[0].names)
        for group in RACES:
            if group not in groups.index or group not in true_groups.index:
                continue
            per_group.append(
                {
                    "group": group,
                    "truth": true_groups[group],
                    "observed": groups.loc[group, "accuracy"],
                    "imputed": imputed_groups[names.index(group)],
                    "corrected": groups.loc[group, "accuracy_corrected"],
                }
            )
    frame = pd.DataFrame(records)
    print(
        f"\n## {args.task} accuracy gap across true races, {args.resamples} resamples "
        f"(truth: mean gap {frame['truth_gap'].mean():.3f}, worst group "
        f"{frame['truth_worst'].mean():.3f})\n"
    )
    print(
        "| estimator | gap bias | gap MAE | gap RMSE | worst-group bias | worst-group MAE "
        "| interval covers the true gap |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in ("observed", "imputed", "corrected"):
        gap_error = frame[f"{name}_gap"] - frame["truth_gap"]
        worst_error = frame[f"{name}_worst"] - frame["truth_worst"]
        print(
            f"| {name} | {gap_error.mean():+.3f} | {gap_error.abs().mean():.3f} | "
            f"{np.sqrt((gap_error**2).mean()):.3f} | {worst_error.mean():+.3f} | "
            f"{worst_error.abs().mean():.3f} | {frame[f'{name}_covers'].mean():.0%} |"
        )
    groups = pd.DataFrame(per_group)
    print("\n## Per-group accuracy: mean absolute error against the truth\n")
    print("| group | true accuracy | observed | imputed | corrected |")
    print("|---|---|---|---|---|")
    for group, part in groups.groupby("group", sort=False):
        errors = [
            (part[c] - part["truth"]).abs().mean() for c in ("observed", "imputed", "corrected")
        ]
        print(
            f"| {group} | {part['truth'].mean():.3f} | "
            + " | ".join(f"{e:.3f}" for e in errors)
            + " |"
        )


if __name__ == "__main__":
    main()
