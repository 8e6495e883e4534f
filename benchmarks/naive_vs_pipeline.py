"""Print align + embed throughput of the pipeline against a naive per-image loop, as a ratio.

Both work on the same FairFace images, with the same FaceNet network, on ``--cores`` cores:

- naive: the facenet-pytorch loop of its README in one process with ``--cores`` torch threads,
  one image at a time: open the file, detect and crop with ``facenet_pytorch.MTCNN``, embed
  with ``InceptionResnetV1``;
- pipeline: what ``snakemake --cores N`` runs: ``N`` shard jobs side by side, each a fresh
  process with one thread (the rules' ``threads: 1``) that runs the ``align_faces`` and then
  the ``embed_faces`` rule function (manifest Parquet in, aligned and embedding Parquet out),
  with the dataset's settings from the config (padding, upscaling, retry pass: more detector
  work than the naive loop does).

Each side's time includes building its networks (and, for the pipeline, starting its
processes). Images are written to a scratch folder (the naive loop reads files) and into a
manifest (the pipeline reads Parquet) before timing.

    .venv/bin/python benchmarks/naive_vs_pipeline.py --images 1000 --cores 2
"""

import argparse
import multiprocessing
import tempfile
import time
import zipfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import torch
import yaml
from facenet_pytorch import MTCNN
from PIL import Image

from fairfer.faces.facenet import load_facenet, preprocessing_for
from fairfer.rule_inputs import rule_script
from fairfer.schemas import MANIFEST, write_parquet

ROOT = Path(__file__).resolve().parents[1]
align_shard = rule_script("align_faces").align_shard
embed_shard = rule_script("embed_faces").embed_shard


def sample_images(archive: Path, n_images: int, folder: Path) -> pd.DataFrame:
    """The first ``n_images`` FairFace train images as files and as manifest rows."""
    with zipfile.ZipFile(archive) as handle:
        names = sorted(
            (n for n in handle.namelist() if n.startswith("train/") and n.endswith(".jpg")),
            key=lambda name: int(Path(name).stem),
        )[:n_images]
        images = [handle.read(name) for name in names]
    for name, data in zip(names, images, strict=True):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return pd.DataFrame(
        {
            "image_id": [name.removesuffix(".jpg") for name in names],
            "dataset": "fairface",
            "split": "train",
            "source_path": names,
            "emotion": None,
            "label_status": "ok",
            "emotion_votes": None,
            "race": None,
            "gender": None,
            "age": None,
            "subject_id": None,
            "image": images,
        }
    )


def naive(
    folder: Path, paths: list[str], weights: str, state_dict: Path | None, min_face_size: int
) -> dict[str, float]:
    """Per-image facenet-pytorch loop: images embedded, and seconds detecting and embedding."""
    detector = MTCNN(image_size=160, min_face_size=min_face_size, post_process=False)
    model, _ = load_facenet(weights, state_dict_path=state_dict)
    preprocess = preprocessing_for(weights)
    totals = {"embedded": 0, "detect_s": 0.0, "embed_s": 0.0}
    with torch.inference_mode():
        for path in paths:
            start = time.perf_counter()
            face = detector(Image.open(folder / path).convert("RGB"))
            detected = time.perf_counter()
            totals["detect_s"] += detected - start
            if face is None:
                continue
            model(preprocess(face.unsqueeze(0)))
            totals["embed_s"] += time.perf_counter() - detected
            totals["embedded"] += 1
    return totals


def pipeline_shard(
    manifest: Path,
    scratch: Path,
    shard: int,
    shards: int,
    alignment: dict,
    embedding: dict,
    state_dict: Path | None,
) -> dict:
    """One shard job of each rule, in a process of its own with one thread, as Snakemake runs
    them: images embedded, alignment status counts, and seconds in each rule."""
    torch.set_num_threads(1)
    aligned = scratch / f"aligned-{shard}.parquet"
    start = time.perf_counter()
    counts = align_shard(manifest, aligned, shard=shard, shards=shards, alignment=alignment)
    done_aligning = time.perf_counter()
    embedded = embed_shard(
        aligned,
        scratch / f"embeddings-{shard}.parquet",
        weights=embedding["weights"],
        weights_path=state_dict,
        batch_size=embedding["batch_size"],
        workers=embedding["loader_workers"],
        seed=0,
        device=embedding["device"],
        precision=embedding["precision"],
    )
    assert pq.read_metadata(scratch / f"embeddings-{shard}.parquet").num_rows == embedded
    return {
        "embedded": embedded,
        "counts": counts,
        "detect_s": done_aligning - start,
        "embed_s": time.perf_counter() - done_aligning,
    }


def pipeline(
    manifest: Path,
    scratch: Path,
    alignment: dict,
    embedding: dict,
    state_dict: Path | None,
    cores: int,
) -> dict:
    """``cores`` shard jobs side by side; their totals (seconds summed over jobs)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=cores, mp_context=context) as pool:
        jobs = [
            pool.submit(
                pipeline_shard, manifest, scratch, shard, cores, alignment, embedding, state_dict
            )
            for shard in range(cores)
        ]
        results = [job.result() for job in jobs]
    counts = Counter()
    for result in results:
        counts.update(result["counts"])
    totals = {key: sum(r[key] for r in results) for key in ("embedded", "detect_s", "embed_s")}
    return {**totals, "counts": dict(counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--archive", type=Path, default=ROOT / "data/fairface/fairface-img-margin025-trainval.zip"
    )
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--min-face-size",
        type=int,
        help="MTCNN min_face_size for both sides (default: alignment.common.min_face_size)",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        help="converted sandberg-keras state dict (default: random weights; the speed is the same)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.cores)
    config = yaml.safe_load(args.config.read_text())
    alignment = {**config["alignment"]["common"], **config["alignment"]["fairface"]}
    if args.min_face_size:
        alignment["min_face_size"] = args.min_face_size
    weights = "sandberg-keras" if args.weights else "random"
    embedding = {**config["embedding"], "weights": weights}

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        rows = sample_images(args.archive, args.images, scratch / "files")
        manifest = write_parquet(rows, scratch / "manifest.parquet", MANIFEST)
        paths = rows["source_path"].tolist()

        start = time.perf_counter()
        naive_totals = naive(
            scratch / "files", paths, weights, args.weights, alignment["min_face_size"]
        )
        naive_seconds = time.perf_counter() - start

        start = time.perf_counter()
        pipeline_totals = pipeline(
            manifest, scratch, alignment, embedding, args.weights, args.cores
        )
        pipeline_seconds = time.perf_counter() - start

    n = len(rows)
    print(
        f"align + embed, {n} FairFace images, {args.cores} cores, {weights} weights, "
        f"min_face_size {alignment['min_face_size']}"
    )
    print("method    wall s  images/s  embedded  detect/align s  embed s")
    for name, seconds, totals in (
        ("naive", naive_seconds, naive_totals),
        ("pipeline", pipeline_seconds, pipeline_totals),
    ):
        print(
            f"{name:<8} {seconds:7.1f}  {n / seconds:8.1f}  {totals['embedded']:8d}  "
            f"{totals['detect_s']:14.1f}  {totals['embed_s']:7.1f}"
        )
    print(f"pipeline alignment statuses: {pipeline_totals['counts']}")
    print(f"pipeline / naive throughput: {naive_seconds / pipeline_seconds:.2f}x")
    print("(pipeline seconds per rule are summed over its shard jobs)")


if __name__ == "__main__":
    main()
