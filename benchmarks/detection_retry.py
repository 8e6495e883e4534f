"""Print FairFace detection rates with and without the alignment retry pass.

Aligns a seeded sample of FairFace val with the configured first-pass settings, then runs the
retry pass over the misses, as ``align_faces`` does, and prints both detection rates and the
retried images' detection probabilities.

    .venv/bin/python benchmarks/detection_retry.py --val 2000
"""

import argparse
import io
import time
import zipfile
from pathlib import Path

import pandas as pd
import torch
import yaml
from PIL import Image

from fairfer.faces.alignment import FaceAligner, RetrySettings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "fairface")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml")
    parser.add_argument("--val", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(2)
    alignment = yaml.safe_load(args.config.read_text())["alignment"]
    settings = {**alignment["common"], **alignment["fairface"]}
    archive = zipfile.ZipFile(args.data / "fairface-img-margin025-trainval.zip")
    files = pd.read_csv(args.data / "fairface_label_val.csv")["file"]
    images = [
        Image.open(io.BytesIO(archive.read(name)))
        for name in files.sample(args.val, random_state=args.seed)
    ]
    common = {
        "image_size": settings["image_size"],
        "face_scale": settings["face_scale"],
        "min_face_size": settings["min_face_size"],
        "pad_fraction": settings["pad_fraction"],
        "upscale_min_side": settings["upscale_min_side"],
        "thresholds": tuple(settings["thresholds"]),
        "fallback": "reject",
    }
    started = time.perf_counter()
    first = FaceAligner(**common).align(images)
    first_seconds = time.perf_counter() - started
    missed = [image for image, result in zip(images, first, strict=True) if result is None]
    retry = RetrySettings(
        pad_fraction=settings["retry"]["pad_fraction"],
        thresholds=tuple(settings["retry"]["thresholds"]),
    )
    started = time.perf_counter()
    retry_aligner = FaceAligner(
        **{**common, "pad_fraction": retry.pad_fraction, "thresholds": retry.thresholds}
    )
    second = retry_aligner.align(missed)
    retry_seconds = time.perf_counter() - started
    found = [result for result in second if result is not None]
    n = len(images)
    print(f"FairFace val sample: {n} images (seed {args.seed})")
    print(
        f"first pass: {n - len(missed)} detected ({(n - len(missed)) / n:.2%}), "
        f"{first_seconds:.0f} s"
    )
    print(
        f"retry pass ({retry.pad_fraction} padding, thresholds {list(retry.thresholds)}): "
        f"{len(found)} of {len(missed)} misses found, {retry_seconds:.0f} s"
    )
    print(f"with retry: {(n - len(missed) + len(found)) / n:.2%} detected")
    print("retried detection probabilities:", sorted(round(r.probability, 3) for r in found))


if __name__ == "__main__":
    main()
