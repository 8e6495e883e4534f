"""Print the strategy tables of docs/results-earlier.md from a run's ``comparison.parquet``.

Per model: each strategy's test accuracy, its change against the baseline with the paired
interval, the race worst-group accuracy and gap with their changes, and the changes of the
race x gender and age gaps; values are means over seeds (``± sd`` when there are several).
Then the count of verdicts (better, worse, no clear change) per model, with and without the
label-noise resampling.

    .venv/bin/python benchmarks/strategy_table.py --results results
"""

import argparse
from pathlib import Path

import pandas as pd


def value(row: dict) -> str:
    if row["n_seeds"] > 1:
        return f"{row['estimate']:.3f} ± {row['estimate_sd']:.3f}"
    return f"{row['estimate']:.3f}"


def change(row: dict) -> str:
    if row["strategy"] == "baseline":
        return "0"
    text = f"{row['delta']:+.3f} [{row['delta_ci_low']:+.3f}, {row['delta_ci_high']:+.3f}]"
    return f"**{text}**" if row["verdict"] in ("better", "worse") else text


def table(model_rows: pd.DataFrame) -> str:
    rows = model_rows.set_index(["strategy", "attribute", "metric"])
    columns = [
        ("test accuracy", "race", "overall_accuracy", value),
        ("Δ accuracy", "race", "overall_accuracy", change),
        ("race: worst group", "race", "worst_group_accuracy", value),
        ("race gap", "race", "accuracy_gap", value),
        ("Δ race gap", "race", "accuracy_gap", change),
        ("Δ race worst group", "race", "worst_group_accuracy", change),
        ("Δ race x gender gap", "race x gender", "accuracy_gap", change),
        ("Δ age gap", "age", "accuracy_gap", change),
    ]
    lines = [
        "| strategy | " + " | ".join(name for name, *_ in columns) + " |",
        "|:--|" + "--:|" * len(columns),
    ]
    for strategy in dict.fromkeys(model_rows["strategy"]):
        cells = [
            render(rows.loc[(strategy, attribute, metric)].to_dict() | {"strategy": strategy})
            for _, attribute, metric, render in columns
        ]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    args = parser.parse_args()
    comparison = pd.read_parquet(args.results / "fairness" / "comparison.parquet")
    for model, model_rows in comparison.groupby("model", sort=False):
        seeds = model_rows["n_seeds"].max()
        print(f"\n{model} ({seeds} seed{'s' if seeds > 1 else ''}); bold: interval excludes 0\n")
        print(table(model_rows))
        others = model_rows[model_rows["strategy"] != "baseline"]
        print(
            f"\nverdicts over {len(others)} strategy-vs-baseline rows: "
            f"{others['verdict'].value_counts().to_dict()}; "
            f"with label noise resampled: {others['verdict_mi'].value_counts().to_dict()}"
        )
        better = others[others["verdict"] == "better"]
        for _, row in better.iterrows():
            print(
                f"  better: {row['strategy']} {row['attribute']} {row['metric']} "
                f"{row['delta']:+.3f} [{row['delta_ci_low']:+.3f}, {row['delta_ci_high']:+.3f}]"
                f" (with label noise: {row['verdict_mi']})"
            )


if __name__ == "__main__":
    main()
