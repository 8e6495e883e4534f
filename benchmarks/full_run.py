"""Run the workflow and print its wall time and peak memory (all its processes together).

Starts ``snakemake`` with the given arguments (default: ``--cores 2``, the whole default DAG)
and samples, every ``--interval`` seconds, the resident memory of Snakemake and every process
it started (the sum of ``VmRSS`` over the process tree, from ``/proc``). Prints the wall time,
the peak of that sum and the largest single process; Snakemake's own ``benchmark:`` files
(``benchmarks/rule_times.py``) give the same per job.

    .venv/bin/python benchmarks/full_run.py                       # snakemake --cores 2
    .venv/bin/python benchmarks/full_run.py -- --cores 2 --configfile config/presets/cpu.yaml
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux: /proc/<pid>/task/*/children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree_rss_kib(root: int) -> tuple[int, int]:
    """Total and largest resident memory (KiB) of ``root`` and all its descendants."""
    total = largest = 0
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        rss = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")),
            0,
        )
        total += rss
        largest = max(largest, rss)
        pending += children(pid)
    return total, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--snakemake", default=str(Path(sys.executable).with_name("snakemake")))
    parser.add_argument("arguments", nargs="*", default=["--cores", "2"])
    args = parser.parse_args()
    start = time.perf_counter()
    process = subprocess.Popen([args.snakemake, *args.arguments])
    peak_total = peak_single = 0
    while process.poll() is None:
        total, largest = tree_rss_kib(process.pid)
        peak_total, peak_single = max(peak_total, total), max(peak_single, largest)
        time.sleep(args.interval)
    seconds = time.perf_counter() - start
    print(f"snakemake {' '.join(args.arguments)}: exit code {process.returncode}")
    print(f"wall time {seconds / 60:.1f} min ({seconds:.0f} s)")
    print(f"peak resident memory of all processes together {peak_total / 1024**2:.2f} GiB")
    print(f"largest single process {peak_single / 1024**2:.2f} GiB")
    sys.exit(process.returncode)


if __name__ == "__main__":
    main()
