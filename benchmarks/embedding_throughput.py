"""Print FaceNet embedding throughput (images/s) on real FairFace crops.

Aligns ``--images`` FairFace images once (not timed), then times the embedding rule's code
path (DataLoader decoding PNG crops in worker processes, batched forward pass) for each
combination of network form, loader workers and batch size, with ``--threads`` torch threads,
on the CPU or, with ``--device cuda``, on a GPU (crops are decoded on the CPU either way).
Network forms: facenet-pytorch's network as it is (plain float32), and the rule's
``InferenceNetwork`` (batch norm folded, channels-last) in float32 and in bfloat16, with the
smallest cosine similarity of their embeddings to the plain network's.

    .venv/bin/python benchmarks/embedding_throughput.py --images 512 --threads 2
    .venv/bin/python benchmarks/embedding_throughput.py --images 2048 --device cuda
"""

import argparse
import copy
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from fairfer.faces.alignment import FaceAligner
from fairfer.faces.embedding import crop_loader, embed_batches
from fairfer.faces.facenet import load_facenet, preprocessing_for
from fairfer.inference import InferenceNetwork, resolve_precision
from fairfer.rule_inputs import rule_script
from fairfer.schemas import ALIGNED, write_parquet

ROOT = Path(__file__).resolve().parents[1]
align_rows = rule_script("align_faces").align_rows


def aligned_sample(archive: Path, n_images: int, destination: Path) -> Path:
    with zipfile.ZipFile(archive) as handle:
        names = sorted(n for n in handle.namelist() if n.endswith(".jpg"))[:n_images]
        images = [handle.read(name) for name in names]
    rows = pa.table(
        {
            "image_id": names,
            "dataset": ["fairface"] * len(names),
            "split": ["train"] * len(names),
            "image": images,
        }
    )
    records = align_rows(rows, FaceAligner(pad_fraction=0.25, upscale_min_side=160))
    return write_parquet(pd.DataFrame(records), destination, ALIGNED)


class OnDevice(torch.nn.Module):
    """The plain network on ``device``, returning CPU tensors as the embedding rule expects."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model = model.to(device)
        self.device = device

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.to(self.device, non_blocking=True)).cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--archive", type=Path, default=ROOT / "data/fairface/fairface-img-margin025-trainval.zip"
    )
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is available")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument(
        "--weights",
        type=Path,
        help="converted sandberg-keras state dict (default: random weights; the speed is the same)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    weights = "sandberg-keras" if args.weights else "random"
    network, _ = load_facenet(weights, state_dict_path=args.weights)
    variants = {
        "plain float32": OnDevice(copy.deepcopy(network), device),
        **{
            f"fused {precision}": InferenceNetwork(
                network,
                device=device,
                dtype=resolve_precision(precision, device),
                normalise_output=True,
            )
            for precision in ("float32", "bfloat16")
        },
    }
    preprocess = preprocessing_for(weights)
    for model in variants.values():
        # Untimed warm-up: first-call allocations and, on a GPU, kernel selection.
        model(preprocess(torch.zeros(8, 3, 160, 160)))
    with tempfile.TemporaryDirectory() as scratch:
        path = aligned_sample(args.archive, args.images, Path(scratch) / "aligned.parquet")
        print(
            f"FaceNet embedding, {args.images} FairFace crops, {args.threads} torch threads, "
            f"device {args.device}, {weights} weights; cosine similarity to plain float32"
        )
        print("network          loader_workers  batch_size  images/s  min cosine")
        reference = None
        for name, model in variants.items():
            for workers in args.workers:
                for batch_size in args.batch_sizes:
                    loader = crop_loader(path, batch_size=batch_size, workers=workers)
                    start = time.perf_counter()
                    vectors = np.concatenate(
                        [v for _, v in embed_batches(model, preprocess, loader)]
                    )
                    rate = len(vectors) / (time.perf_counter() - start)
                    reference = vectors if reference is None else reference
                    cosine = (vectors * reference).sum(axis=1).min()
                    print(
                        f"{name:<15}  {workers:>14}  {batch_size:>10}  {rate:8.1f}  {cosine:10.5f}"
                    )


if __name__ == "__main__":
    main()
