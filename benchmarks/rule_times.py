"""Print wall time, CPU time and peak memory per rule from a finished run's benchmark files.

Every rule writes ``logs/benchmarks/<rule>/...tsv`` (Snakemake's ``benchmark:`` directive);
this sums the jobs of each rule and reports the largest peak RSS. CPU seconds do not depend on
what else shared the machine: with one thread per job (every rule here but the optional
fine-tuning), ``sum of CPU seconds / cores`` estimates the wall time on idle cores.

    .venv/bin/python benchmarks/rule_times.py [--root .]
"""

import argparse
from pathlib import Path

import pandas as pd


def rule_times(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((root / "logs" / "benchmarks").rglob("*.tsv")):
        relative = path.relative_to(root / "logs" / "benchmarks")
        measured = pd.read_csv(path, sep="\t").iloc[-1]
        rows.append(
            {
                "rule": relative.parts[0].removesuffix(".tsv"),
                "job": str(relative),
                "seconds": measured["s"],
                "cpu_seconds": measured["cpu_time"],
                "max_rss_mb": measured["max_rss"],
            }
        )
    jobs = pd.DataFrame(rows)
    return (
        jobs.groupby("rule", sort=False)
        .agg(
            jobs=("job", "size"),
            wall_seconds=("seconds", "sum"),
            longest_job_seconds=("seconds", "max"),
            cpu_seconds=("cpu_seconds", "sum"),
            peak_rss_mb=("max_rss_mb", "max"),
        )
        .sort_values("wall_seconds", ascending=False)
        .round(1)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--cores", type=int, default=2, help="for the idle-machine estimate")
    args = parser.parse_args()
    table = rule_times(args.root)
    print(table.to_markdown())
    cpu = table["cpu_seconds"].sum()
    print(f"\nsum of job wall times: {table['wall_seconds'].sum() / 60:.1f} min")
    print(
        f"sum of job CPU times: {cpu / 60:.1f} min ({cpu / 60 / args.cores:.1f} min on "
        f"{args.cores} idle cores)"
    )


if __name__ == "__main__":
    main()
