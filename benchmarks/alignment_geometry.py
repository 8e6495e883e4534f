"""Print FairFace race-probe accuracy and detection rate for several alignment geometries.

For each (face_scale, pad_fraction) setting: align a seeded FairFace train and val sample with
the pipeline's FaceAligner, embed with the converted Sandberg FaceNet, fit a logistic
regression on train embeddings and score race (7 classes) on val. The converted weights are
the ``convert_facenet_weights`` rule's output.

    .venv/bin/python benchmarks/alignment_geometry.py --train 1500 --val 700
"""

import argparse
import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fairfer.faces.alignment import FaceAligner
from fairfer.faces.facenet import load_facenet, preprocessing_for

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = [(0.8, 0.0), (1.0, 0.25), (1.1, 0.25)]


def embed(frame, archive, aligner, model, preprocess) -> tuple[np.ndarray, float]:
    vectors, detected = [], 0
    for start in range(0, len(frame), 64):
        files = frame["file"].iloc[start : start + 64]
        results = aligner.align([Image.open(io.BytesIO(archive.read(f))) for f in files])
        detected += sum(result.status == "ok" for result in results)
        crops = np.stack([np.asarray(result.crop) for result in results])
        with torch.inference_mode():
            batch = torch.from_numpy(crops).permute(0, 3, 1, 2).float()
            vectors.append(model(preprocess(batch)).numpy())
    return np.concatenate(vectors), detected / len(frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "fairface")
    parser.add_argument(
        "--weights",
        type=Path,
        default=ROOT / "resources/facenet/sandberg-keras-6acdd8fb3a3fb2b5.pt",
    )
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--val", type=int, default=700)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train = pd.read_csv(args.data / "fairface_label_train.csv").sample(args.train, random_state=0)
    val = pd.read_csv(args.data / "fairface_label_val.csv").sample(args.val, random_state=0)
    archive = zipfile.ZipFile(args.data / "fairface-img-margin025-trainval.zip")
    model, _ = load_facenet("sandberg-keras", state_dict_path=args.weights)
    preprocess = preprocessing_for("sandberg-keras")
    print(f"FairFace race probe: {args.train} train -> {args.val} val images")
    print("face_scale  pad_fraction  race_accuracy  detected_train  detected_val  seconds")
    for face_scale, pad in SETTINGS:
        start = time.perf_counter()
        aligner = FaceAligner(
            face_scale=face_scale, pad_fraction=pad, upscale_min_side=160 if pad else 0
        )
        x_train, detected_train = embed(train, archive, aligner, model, preprocess)
        x_val, detected_val = embed(val, archive, aligner, model, preprocess)
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        accuracy = probe.fit(x_train, train["race"]).score(x_val, val["race"])
        print(
            f"{face_scale:>10}  {pad:>12}  {accuracy:>13.3f}  {detected_train:>14.3f}  "
            f"{detected_val:>12.3f}  {time.perf_counter() - start:>7.0f}"
        )


if __name__ == "__main__":
    main()
