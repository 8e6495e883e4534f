"""Print how the race/gender/age classifiers fare where their labels are used.

Reads the pipeline's embeddings of FairFace (clean photographs) and of FairFace rendered like
the emotion dataset (rule ``render_fairface_domain``, run with ``race_matching.fit_on: both``
so that train is rendered too), fits the calibrated logistic regressions of
``group_labels`` (``fairfer.group_labels.classifiers``: C chosen by cross-validation on train only)
on clean, rendered or both FairFace train images, and prints, per attribute:

- accuracy, balanced accuracy and ECE on clean FairFace val and on rendered FairFace val
  (the in-domain figure), for each training set;
- the in-domain per-class accuracy of the chosen training set;
- with ``--curve``, the learning curve: in-domain and clean accuracy for seeded subsets of the
  training identities (e.g. 3k, 6k, 12k), so a user with the full 86k release knows what to
  expect.

FairFace val is used only for the figures printed; no choice is made on it.

    .venv/bin/snakemake --cores 2 --config 'race_matching={"fit_on": "both"}' -- \\
        $(printf 'results/embeddings/fairface_domain/shard-%d.parquet ' 0 1 2 3)
    .venv/bin/python benchmarks/label_domain.py --results results --curve 3000 6000 12000
"""

import argparse
import glob
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fairfer.group_labels.classifiers import evaluate, fit_attribute_classifier
from fairfer.rule_inputs import rule_script
from fairfer.schemas import ATTRIBUTE_CLASSES

ROOT = Path(__file__).resolve().parents[1]
labelled_embeddings = rule_script("group_labels").labelled_embeddings


def load(results: Path, dataset: str) -> tuple[pd.DataFrame, np.ndarray]:
    shards = sorted(glob.glob(str(results / "embeddings" / dataset / "shard-*.parquet")))
    if not shards:
        raise SystemExit(f"no embeddings under {results / 'embeddings' / dataset}: run the rules")
    rows, x, _ = labelled_embeddings(
        [Path(s) for s in shards], results / "manifests" / f"{dataset}.parquet"
    )
    return rows, x


def training_set(clean, rendered, fit_on: str, ids: set | None):
    parts = []
    if fit_on in ("clean", "both"):
        parts.append(clean)
    if fit_on in ("domain", "both"):
        parts.append(rendered)
    rows = pd.concat([p[0].assign(_i=np.arange(len(p[0]))) for p in parts], ignore_index=True)
    x = np.concatenate([p[1] for p in parts])
    keep = (rows["split"] == "train").to_numpy()
    if ids is not None:
        keep &= rows["image_id"].isin(ids).to_numpy()
    return rows[keep], x[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--fit-on", nargs="+", default=["clean", "domain", "both"])
    parser.add_argument("--grid", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    parser.add_argument("--cv-folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--curve", type=int, nargs="*", default=[], help="training-set sizes (images per set)"
    )
    parser.add_argument("--curve-fit-on", default="both")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()

    clean, rendered = load(args.results, "fairface"), load(args.results, "fairface_domain")
    evaluations = {
        "clean": (
            clean[1][(clean[0]["split"] == "valid").to_numpy()],
            clean[0][clean[0]["split"] == "valid"],
        ),
        "in_domain": (
            rendered[1][(rendered[0]["split"] == "valid").to_numpy()],
            rendered[0][rendered[0]["split"] == "valid"],
        ),
    }
    print(
        f"FairFace train: {int((clean[0]['split'] == 'train').sum())} clean, "
        f"{int((rendered[0]['split'] == 'train').sum())} rendered embeddings; val: "
        f"{len(evaluations['clean'][1])} clean, {len(evaluations['in_domain'][1])} rendered"
    )
    figures: dict = {}

    def fit_and_score(fit_on: str, ids: set | None) -> dict:
        rows, x = training_set(clean, rendered, fit_on, ids)
        out = {"n_train": len(rows)}
        for attribute, classes in ATTRIBUTE_CLASSES.items():
            start = time.perf_counter()
            classifier = fit_attribute_classifier(
                x,
                rows[attribute].tolist(),
                attribute=attribute,
                classes=classes,
                regularization_grid=args.grid,
                cv_folds=args.cv_folds,
                calibration="temperature",
                seed=args.seed,
                groups=rows["image_id"].to_numpy(),
            )
            entry = {"fit_seconds": time.perf_counter() - start, "C": classifier.regularization}
            for name, (vx, vrows) in evaluations.items():
                summary, per_class = evaluate(classifier, vx, vrows[attribute].tolist())
                entry[name] = {
                    "accuracy": summary["accuracy"],
                    "balanced_accuracy": summary["balanced_accuracy"],
                    "ece": summary["expected_calibration_error"],
                    "per_class": dict(zip(per_class["class"], per_class["accuracy"], strict=True)),
                    "confusion_matrix": summary["confusion_matrix"],
                }
            out[attribute] = entry
        return out

    print("\n## Training set vs evaluation (accuracy / balanced accuracy / ECE)\n")
    print("| attribute | fit on | n train | clean val | rendered val (in-domain) |")
    print("|---|---|---|---|---|")
    for fit_on in args.fit_on:
        figures[fit_on] = fit_and_score(fit_on, None)
    for attribute in ATTRIBUTE_CLASSES:
        for fit_on in args.fit_on:
            entry = figures[fit_on][attribute]
            cells = [
                f"{entry[n]['accuracy']:.3f} / {entry[n]['balanced_accuracy']:.3f} / "
                f"{entry[n]['ece']:.3f}"
                for n in ("clean", "in_domain")
            ]
            print(
                f"| {attribute} | {fit_on} | {figures[fit_on]['n_train']} | "
                f"{cells[0]} | {cells[1]} |"
            )

    best = max(args.fit_on, key=lambda f: figures[f]["race"]["in_domain"]["accuracy"])
    print(f"\n## In-domain per-class accuracy, fit on {best}\n")
    for attribute in ("race", "age", "gender"):
        per_class = figures[best][attribute]["in_domain"]["per_class"]
        print(f"- {attribute}: " + ", ".join(f"{k} {v:.3f}" for k, v in per_class.items()))
    matrix = np.asarray(figures[best]["race"]["in_domain"]["confusion_matrix"])
    print("\nIn-domain race confusion matrix (rows true, columns predicted):\n")
    print(
        pd.DataFrame(
            matrix, index=ATTRIBUTE_CLASSES["race"], columns=ATTRIBUTE_CLASSES["race"]
        ).to_markdown()
    )

    if args.curve:
        print(
            f"\n## Learning curve (fit on {args.curve_fit_on}; race accuracy clean / in-domain)\n"
        )
        print(
            "| FairFace train images | race clean | race in-domain | gender in-domain "
            "| age in-domain |"
        )
        print("|---|---|---|---|---|")
        train_ids = clean[0].loc[clean[0]["split"] == "train", "image_id"].to_numpy()
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(train_ids)
        figures["curve"] = {}
        for size in args.curve:
            ids = set(order[: min(size, len(order))])
            result = fit_and_score(args.curve_fit_on, ids)
            figures["curve"][size] = result
            print(
                f"| {len(ids)} | {result['race']['clean']['accuracy']:.3f} | "
                f"{result['race']['in_domain']['accuracy']:.3f} | "
                f"{result['gender']['in_domain']['accuracy']:.3f} | "
                f"{result['age']['in_domain']['accuracy']:.3f} |"
            )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
