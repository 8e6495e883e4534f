"""The shared trainer, the models and the data interface, on tiny synthetic tensors."""

import io
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fairfer.inference import has_native_bfloat16
from fairfer.training.data import Encoding, Split, decode_images, model_inputs
from fairfer.training.models import IMAGE_ARCHITECTURES, ModelSpec, build_network
from fairfer.training.strategies import DynamicWeighting, Strategy
from fairfer.training.trainer import (
    Runtime,
    predict_proba,
    random_affine,
    seed_everything,
    train,
    warmup_cosine,
)

ENCODING = Encoding(classes=("a", "b", "c"), attributes={"race": ("White", "Black")})
SPEC = ModelSpec(
    architecture="compact_cnn",
    input="gray48",
    width=4,
    dropout=0.1,
    epochs=3,
    batch_size=32,
    learning_rate=0.01,
    warmup_epochs=0.5,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_faces(n: int, seed: int) -> Split:
    """Class 0: bright top half; class 1: bright bottom half. Race alternates."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = torch.randint(0, 60, (n, 1, 48, 48), generator=generator).to(torch.uint8)
    for index, label in enumerate(labels):
        rows = slice(0, 24) if label == 0 else slice(24, 48)
        images[index, :, rows] += 150
    return Split(images, labels, (torch.arange(n) % 2).unsqueeze(1))


def fit(spec=SPEC, strategy=None, valid=None, seed=7, **options):
    seed_everything(seed)
    network = build_network(spec, n_classes=3)
    strategy = strategy or Strategy(label_smoothing=spec.label_smoothing)
    return train(
        network,
        strategy,
        synthetic_faces(512, 0),
        valid or synthetic_faces(64, 1),
        spec=spec,
        seed=seed,
        **options,
    )


@pytest.mark.parametrize("architecture", IMAGE_ARCHITECTURES)
@pytest.mark.parametrize(("source", "shape"), [("gray48", (1, 48, 48)), ("aligned", (3, 160, 160))])
def test_image_models_map_gray48_and_rgb160_to_logits_and_representation(
    architecture, source, shape
):
    spec = ModelSpec(architecture=architecture, input=source, image_size=160, width=4)
    network = build_network(spec, n_classes=8).eval()
    logits, representation = network(torch.randint(0, 256, (2, *shape), dtype=torch.uint8))
    assert logits.shape == (2, 8)
    assert representation.shape == (2, network.representation_dim)


def test_embedding_mlp_reads_embeddings():
    spec = ModelSpec(architecture="embedding_mlp", input="embeddings", hidden=16)
    network = build_network(spec, n_classes=7, embedding_dim=128).eval()
    logits, representation = network(torch.randn(5, 128))
    assert logits.shape == (5, 7) and representation.shape == (5, 16)
    with pytest.raises(ValueError, match="embedding_mlp"):
        ModelSpec.from_config({"architecture": "resnet18", "input": "embeddings"})


def test_frozen_layers_get_no_gradient_and_keep_their_batch_norm_statistics():
    spec = ModelSpec(architecture="resnet18", input="gray48", freeze=("trunk.conv1", "trunk.bn1"))
    network = build_network(spec, n_classes=3).train()
    assert not network.trunk.conv1.weight.requires_grad
    assert not network.trunk.bn1.training and network.trunk.layer1.training
    before = network.trunk.bn1.running_mean.clone()
    network(torch.randint(0, 256, (4, 1, 48, 48), dtype=torch.uint8))[0].sum().backward()
    assert torch.equal(network.trunk.bn1.running_mean, before)
    assert network.trunk.layer1[0].conv1.weight.grad is not None
    with pytest.raises(ValueError, match="match no parameter"):
        build_network(replace(spec, freeze=("trunk.nothing",)), n_classes=3)


def test_missing_pretrained_weights_name_the_path(tmp_path):
    spec = ModelSpec(architecture="resnet18", input="gray48", pretrained=str(tmp_path / "w.pt"))
    with pytest.raises(FileNotFoundError, match="w.pt"):
        build_network(spec, n_classes=3)


def test_decode_resizes_to_gray_or_rgb_uint8():
    buffer = io.BytesIO()
    Image.new("RGB", (64, 80), (200, 10, 10)).save(buffer, format="PNG")
    gray = decode_images([buffer.getvalue()], size=48, channels=1)
    rgb = decode_images([buffer.getvalue()] * 2, size=32, channels=3)
    assert gray.shape == (1, 1, 48, 48) and gray.dtype == torch.uint8
    assert rgb.shape == (2, 3, 32, 32) and rgb[0, 0, 0, 0] == 200


def test_model_inputs_look_up_embeddings_and_leave_out_rows_without_one():
    rows = pd.DataFrame({"image_id": ["x", "y#aug0", "z"], "input_id": ["x", "y", "z"]})
    lookup = pd.Series(
        [np.ones(4, np.float32), np.zeros(4, np.float32)], index=["x", "y"], dtype=object
    )
    inputs, kept = model_inputs(rows, source="embeddings", lookup=lookup)
    assert inputs.shape == (2, 4) and kept["image_id"].tolist() == ["x", "y#aug0"]


def test_encoding_codes_intersections_and_unknowns():
    encoding = Encoding.from_frames(
        [pd.DataFrame({"race": ["Black", None, "White"], "gender": ["Male", "Female", None]})],
        classes=["a"],
        attributes=["race", "gender"],
    )
    assert encoding.attributes["race"] == ("White", "Black")  # FairFace order, not sorted
    codes = torch.tensor([[1, 0], [0, 1], [-1, 1]])
    ids = encoding.group_ids(codes, ["race", "gender"])
    names = encoding.group_names(["race", "gender"])
    assert [names[i] for i in ids] == ["Black x Male", "White x Female", "<unknown>"]
    frame = pd.DataFrame({"emotion": ["a"], "race": [None], "gender": ["Male"]})
    labels, attributes = encoding.encode(frame)
    assert labels.tolist() == [0] and attributes.tolist() == [[-1, 0]]


def test_random_affine_keeps_shape_and_pixel_range():
    images = torch.randint(0, 256, (8, 1, 48, 48), dtype=torch.uint8)
    augmented = random_affine(images, torch.Generator().manual_seed(0))
    assert augmented.shape == images.shape
    assert augmented.min() >= 0 and augmented.max() <= 255
    assert not torch.equal(augmented, images.float())


def test_mixed_precision_is_bf16_only_where_the_device_computes_it():
    cpu = torch.device("cpu")
    native = has_native_bfloat16(cpu)
    assert Runtime(device=cpu, mixed_precision=True).autocast_dtype == (
        torch.bfloat16 if native else None
    )
    assert Runtime(device=cpu, mixed_precision=False).autocast_dtype is None


def test_warmup_then_cosine_schedule():
    factors = [warmup_cosine(s, warmup_steps=2, total_steps=10) for s in range(10)]
    assert factors[:2] == [0.5, 1.0] and factors[2] == pytest.approx(1.0)
    decay = factors[2:]
    assert decay[-1] < 0.05 and decay == sorted(decay, reverse=True)


@pytest.mark.parametrize("mixed_precision", [False, True])
def test_training_learns_and_is_deterministic_given_a_seed(mixed_precision):
    runtime = Runtime(mixed_precision=mixed_precision)
    (model, history), (second, _) = fit(runtime=runtime), fit(runtime=runtime)
    valid = synthetic_faces(64, 1)
    assert history["valid_accuracy"].max() > 0.8
    assert np.array_equal(
        predict_proba(model, valid.inputs, runtime=runtime),
        predict_proba(second, valid.inputs, runtime=runtime),
    )
    other, _ = fit(seed=8)
    assert not np.array_equal(
        predict_proba(model, valid.inputs), predict_proba(other, valid.inputs)
    )


class InterruptedOnce(DynamicWeighting):
    """Raises at the end of epoch 2 the first time, like a job killed mid-run."""

    interrupted = False

    def end_epoch(self, predicted, valid):
        if len(self.history_epochs) == 1 and not InterruptedOnce.interrupted:
            InterruptedOnce.interrupted = True
            raise KeyboardInterrupt
        self.history_epochs.append(1)
        return super().end_epoch(predicted, valid)


def dynamic(cls=DynamicWeighting):
    strategy = cls(
        ENCODING,
        synthetic_faces(512, 0),
        groups=["race"],
        step_size=2.0,
        max_weight=5.0,
        min_valid_count=1,
    )
    strategy.history_epochs = []
    return strategy


def test_resuming_a_checkpoint_gives_the_uninterrupted_result(tmp_path):
    valid = synthetic_faces(64, 1)
    reference, reference_history = fit(strategy=dynamic(), resume_path=tmp_path / "a.pt")
    resume = tmp_path / "b.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(strategy=dynamic(InterruptedOnce), resume_path=resume, fingerprint="f")
    assert resume.exists()
    resumed_strategy = dynamic(InterruptedOnce)
    resumed, history = fit(strategy=resumed_strategy, resume_path=resume, fingerprint="f")
    assert len(resumed_strategy.history_epochs) == 2  # epochs 2 and 3 only
    pd.testing.assert_frame_equal(
        history.drop(columns=["seconds", "cpu_seconds"]),
        reference_history.drop(columns=["seconds", "cpu_seconds"]),
    )
    assert np.array_equal(
        predict_proba(resumed, valid.inputs), predict_proba(reference, valid.inputs)
    )


def test_resume_file_of_other_settings_is_ignored(tmp_path):
    resume = tmp_path / "r.pt"
    fit(spec=replace(SPEC, epochs=1), resume_path=resume, fingerprint="old")
    _, history = fit(spec=replace(SPEC, epochs=1), resume_path=resume, fingerprint="new")
    assert history["epoch"].tolist() == [1]


def test_early_stopping_and_selection_read_the_validation_split_only():
    # Validation images all carry class c, which training never shows: accuracy stays 0, so
    # the first epoch is kept and training stops after `patience` epochs without improvement.
    valid = synthetic_faces(64, 1)
    valid = Split(valid.inputs, torch.full((64,), 2), valid.attributes)
    spec = replace(SPEC, epochs=6, early_stopping_patience=2)
    _, history = fit(spec=spec, valid=valid)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert history["selected"].tolist() == [True, False, False]
    _, history = fit(spec=replace(spec, early_stopping_patience=None))
    best = history["valid_accuracy"].idxmax()
    assert history.loc[best, "selected"] and history["selected"].sum() == 1


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "I;16"])
def test_decode_rescales_every_pixel_format_to_the_same_grayscale(mode):
    gray = np.tile(np.arange(0, 240, 5, dtype=np.uint8), (48, 1))
    if mode == "I;16":
        image = Image.fromarray(gray.astype(np.uint16) * 257)
    else:
        image = Image.fromarray(gray).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    decoded = decode_images([buffer.getvalue()], size=48, channels=1)
    np.testing.assert_array_equal(decoded[0, 0].numpy(), gray)
