"""Fine-tuning FaceNet on cached activations: split, heads, freezing, caching, determinism."""

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fairfer.faces.facenet import build_facenet
from fairfer.faces.finetune import (
    FACENET_BLOCKS,
    ActivationCache,
    FineTuneSettings,
    build_multitask,
    cache_activations,
    class_indices,
    embed_cached,
    evaluate_heads,
    labelled_crops,
    load_checkpoint,
    save_checkpoint,
    selection_split,
    train_multitask,
    training_step,
)
from fairfer.schemas import ALIGNED, MANIFEST, write_parquet

CLASSES = {"race": ["a", "b", "c"], "gender": ["m", "f"]}
# Smallest input that still leaves Mixed_7a a 1x1 map: keeps the real network fast.
SIDE = 80


def facenet(seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_facenet(embedding_size=8)


def model(trainable_blocks: int = 2, seed: int = 0):
    return build_multitask(
        facenet(), trainable_blocks=trainable_blocks, attribute_classes=CLASSES, seed=seed
    )


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def labels(n: int = 6) -> dict[str, torch.Tensor]:
    return {"race": torch.arange(n) % 3, "gender": torch.arange(n) % 2}


def test_heads_and_embedding_match_facenet():
    network = model(trainable_blocks=3)
    x = images(4)
    logits = network(network.frozen(x))
    assert {name: tuple(t.shape) for name, t in logits.items()} == {
        "race": (4, 3),
        "gender": (4, 2),
    }
    network.eval()
    with torch.no_grad():
        embedding = network.embedder()(x)
        expected = facenet()(x)
    assert embedding.shape == (4, 8)
    torch.testing.assert_close(torch.nn.functional.normalize(embedding), expected)


@pytest.mark.parametrize("trainable_blocks", [0, 1, 6, len(FACENET_BLOCKS)])
def test_only_the_top_trains(trainable_blocks):
    network = model(trainable_blocks)
    frozen = {name for name, p in network.frozen.named_parameters()}
    trainable = {name for name, p in network.named_parameters() if p.requires_grad}
    assert all(name.startswith(("top.", "heads.")) for name in trainable)
    assert not any(p.requires_grad for p in network.frozen.parameters())
    assert len(network.frozen) == len(FACENET_BLOCKS) - trainable_blocks
    assert bool(frozen) == (trainable_blocks < len(FACENET_BLOCKS))
    network.train()
    assert not network.frozen.training and network.top.training


def test_trainable_blocks_out_of_range():
    with pytest.raises(ValueError, match="trainable_blocks"):
        model(len(FACENET_BLOCKS) + 1)


def test_training_step_moves_only_trainable_weights():
    network = model(trainable_blocks=1)
    cache = cache_activations(
        network.frozen, [images(6)], mirrored=False, device=torch.device("cpu")
    )
    before = {name: t.clone() for name, t in network.state_dict().items()}
    optimiser = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=0.1)
    losses = training_step(network, cache.batch(torch.arange(6)), labels(), optimiser)
    assert set(losses) == {"race", "gender"} and all(np.isfinite(list(losses.values())))
    after = network.state_dict()
    # Frozen weights and BatchNorm statistics stay; every trainable parameter moves.
    for name, value in before.items():
        if name.startswith("frozen."):
            assert torch.equal(value, after[name]), name
    for name, parameter in network.named_parameters():
        assert torch.equal(before[name], parameter.detach()) != parameter.requires_grad, name


def test_cache_equals_frozen_forward_and_mirrors():
    # Only the stem is frozen: the cheapest cut that still runs real convolutions.
    network = model(trainable_blocks=len(FACENET_BLOCKS) - 1)
    x = images(3)
    cache = cache_activations(
        network.frozen, [x[:2], x[2:]], mirrored=True, device=torch.device("cpu")
    )
    with torch.no_grad():
        expected = network.frozen(x)
        expected_mirror = network.frozen(x.flip(-1))
    assert cache.original.dtype == torch.float16 and len(cache) == 3
    torch.testing.assert_close(cache.original.float(), expected, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(cache.mirrored.float(), expected_mirror, atol=1e-2, rtol=1e-2)
    mirror = torch.tensor([True, False])
    batch = cache.batch(torch.tensor([0, 1]), mirror)
    assert torch.equal(batch[0], cache.mirrored[0].float())
    assert torch.equal(batch[1], cache.original[1].float())
    subset = cache.subset(np.array([2, 0]))
    assert torch.equal(subset.mirrored[0], cache.mirrored[2])


def random_cache(n: int, *, seed: int, mirrored: bool) -> ActivationCache:
    """Stand-in for what the frozen part gives Block8_6 at this input size: (1792, 1, 1)."""
    generator = torch.Generator().manual_seed(seed)
    original = torch.randn(n, 1792, 1, 1, generator=generator).half()
    mirror = torch.randn(n, 1792, 1, 1, generator=generator).half() if mirrored else None
    return ActivationCache(original, mirror)


def test_training_is_deterministic_and_keeps_the_best_epoch(tmp_path):
    settings = FineTuneSettings(trainable_blocks=1, epochs=3, batch_size=4, patience=2)
    fit = random_cache(8, seed=0, mirrored=True)
    selection = random_cache(6, seed=1, mirrored=False)

    def run():
        network = model(trainable_blocks=1)
        history = train_multitask(
            network,
            fit,
            labels(8),
            selection,
            labels(6),
            settings=settings,
            seed=3,
            device=torch.device("cpu"),
        )
        return network, history

    first, history = run()
    second, _ = run()
    second_state = second.state_dict()
    for name, value in first.state_dict().items():
        assert torch.equal(value, second_state[name]), name
    assert len(history) == 3 and history["selected"].sum() == 1
    best = history.loc[history["selected"], "selection_loss"].item()
    assert best == history["selection_loss"].min()
    assert embed_cached(first, selection, batch_size=4, device=torch.device("cpu")).shape == (6, 8)

    path = save_checkpoint(
        first, tmp_path / "model.pt", weights="random", attribute_classes=CLASSES, settings=settings
    )
    loaded, weights = load_checkpoint(path)
    assert weights == "random" and loaded.trainable_blocks == 1
    activations = selection.batch(torch.arange(6))
    with torch.no_grad():
        torch.testing.assert_close(loaded.top(activations), first.eval().top(activations))


def test_early_stopping_restores_the_selected_epoch():
    settings = FineTuneSettings(
        trainable_blocks=0, epochs=30, batch_size=4, patience=1, learning_rate=0.5
    )
    network = model(trainable_blocks=0)
    selection = random_cache(6, seed=1, mirrored=False)
    history = train_multitask(
        network,
        random_cache(8, seed=0, mirrored=False),
        labels(8),
        selection,
        # Held-out labels unrelated to the training labels: the held-out loss soon rises.
        {"race": torch.tensor([2, 0, 1, 1, 2, 0]), "gender": torch.tensor([1, 1, 0, 0, 1, 0])},
        settings=settings,
        seed=0,
        device=torch.device("cpu"),
    )
    assert len(history) < 30
    assert not history["selected"].iloc[-1]
    selected = history.loc[history["selected"], "selection_loss"].item()
    now = evaluate_heads(
        network,
        selection,
        {"race": torch.tensor([2, 0, 1, 1, 2, 0]), "gender": torch.tensor([1, 1, 0, 0, 1, 0])},
        batch_size=4,
        device=torch.device("cpu"),
    )
    assert now["loss"] == pytest.approx(selected)


def test_selection_split_is_stratified_and_seeded():
    strata = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    mask = selection_split(strata, fraction=0.2, seed=0)
    assert mask.sum() == 20
    assert pd.Series(strata)[mask].value_counts().to_dict() == {"a": 10, "b": 6, "c": 4}
    assert np.array_equal(mask, selection_split(strata, fraction=0.2, seed=0))
    assert not np.array_equal(mask, selection_split(strata, fraction=0.2, seed=1))


def test_labelled_crops_and_class_indices(tmp_path):
    def png() -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buffer, format="PNG")
        return buffer.getvalue()

    aligned = pd.DataFrame(
        {
            "image_id": ["x", "y", "z", "w"],
            "dataset": "fairface",
            "split": ["train", "train", "valid", "train"],
            "status": ["ok", "rejected", "ok", "fallback"],
            "reject_reason": None,
            "detection_probability": None,
            "detection_pass": None,
            "box": None,
            "landmarks": None,
            "crop": [png(), None, png(), png()],
        }
    )
    write_parquet(aligned, tmp_path / "shard-0.parquet", ALIGNED)
    manifest = pd.DataFrame(
        {
            "image_id": ["x", "y", "z", "w"],
            "dataset": "fairface",
            "split": ["train", "train", "valid", "train"],
            "source_path": "p",
            "emotion": None,
            "label_status": "ok",
            "emotion_votes": None,
            "race": ["b", "a", "c", "c"],
            "gender": ["m", "f", "f", "f"],
            "age": None,
            "subject_id": None,
            "image": b"",
        }
    )
    write_parquet(manifest, tmp_path / "manifest.parquet", MANIFEST)
    frame = labelled_crops(
        [tmp_path / "shard-0.parquet"],
        tmp_path / "manifest.parquet",
        splits=["train"],
        attributes=list(CLASSES),
    )
    assert frame["image_id"].tolist() == ["x", "w"]
    indices = class_indices(frame, CLASSES)
    assert indices["race"].tolist() == [1, 2] and indices["gender"].tolist() == [0, 1]
    with pytest.raises(ValueError, match="not among"):
        class_indices(frame.assign(race="q"), CLASSES)
