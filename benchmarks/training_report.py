"""Print what each training job of a finished run cost and scored.

Per strategy x model x seed: wall and CPU seconds (Snakemake's benchmark files), epochs run,
the selected epoch and its validation accuracy (history.csv) and the test accuracy (the
predictions); then totals per model and for the whole grid. CPU seconds are the figure to
budget with on a shared machine: with one thread per job, a grid needs about
sum(CPU seconds) / cores of wall time on idle cores.

    .venv/bin/python benchmarks/training_report.py [--root .] [--cores 2]
"""

import argparse
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq


def training_jobs(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((root / "logs/benchmarks/train_model").glob("*/*/seed-*.tsv")):
        model, strategy, seed = path.parent.parent.name, path.parent.name, path.stem
        measured = pd.read_csv(path, sep="\t").iloc[-1]
        run = f"{model}/{strategy}/{seed}"
        row = {
            "model": model,
            "strategy": strategy,
            "seed": int(seed.removeprefix("seed-")),
            "wall_s": measured["s"],
            "cpu_s": measured["cpu_time"],
        }
        history_path = root / "results/models" / run / "history.csv"
        predictions_path = root / "results/predictions" / f"{run}.parquet"
        if history_path.exists():
            history = pd.read_csv(history_path)
            selected = history[history["selected"]].iloc[0]
            row |= {
                "epochs": len(history),
                "selected_epoch": int(selected["epoch"]),
                "valid_accuracy": selected["valid_accuracy"],
            }
        if predictions_path.exists():
            predictions = pq.read_table(predictions_path, columns=["y_true", "y_pred"])
            frame = predictions.to_pandas()
            row["test_accuracy"] = (frame["y_true"] == frame["y_pred"]).mean()
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--cores", type=int, default=2, help="cores the grid would share")
    args = parser.parse_args()
    jobs = training_jobs(args.root)
    if jobs.empty:
        raise SystemExit(f"no train_model benchmark files under {args.root}/logs/benchmarks")
    print(jobs.round(4).to_markdown(index=False))
    totals = jobs.groupby("model").agg(
        jobs=("strategy", "size"),
        cpu_s=("cpu_s", "sum"),
        cpu_s_per_job=("cpu_s", "mean"),
        wall_s=("wall_s", "sum"),
        test_accuracy_mean=("test_accuracy", "mean"),
    )
    print()
    print(totals.round(3).to_markdown())
    cpu = jobs["cpu_s"].sum()
    print(
        f"\ngrid: {len(jobs)} jobs, {cpu / 60:.1f} CPU min; about {cpu / 60 / args.cores:.1f} "
        f"min of training on {args.cores} idle cores"
    )


if __name__ == "__main__":
    main()
