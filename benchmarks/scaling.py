"""Print how align + embed time and peak memory grow with the number of images.

For each size, a fresh process builds a manifest of that many FairFace images and runs the
``align_faces`` and ``embed_faces`` rule functions on it as one shard, with the dataset's
settings from the config, then reports its wall time per stage and its peak resident memory
(and the memory after imports alone, most of it torch's). Time should grow linearly and memory
stay flat: both stages stream Parquet record batches.

    .venv/bin/python benchmarks/scaling.py --sizes 1000 4000 16000 --threads 2
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch
import yaml

from fairfer.rule_inputs import rule_script
from fairfer.schemas import MANIFEST, write_parquet

ROOT = Path(__file__).resolve().parents[1]
align_shard = rule_script("align_faces").align_shard
embed_shard = rule_script("embed_faces").embed_shard


def manifest_batches(archive: Path, n_images: int, batch_rows: int = 512):
    """Manifest rows of the first ``n_images`` FairFace images (train, then val), streamed."""
    with zipfile.ZipFile(archive) as handle:
        names = sorted(
            (n for n in handle.namelist() if n.endswith(".jpg")),
            key=lambda name: (not name.startswith("train/"), int(Path(name).stem)),
        )[:n_images]
        if len(names) < n_images:
            raise SystemExit(f"{archive} holds only {len(names)} images, fewer than {n_images}")
        for start in range(0, len(names), batch_rows):
            chunk = names[start : start + batch_rows]
            yield pa.Table.from_pandas(
                pd.DataFrame(
                    {
                        "image_id": [name.removesuffix(".jpg") for name in chunk],
                        "dataset": "fairface",
                        "split": "train",
                        "source_path": chunk,
                        "emotion": None,
                        "label_status": "ok",
                        "emotion_votes": None,
                        "race": None,
                        "gender": None,
                        "age": None,
                        "subject_id": None,
                        "image": [handle.read(name) for name in chunk],
                    }
                ),
                schema=MANIFEST,
                preserve_index=False,
            )


def measure_one(args: argparse.Namespace) -> None:
    """Child process: one size; prints a JSON line."""
    # torch, facenet-pytorch and pyarrow alone take most of a job's memory.
    imports_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(args.config.read_text())
    alignment = {**config["alignment"]["common"], **config["alignment"]["fairface"]}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        manifest = write_parquet(
            manifest_batches(args.archive, args.one), scratch / "manifest.parquet", MANIFEST
        )
        start = time.perf_counter()
        counts = align_shard(
            manifest, scratch / "aligned.parquet", shard=0, shards=1, alignment=alignment
        )
        aligned = time.perf_counter()
        embedded = embed_shard(
            scratch / "aligned.parquet",
            scratch / "embeddings.parquet",
            weights="sandberg-keras" if args.weights else "random",
            weights_path=args.weights,
            batch_size=config["embedding"]["batch_size"],
            workers=config["embedding"]["loader_workers"],
            seed=0,
            device=config["embedding"]["device"],
            precision=config["embedding"]["precision"],
        )
        done = time.perf_counter()
    print(
        json.dumps(
            {
                "images": args.one,
                "align_s": round(aligned - start, 1),
                "embed_s": round(done - aligned, 1),
                "embedded": embedded,
                "alignment_statuses": counts,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "rss_after_imports_mb": round(imports_rss / 1024),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--archive", type=Path, default=ROOT / "data/fairface/fairface-img-margin025-trainval.zip"
    )
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--weights",
        type=Path,
        help="converted sandberg-keras state dict (default: random weights; the speed is the same)",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        measure_one(args)
        return

    rows = []
    for size in args.sizes:
        command = [sys.executable, __file__, "--one", str(size), "--threads", str(args.threads)]
        command += ["--archive", str(args.archive), "--config", str(args.config)]
        if args.weights:
            command += ["--weights", str(args.weights)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows).drop(columns=["alignment_statuses"])
    table["total_s"] = table["align_s"] + table["embed_s"]
    table["ms_per_image"] = (1000 * table["total_s"] / table["images"]).round(1)
    print(f"\nalign + embed, one shard, {args.threads} torch threads")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
