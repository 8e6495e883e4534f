"""Print wall time and peak memory per rule from a finished run's Snakemake benchmark files.

Every rule writes ``logs/benchmarks/<rule>/...tsv`` (Snakemake's ``benchmark:`` directive);
this sums the jobs of each rule and reports the largest peak RSS.

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
            peak_rss_mb=("max_rss_mb", "max"),
        )
        .sort_values("wall_seconds", ascending=False)
        .round(1)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    table = rule_times(parser.parse_args().root)
    print(table.to_markdown())
    print(f"\nsum of job wall times: {table['wall_seconds'].sum() / 60:.1f} min")


if __name__ == "__main__":
    main()
