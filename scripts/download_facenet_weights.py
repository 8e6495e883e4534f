"""Download the sdist that carries Sandberg's FaceNet Keras weights, with this environment's pip.

The interpreter is the job's own (``sys.executable``) rather than a rule parameter: a
parameter would record the interpreter's path, and any other path to the same environment
(``snakemake`` versus ``python -m snakemake``, a moved checkout) would rerun the whole DAG.
"""

import subprocess
import sys
from pathlib import Path


def download(package: str, destination: Path, log: Path) -> None:
    """``pip download`` the source distribution of ``package`` into ``destination``."""
    with log.open("w") as stream:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--no-build-isolation",
                "--dest",
                str(destination),
                package,
            ],
            check=True,
            stdout=stream,
            stderr=subprocess.STDOUT,
        )


if __name__ == "__main__":
    download(snakemake.params.package, Path(snakemake.output.sdist), Path(snakemake.log[0]))
