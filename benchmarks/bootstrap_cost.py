"""Cost of the fairness intervals on a finished run's predictions, and their Monte Carlo error.

Prints, per strategy, the seconds for all tables with bootstrap intervals and with both
bootstrap and multiple-imputation intervals; the seconds for the paired comparison of every
strategy; what fairlearn's ``MetricFrame(n_boot=...)`` costs per draw for the group accuracy
of one attribute (extrapolated to the same number of draws); and how much the summary
intervals move between two resampling seeds.

    .venv/bin/python benchmarks/bootstrap_cost.py --results results [--draws 1000]
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score

from fairfer.fairness.tables import compare_runs, fairness_tables
from fairfer.fairness.uncertainty import interval_inputs
from fairfer.schemas import schema_metadata

ATTRIBUTES = ["race", "gender", "age", ["race", "gender"]]


def seconds(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--fairlearn-draws", type=int, default=20)
    args = parser.parse_args()

    paths = sorted((args.results / "predictions").glob("*.parquet"))
    group_labels = next((args.results / "group_labels").glob("*.parquet"))
    classes = json.loads(schema_metadata(paths[0])["classes"])
    _, posteriors = interval_inputs(
        {"method": "multiple_imputation", "draws": args.draws}, group_labels, ATTRIBUTES
    )
    predictions = {path.stem: pd.read_parquet(path) for path in paths}
    common = {"attributes": ATTRIBUTES, "classes": classes, "draws": args.draws}
    n_images = len(next(iter(predictions.values())))
    print(f"{len(paths)} strategies, {n_images} test images, {args.draws} draws, {ATTRIBUTES}")

    rows = []
    for strategy, frame in predictions.items():
        bootstrap, _ = seconds(fairness_tables, frame, **common)
        both, _ = seconds(fairness_tables, frame, posteriors=posteriors, **common)
        rows.append({"strategy": strategy, "bootstrap_s": bootstrap, "with_imputation_s": both})
    print(pd.DataFrame(rows).round(2).to_markdown(index=False))

    everything = pd.concat(predictions.values(), ignore_index=True)
    paired, _ = seconds(compare_runs, everything, posteriors=posteriors, **common)
    print(f"paired comparison of all strategies, both methods: {paired:.2f} s")

    frame = next(iter(predictions.values()))
    per_draw, _ = seconds(
        MetricFrame,
        metrics=accuracy_score,
        y_true=frame["y_true"],
        y_pred=frame["y_pred"],
        sensitive_features=frame["race"],
        n_boot=args.fairlearn_draws,
        ci_quantiles=[0.025, 0.975],
        random_state=0,
    )
    per_draw /= args.fairlearn_draws
    print(
        f"fairlearn MetricFrame(n_boot), accuracy by race only: {per_draw * 1000:.1f} ms per "
        f"draw, {per_draw * args.draws:.1f} s for {args.draws} draws"
    )

    first, second = (fairness_tables(frame, seed=seed, **common)["summary"] for seed in (0, 1))
    bounds = [c for c in first.columns if c.endswith(("_ci_low", "_ci_high"))]
    moved = (first[bounds] - second[bounds]).abs().to_numpy().ravel()
    moved = moved[~np.isnan(moved)]
    print(
        f"summary interval bounds, seed 0 vs seed 1: median shift {np.median(moved):.4f}, "
        f"95th percentile {np.quantile(moved, 0.95):.4f}, max {moved.max():.4f}"
    )


if __name__ == "__main__":
    main()
