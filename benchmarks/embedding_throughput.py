"""Print FaceNet embedding throughput (images/s) on real FairFace crops.

Aligns ``--images`` FairFace images once (not timed), then times the embedding rule's code
path (DataLoader decoding PNG crops in worker processes, batched forward pass) for each
combination of loader workers and batch size, with ``--threads`` torch threads, on the CPU or,
with ``--device cuda``, on a GPU (crops are decoded on the CPU either way).

    .venv/bin/python benchmarks/embedding_throughput.py --images 512 --threads 2
    .venv/bin/python benchmarks/embedding_throughput.py --images 2048 --device cuda
"""

import argparse
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from align_faces import align_rows  # noqa: E402

from fairfer.alignment import FaceAligner  # noqa: E402
from fairfer.embedding import crop_loader, embed_batches  # noqa: E402
from fairfer.facenet import load_facenet, preprocessing_for  # noqa: E402
from fairfer.schemas import ALIGNED, write_parquet  # noqa: E402


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
    """Runs ``model`` on ``device`` and returns CPU tensors, as the embedding rule expects."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model = model.to(device)
        self.device = device

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
    parser.add_argument(
        "--weights",
        type=Path,
        help="converted sandberg-keras state dict (default: random weights; the speed is the same)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = "sandberg-keras" if args.weights else "random"
    model, _ = load_facenet(weights, state_dict_path=args.weights)
    model = OnDevice(model, torch.device(args.device))
    preprocess = preprocessing_for(weights)
    with torch.inference_mode():
        # Untimed warm-up: first-call allocations and, on a GPU, kernel selection.
        model(preprocess(torch.zeros(8, 3, 160, 160)))
    with tempfile.TemporaryDirectory() as scratch:
        path = aligned_sample(args.archive, args.images, Path(scratch) / "aligned.parquet")
        print(
            f"FaceNet embedding, {args.images} FairFace crops, {args.threads} torch threads, "
            f"device {args.device}"
        )
        print("loader_workers  batch_size  images/s")
        for workers in (0, 1, 2):
            for batch_size in (32, 64):
                loader = crop_loader(path, batch_size=batch_size, workers=workers)
                start = time.perf_counter()
                count = sum(len(v) for _, v in embed_batches(model, preprocess, loader))
                rate = count / (time.perf_counter() - start)
                print(f"{workers:>14}  {batch_size:>10}  {rate:8.1f}")


if __name__ == "__main__":
    main()
