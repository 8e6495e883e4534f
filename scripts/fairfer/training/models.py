"""Emotion networks shared by every strategy: a trunk that yields a representation, a head.

Every network maps its input (uint8 images or float embeddings) to ``(logits, representation)``:
strategies that need the representation (the adversary, the demographic heads) read it
instead of the emotion output. Input normalisation lives inside the network, so training,
prediction and a reloaded checkpoint all see the same pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

from fairfer.config_checks import ARCHITECTURE_INPUTS

logger = logging.getLogger(__name__)

#: Architectures a ``models.<name>.architecture`` config entry can name.
ARCHITECTURES: tuple[str, ...] = (
    "compact_cnn",
    "resnet18",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "embedding_mlp",
    "audio_cnn",
    "fusion_net",
    "late_fusion",
)
#: What a model reads: the dataset's own images as 48x48 grayscale, the aligned RGB crops, or
#: the FaceNet embeddings of those crops; for an audio-visual dataset's clips
#: (fairfer.audiovisual.clips): the mean FaceNet embedding of the frames (clip_embeddings), the
#: voice's log-mel spectrogram (logmel) or eGeMAPS functionals (egemaps), both concatenated
#: (audiovisual, early fusion), or two trained models' posteriors (late fusion).
INPUTS: tuple[str, ...] = (
    "gray48",
    "aligned",
    "embeddings",
    "clip_embeddings",
    "logmel",
    "egemaps",
    "audiovisual",
    "posteriors",
)
#: Architectures that read images (gray48 or aligned).
IMAGE_ARCHITECTURES: tuple[str, ...] = (
    "compact_cnn",
    "resnet18",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
)
# Inputs smaller than this keep full resolution in the first stage of the torchvision models
# (3x3 stride-1 stem, no max-pool), as CIFAR-style ResNets do; larger ones keep ImageNet's stem.
SMALL_INPUT_SIDE = 96
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    """One ``models.<name>`` config entry: the network and how it is optimised."""

    architecture: str
    input: str
    image_size: int = 48
    width: int = 32
    hidden: int = 256
    dropout: float = 0.3
    pretrained: str | None = None
    freeze: tuple[str, ...] = ()
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 3e-3
    warmup_epochs: float = 1.0
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    gradient_clip: float | None = None
    early_stopping_patience: int | None = None
    augment: bool = True
    #: late_fusion: the two trained models whose posteriors are averaged, and the grid step of
    #: the weight chosen on the validation split.
    components: tuple[str, ...] = ()
    weight_step: float = 0.05
    #: fusion_net: share of training clips with one modality's representation zeroed (half
    #: each), so neither branch can carry the other (ModDrop, Neverova et al. 2015).
    modality_dropout: float = 0.0

    @classmethod
    def from_config(cls, config: dict) -> ModelSpec:
        known = {key: config[key] for key in cls.__dataclass_fields__ if key in config}
        unknown = sorted(set(config) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown model settings {unknown}")
        for key in ("freeze", "components"):
            if key in known:
                known[key] = tuple(known[key])
        spec = cls(**known)
        if spec.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture {spec.architecture!r} is not one of {ARCHITECTURES}")
        if spec.input not in INPUTS:
            raise ValueError(f"input {spec.input!r} is not one of {INPUTS}")
        for architecture, inputs in ARCHITECTURE_INPUTS.items():
            if (spec.architecture == architecture) != (spec.input in inputs):
                raise ValueError(f"{architecture} reads {' or '.join(inputs)}, and only it does")
        if spec.architecture == "late_fusion" and len(spec.components) != 2:
            raise ValueError("late_fusion needs two components (the models it fuses)")
        return spec

    @property
    def channels(self) -> int:
        return 1 if self.input == "gray48" else 3

    @property
    def side(self) -> int:
        return 48 if self.input == "gray48" else self.image_size


class Network(nn.Module):
    """Trunk -> representation -> dropout + linear emotion head.

    Parameters whose name starts with one of ``frozen`` get no gradient, and the modules that
    hold them stay in eval mode (frozen batch-norm statistics), as in the usual fine-tuning
    recipe.
    """

    def __init__(
        self,
        trunk: nn.Module,
        *,
        representation_dim: int,
        n_classes: int,
        dropout: float,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        frozen: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.representation_dim = representation_dim
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(representation_dim, n_classes))
        self.images = mean is not None
        if self.images:
            shape = (1, len(mean), 1, 1)
            self.register_buffer("mean", torch.tensor(mean).view(shape) * 255.0)
            self.register_buffer("std", torch.tensor(std).view(shape) * 255.0)
        self.frozen = tuple(frozen)
        matched = set()
        for name, parameter in self.named_parameters():
            prefix = next((p for p in self.frozen if name.startswith(p)), None)
            if prefix is not None:
                parameter.requires_grad_(False)
                matched.add(prefix)
        if unmatched := sorted(set(self.frozen) - matched):
            names = sorted({n.rsplit(".", 1)[0] for n, _ in self.named_parameters()})
            raise ValueError(f"freeze prefixes {unmatched} match no parameter; modules: {names}")

    def train(self, mode: bool = True) -> Network:
        super().train(mode)
        for name, module in self.named_modules():
            if name and any(name.startswith(prefix) for prefix in self.frozen):
                module.eval()
        return self

    def features(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.images:
            inputs = (inputs.float() - self.mean) / self.std
        return self.trunk(inputs)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        representation = self.features(inputs)
        return self.head(representation), representation


def compact_cnn(width: int, channels: int) -> nn.Sequential:
    """VGG-style trunk for 48x48 faces: three conv stages, one more conv, global pooling."""

    def stage(inputs: int, outputs: int) -> list[nn.Module]:
        return [
            nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
            nn.Conv2d(outputs, outputs, 3, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        *stage(channels, width),
        *stage(width, 2 * width),
        *stage(2 * width, 4 * width),
        nn.Conv2d(4 * width, 8 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(8 * width),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def embedding_mlp(dimension: int, hidden: int, dropout: float) -> nn.Sequential:
    """Two hidden layers on FaceNet embeddings."""
    return nn.Sequential(
        nn.Linear(dimension, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
    )


def audio_cnn(width: int) -> nn.Sequential:
    """Four conv stages over a (1, mels, frames) log-mel spectrogram, then global pooling.

    The first batch norm standardises the dB values, so the network sees the same scale
    whatever the recording level.
    """

    def stage(inputs: int, outputs: int, pool: bool) -> list[nn.Module]:
        layers = [
            nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
            nn.BatchNorm2d(outputs),
            nn.ReLU(inplace=True),
        ]
        return [*layers, nn.MaxPool2d(2)] if pool else layers

    return nn.Sequential(
        nn.BatchNorm2d(1),
        *stage(1, width, True),
        *stage(width, 2 * width, True),
        *stage(2 * width, 4 * width, True),
        *stage(4 * width, 8 * width, False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


class FusionTrunk(nn.Module):
    """Early fusion: the clip embedding through embedding_mlp and the log-mel spectrogram
    through audio_cnn, their representations concatenated.

    The input is one flat vector per clip, ``[visual (visual_dim) | log-mel (mels x frames)]``,
    so that every strategy trains it like any other network. In training, ``modality_dropout``
    of the clips have one branch's representation zeroed (visual or audio, equally often):
    without it, the branch that fits the training clips first (often the visual one, which
    can memorise identities) starves the other.
    """

    def __init__(
        self, *, visual_dim: int, audio_shape: tuple[int, int], hidden: int, width: int,
        dropout: float, modality_dropout: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.visual_dim = visual_dim
        self.audio_shape = tuple(audio_shape)
        self.visual = embedding_mlp(visual_dim, hidden, dropout)
        self.audio = audio_cnn(width)
        self.modality_dropout = modality_dropout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        visual = self.visual(inputs[:, : self.visual_dim])
        audio = self.audio(inputs[:, self.visual_dim :].reshape(-1, 1, *self.audio_shape))
        if self.training and self.modality_dropout > 0:
            draw = torch.rand(len(inputs), 1, device=inputs.device)
            visual = visual * (draw >= self.modality_dropout / 2)
            audio = audio * ((draw < self.modality_dropout / 2) | (draw >= self.modality_dropout))
        return torch.cat([visual, audio], dim=1)


def adapt_first_conv(conv: nn.Conv2d, *, channels: int, small_input: bool) -> nn.Conv2d:
    """The first convolution for ``channels`` inputs; small inputs get a 3x3 stride-1 kernel.

    Pretrained RGB kernels become grayscale ones by summing over the colour channels (the
    response to a gray image is then unchanged); a new 3x3 kernel is trained from scratch.
    """
    kernel, stride, padding = (
        ((3, 3), (1, 1), (1, 1)) if small_input else (conv.kernel_size, conv.stride, conv.padding)
    )
    adapted = nn.Conv2d(
        channels, conv.out_channels, kernel, stride=stride, padding=padding, bias=False
    )
    if not small_input:
        with torch.no_grad():
            weight = conv.weight
            adapted.weight.copy_(weight.sum(1, keepdim=True) if channels == 1 else weight)
    return adapted


def torchvision_trunk(spec: ModelSpec, weights: str | None) -> tuple[nn.Module, int]:
    """ResNet-18 or MobileNetV3 without its classifier, adapted to the input's size and channels."""
    builder = getattr(tv_models, spec.architecture)
    try:
        network = builder(weights=weights)
    except OSError as error:
        raise RuntimeError(
            f"could not load torchvision's ImageNet weights for {spec.architecture} ({error}): "
            "put them in torch's hub cache (~/.cache/torch/hub/checkpoints), pass a local "
            "state dict as pretrained, or set pretrained: null to train from scratch"
        ) from error
    small = spec.side < SMALL_INPUT_SIDE
    if spec.architecture == "resnet18":
        network.conv1 = adapt_first_conv(network.conv1, channels=spec.channels, small_input=small)
        if small:
            network.maxpool = nn.Identity()
        dimension = network.fc.in_features
        network.fc = nn.Identity()
        return network, dimension
    stem = network.features[0]
    stem[0] = adapt_first_conv(stem[0], channels=spec.channels, small_input=small)
    # Keep MobileNet's own hidden layer; the emotion head replaces only its last Linear.
    dimension = network.classifier[-1].in_features
    network.classifier = network.classifier[:-1]
    return network, dimension


def load_pretrained(spec: ModelSpec) -> tuple[str | None, Path | None]:
    """torchvision weights name for ``imagenet``, or a local state-dict path, or neither."""
    if spec.pretrained is None:
        return None, None
    if spec.pretrained == "imagenet":
        if spec.architecture not in ("resnet18", "mobilenet_v3_small", "mobilenet_v3_large"):
            raise ValueError(f"no ImageNet weights for {spec.architecture}")
        return "DEFAULT", None
    path = Path(spec.pretrained)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights {path} do not exist; use imagenet (torchvision's cache or a "
            "download), a state dict of the trunk, or null to train from scratch"
        )
    return None, path


def build_network(
    spec: ModelSpec,
    *,
    n_classes: int,
    embedding_dim: int = 128,
    audio_shape: tuple[int, int] | None = None,
) -> Network:
    """The network of ``spec`` for ``n_classes`` emotions, with weights loaded if configured.

    ``embedding_dim`` is the length of a vector input (for fusion_net: of its visual part),
    ``audio_shape`` the (mels, frames) of fusion_net's spectrogram part.
    """
    if spec.architecture == "late_fusion":
        raise ValueError("late_fusion has no network: rule fuse_predictions averages posteriors")
    tv_weights, state_path = load_pretrained(spec)
    if spec.architecture == "embedding_mlp":
        trunk, dimension = embedding_mlp(embedding_dim, spec.hidden, spec.dropout), spec.hidden
    elif spec.architecture == "audio_cnn":
        trunk, dimension = audio_cnn(spec.width), 8 * spec.width
    elif spec.architecture == "fusion_net":
        if audio_shape is None:
            raise ValueError("fusion_net needs the spectrogram's shape (audio_shape)")
        trunk = FusionTrunk(
            visual_dim=embedding_dim,
            audio_shape=audio_shape,
            hidden=spec.hidden,
            width=spec.width,
            dropout=spec.dropout,
            modality_dropout=spec.modality_dropout,
        )
        dimension = spec.hidden + 8 * spec.width
    elif spec.architecture == "compact_cnn":
        trunk, dimension = compact_cnn(spec.width, spec.channels), 8 * spec.width
    else:
        trunk, dimension = torchvision_trunk(spec, tv_weights)
    if state_path is not None:
        missing, unexpected = trunk.load_state_dict(
            torch.load(state_path, map_location="cpu", weights_only=True), strict=False
        )
        logger.info(
            "loaded %s: %d missing, %d unexpected keys", state_path, len(missing), len(unexpected)
        )
    if spec.input not in ("gray48", "aligned"):
        mean = std = None
    elif tv_weights is not None:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if spec.channels == 1:
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    else:
        mean, std = (0.5,) * spec.channels, (0.25,) * spec.channels
    return Network(
        trunk,
        representation_dim=dimension,
        n_classes=n_classes,
        dropout=spec.dropout,
        mean=mean,
        std=std,
        frozen=spec.freeze,
    )
