"""Inference copies of networks: folded batch norm, channels-last, bfloat16, device choice."""

import pytest
import torch
import torch.nn.functional as F

from fairfer.faces.facenet import build_facenet
from fairfer.faces.finetune import build_multitask
from fairfer.inference import (
    InferenceNetwork,
    dtype_name,
    has_native_bfloat16,
    resolve_device,
    resolve_precision,
)

CPU = torch.device("cpu")
# Smallest input that still leaves Mixed_7a a 1x1 map: keeps the real network fast.
SIDE = 80


def facenet(embedding_size: int = 128):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network = build_facenet(embedding_size=embedding_size)
    # Batch-norm statistics away from 0 and 1, so that folding them is really exercised.
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return network.eval()


def images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


def test_float32_copy_equals_the_network_and_leaves_it_untouched():
    network = facenet()
    before = {name: tensor.clone() for name, tensor in network.state_dict().items()}
    with torch.inference_mode():
        expected = network(images())
    fast = InferenceNetwork(network, device=CPU, dtype=torch.float32, normalise_output=True)
    actual = fast(images())
    assert actual.dtype == torch.float32 and actual.device == CPU
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=1e-4)
    assert all(torch.equal(before[name], t) for name, t in network.state_dict().items())


def test_bfloat16_copy_is_close_and_renormalised():
    network = facenet()
    with torch.inference_mode():
        expected = network(images())
    fast = InferenceNetwork(network, device=CPU, dtype=torch.bfloat16, normalise_output=True)
    actual = fast(images())
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual.norm(dim=1), torch.ones(len(actual)), atol=1e-6, rtol=0)
    assert F.cosine_similarity(actual, expected).min() > 0.99


def test_finetuned_embedder_is_not_renormalised():
    model = build_multitask(
        facenet(embedding_size=8),
        trainable_blocks=2,
        attribute_classes={"race": ["a", "b"]},
        seed=0,
    )
    embedder = model.embedder()
    with torch.inference_mode():
        expected = embedder(images())
    fast = InferenceNetwork(embedder, device=CPU, dtype=torch.float32, normalise_output=False)
    torch.testing.assert_close(fast(images()), expected, atol=2e-5, rtol=1e-4)


def test_precision_choice():
    assert resolve_precision("float32", CPU) == torch.float32
    assert resolve_precision("bfloat16", CPU) == torch.bfloat16
    native = torch.bfloat16 if has_native_bfloat16(CPU) else torch.float32
    assert resolve_precision("auto", CPU) == native
    assert dtype_name(torch.bfloat16) == "bfloat16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("float16", CPU)


def test_device_choice_names_the_key():
    assert resolve_device("cpu") == CPU
    if not torch.cuda.is_available():
        assert resolve_device("auto") == CPU
        with pytest.raises(RuntimeError, match="embedding.device is 'cuda'"):
            resolve_device("cuda", key="embedding.device")
