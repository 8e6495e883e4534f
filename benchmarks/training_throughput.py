"""Training throughput per model: where a training step's time goes, in images per second.

For each configured model it times, at a given number of torch threads: decoding images into
the uint8 tensor (once per job in the pipeline), the on-line augmentation of one batch, a
training step (forward, backward, AdamW) and prediction, in fp32 and optionally with bf16
autocast and channels-last memory format. Inputs are real images when a manifest or aligned
shard is given (decode timing), random tensors of the right shape otherwise.

    .venv/bin/python benchmarks/training_throughput.py --threads 1 \
        --manifest results/manifests/ferplus.parquet --models compact_cnn embedding_mlp
"""

import argparse
import statistics
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
import yaml

from fairfer.schemas import ATTRIBUTE_CLASSES
from fairfer.training.data import Encoding, Split, decode_images
from fairfer.training.models import ModelSpec, build_network
from fairfer.training.strategies import build_strategy
from fairfer.training.trainer import random_affine

ROOT = Path(__file__).resolve().parents[1]


def merged(base: dict, override: dict) -> dict:
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def timed(function, repeats: int) -> float:
    """Median CPU seconds of ``repeats`` calls after one warm-up call.

    CPU time of this process, not wall time, so that other jobs sharing the cores inflate
    the figures less; with one thread it is the wall time the call takes on an idle core.
    """
    function()
    times = []
    for _ in range(repeats):
        started = time.process_time()
        function()
        times.append(time.process_time() - started)
    return statistics.median(times)


def encoded_images(spec: ModelSpec, args: argparse.Namespace) -> list[bytes] | None:
    if spec.input == "gray48" and args.manifest:
        table = pq.read_table(args.manifest, columns=["image"])
        return table.slice(0, args.images).column("image").to_pylist()
    if spec.input == "aligned" and args.aligned:
        table = pq.read_table(args.aligned, columns=["crop"]).drop_null()
        return table.slice(0, args.images).column("crop").to_pylist()
    return None


def measure(
    name: str,
    spec: ModelSpec,
    variant: str,
    strategy_name: str,
    strategy_params: dict,
    args: argparse.Namespace,
) -> dict:
    torch.manual_seed(0)
    network = build_network(spec, n_classes=8)
    batch = args.batch_size or spec.batch_size
    generator = torch.Generator().manual_seed(0)
    # Random demographics for the batch, which doubles as the strategy's training pool.
    encoding = Encoding(classes=tuple(map(str, range(8))), attributes=dict(ATTRIBUTE_CLASSES))
    attributes = torch.stack(
        [
            torch.randint(0, len(v), (batch,), generator=generator)
            for v in encoding.attributes.values()
        ],
        dim=1,
    )
    labels = torch.randint(0, 8, (batch,), generator=generator)
    strategy = build_strategy(
        strategy_name,
        strategy_params,
        encoding=encoding,
        train=Split(torch.zeros(batch, 1), labels, attributes),
        representation_dim=network.representation_dim,
        label_smoothing=spec.label_smoothing,
    )
    optimiser = torch.optim.AdamW([*network.parameters(), *strategy.parameters()], lr=1e-3)
    row = {"model": name, "strategy": strategy_name, "variant": variant, "batch": batch}
    if spec.input == "embeddings":
        inputs = torch.randn(batch, 128)
    else:
        encoded = encoded_images(spec, args)
        if encoded:
            started = time.process_time()
            decoded = decode_images(encoded, size=spec.side, channels=spec.channels)
            row["decode_us_per_image"] = 1e6 * (time.process_time() - started) / len(encoded)
            inputs = decoded[torch.arange(batch) % len(decoded)]
        else:
            inputs = torch.randint(0, 256, (batch, spec.channels, spec.side, spec.side))
            inputs = inputs.to(torch.uint8)
        row["augment_ms_per_batch"] = 1e3 * timed(
            lambda: random_affine(inputs, generator), args.repeats
        )
    bf16 = "bf16" in variant
    if "channels_last" in variant and inputs.ndim == 4:
        network = network.to(memory_format=torch.channels_last)
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    index = torch.arange(batch)

    def step() -> None:
        network.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits, representation = network(inputs)
            loss = strategy.loss(logits, representation, labels, attributes, index, 1.0)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    @torch.inference_mode()
    def predict() -> None:
        network.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            network(inputs)

    row["train_images_per_s"] = batch / timed(step, args.repeats)
    row["predict_images_per_s"] = batch / timed(predict, args.repeats)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", nargs="+", default=[str(ROOT / "config/config.yaml")])
    parser.add_argument("--models", nargs="+", help="names under models: (default: all)")
    parser.add_argument(
        "--strategies", nargs="+", default=["baseline"], help="names under strategies:"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, help="default: each model's batch_size")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (median)")
    parser.add_argument("--images", type=int, default=1024, help="images decoded")
    parser.add_argument("--manifest", help="manifest Parquet whose images are decoded")
    parser.add_argument("--aligned", help="aligned shard Parquet whose crops are decoded")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["fp32"],
        choices=["fp32", "bf16", "channels_last", "bf16+channels_last"],
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config: dict = {}
    for path in args.config:
        config = merged(config, yaml.safe_load(Path(path).read_text()))
    models = config["models"]
    for name in args.models or list(models):
        spec = ModelSpec.from_config({k: v for k, v in models[name].items() if k != "seeds"})
        for variant in args.variants:
            for strategy in args.strategies:
                params = config["strategies"][strategy]
                row = measure(name, spec, variant, strategy, params, args)
                print(
                    "  ".join(
                        f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in row.items()
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
