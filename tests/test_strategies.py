"""Each strategy's objective on tiny tensors: weights, reversed gradients, worst-cell focus."""

import numpy as np
import pandas as pd
import pytest
import torch

from fairfer.training.data import Encoding, Split
from fairfer.training.strategies import (
    Adversarial,
    DynamicWeighting,
    GradientReversal,
    GroupDRO,
    Multitask,
    Reweighting,
    Strategy,
    build_strategy,
    dynamic_group_weights,
    kamiran_calders_weights,
)

ENCODING = Encoding(
    classes=("neutral", "happiness"),
    attributes={"race": ("White", "Black"), "gender": ("Male", "Female")},
)


def split(labels, race, gender=None) -> Split:
    n = len(labels)
    gender = gender if gender is not None else [0] * n
    return Split(
        torch.zeros(n, 4),
        torch.tensor(labels),
        torch.tensor(list(zip(race, gender, strict=True))),
    )


def independence_gap(groups, labels, weights) -> float:
    frame = pd.DataFrame({"g": groups, "y": labels, "w": weights})
    total = frame["w"].sum()
    joint = frame.groupby(["g", "y"])["w"].sum() / total
    p_group = frame.groupby("g")["w"].sum() / total
    p_label = frame.groupby("y")["w"].sum() / total
    return max(abs(v - p_group[g] * p_label[y]) for (g, y), v in joint.items())


def test_reweighting_makes_group_and_class_independent():
    groups = pd.Series(["a"] * 80 + ["b"] * 20)
    labels = pd.Series(["x"] * 60 + ["y"] * 20 + ["x"] * 5 + ["y"] * 15)
    weights = kamiran_calders_weights(groups, labels, max_weight=100)
    # P(a)=0.8, P(x)=0.65, P(a, x)=0.6: w = 0.8 * 0.65 / 0.6 before rescaling to mean 1.
    raw = np.array([0.8 * 0.65 / 0.6, 0.8 * 0.35 / 0.2, 0.2 * 0.65 / 0.05, 0.2 * 0.35 / 0.15])
    counts = np.array([60, 20, 5, 15])
    expected = raw / (raw @ counts / 100)
    assert weights[[0, 60, 80, 85]] == pytest.approx(expected)
    assert independence_gap(groups, labels, weights) == pytest.approx(0, abs=1e-12)
    assert weights.mean() == pytest.approx(1.0)


def test_reweighting_clips_and_leaves_unknown_groups_at_unit_weight():
    groups = pd.Series(["a"] * 99 + [None])
    labels = pd.Series(["x"] * 98 + ["y", "y"])
    raw = kamiran_calders_weights(groups, labels, max_weight=1e9)
    clipped = kamiran_calders_weights(groups, labels, max_weight=2.0)
    assert clipped.max() / clipped.min() <= raw.max() / raw.min()
    assert clipped.max() / np.median(clipped) <= 2.0 + 1e-9


def test_intersectional_reweighting_balances_every_race_x_gender_cell():
    generator = np.random.default_rng(0)
    race = generator.integers(0, 2, 400)
    gender = generator.integers(0, 2, 400)
    # Happiness is far more common among White women than elsewhere.
    labels = (generator.random(400) < np.where((race == 0) & (gender == 1), 0.8, 0.3)).astype(int)
    train = split(labels.tolist(), race.tolist(), gender.tolist())
    strategy = Reweighting(ENCODING, train, groups=["race", "gender"], max_weight=100)
    cells = race * 2 + gender
    assert independence_gap(cells, labels, strategy.weights.numpy()) < 1e-6
    assert independence_gap(race, labels, np.ones(400)) > 0.02


def test_gradient_reversal_flips_and_scales_the_gradient():
    inputs = torch.randn(3, 4, requires_grad=True)
    (GradientReversal.apply(inputs, 0.5) * 2).sum().backward()
    assert torch.equal(inputs.grad, torch.full((3, 4), -1.0))


def test_adversary_learns_while_the_trunk_gets_the_reversed_gradient():
    torch.manual_seed(0)
    strategy = Adversarial(
        ENCODING,
        4,
        attributes=["race"],
        weight=0.7,
        warmup_epochs=0,
        hidden=0,
        condition_on_label=False,
    )
    representation = torch.randn(6, 4, requires_grad=True)
    logits = torch.zeros(6, 2)
    labels = torch.zeros(6, dtype=torch.long)
    attributes = torch.tensor([[0, 0], [1, 0], [0, 0], [1, 0], [-1, 0], [0, 0]])
    loss = strategy.loss(logits, representation, labels, attributes, torch.arange(6), 1.0)
    loss.backward()
    features = representation.detach().requires_grad_(True)
    head = strategy.adversaries["race"]
    known = attributes[:, 0] >= 0
    reference = torch.nn.functional.cross_entropy(head(features)[known], attributes[known, 0])
    (gradient,) = torch.autograd.grad(reference, features)
    assert torch.allclose(representation.grad, -0.7 * gradient, atol=1e-6)
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_adversary_weight_warms_up_linearly():
    strategy = Adversarial(
        ENCODING,
        4,
        attributes=["race"],
        weight=1.0,
        warmup_epochs=2,
        hidden=8,
        condition_on_label=True,
    )
    assert [strategy.reversal_scale(p) for p in (0, 1, 2, 5)] == [0.0, 0.5, 1.0, 1.0]
    # Conditioned on the label, the adversary reads the representation and the one-hot emotion.
    assert strategy.adversaries["race"][0].in_features == 4 + 2


def test_multitask_heads_read_the_representation():
    torch.manual_seed(0)
    strategy = Multitask(ENCODING, 4, attributes=["race", "gender"], weight=0.5, hidden=0)
    representation = torch.randn(4, 4, requires_grad=True)
    logits = torch.zeros(4, 2, requires_grad=True)
    attributes = torch.tensor([[0, 1], [1, 0], [0, 0], [1, 1]])
    labels = torch.zeros(4, dtype=torch.long)
    loss = strategy.loss(logits, representation, labels, attributes, torch.arange(4), 0.0)
    loss.backward()
    assert representation.grad.abs().sum() > 0
    emotion_only = Strategy().loss(logits, representation, labels, attributes, None, 0.0)
    assert loss.item() > emotion_only.item()
    assert {h.in_features for h in strategy.demographic_heads.values()} == {4}


def test_group_dro_upweights_the_worst_cell():
    train = split([0, 0, 1, 1], [0, 1, 0, 1])
    strategy = GroupDRO(
        ENCODING, train, groups=["race"], by_class=True, step_size=0.5, size_adjustment=0.0
    )
    initial = strategy.q.clone()
    # The (Black, happiness) sample is badly wrong, the others are right.
    logits = torch.tensor([[4.0, -4.0], [4.0, -4.0], [-4.0, 4.0], [4.0, -4.0]])
    index = torch.arange(4)
    loss = strategy.loss(logits, None, train.labels, train.attributes, index, 0.0)
    worst = 1 * 2 + 1  # cell id: group Black (1) x class happiness (1)
    assert strategy.q[worst] > initial[worst]
    others = [c for c in (0, 1, 2) if c != worst]
    assert all(strategy.q[worst] > strategy.q[c] for c in others)
    plain = Strategy().loss(logits, None, train.labels, train.attributes, index, 0.0)
    assert loss.item() > plain.item()


def test_dynamic_weights_move_toward_the_worse_group():
    weights = dynamic_group_weights(
        torch.ones(3),
        torch.tensor([0.4, 0.1, 0.9]),
        torch.tensor([True, True, False]),
        torch.tensor([50.0, 50.0, 0.0]),
        step_size=2.0,
        max_weight=10.0,
    )
    assert weights[0] > 1 > weights[1]
    assert (weights[:2] * 50).sum() / 100 == pytest.approx(1.0)


def test_dynamic_weighting_updates_from_validation_errors_only():
    train = split([0, 1, 0, 1], [0, 0, 1, 1])
    strategy = DynamicWeighting(
        ENCODING, train, groups=["race"], step_size=1.0, max_weight=5.0, min_valid_count=2
    )
    valid = split([0, 0, 0, 0, 1], [0, 0, 1, 1, -1])
    predicted = torch.tensor([0, 0, 1, 1, 0])  # White right, Black wrong, unknown wrong
    reported = strategy.end_epoch(predicted, valid)
    assert strategy.group_weights[1] > strategy.group_weights[0]
    assert strategy.group_weights[2] == 1.0  # the unknown group is never reweighted
    assert set(reported) == {"weight[White]", "weight[Black]"}
    losses = strategy.loss(
        torch.zeros(4, 2), None, train.labels, train.attributes, torch.arange(4), 1.0
    )
    assert losses.item() == pytest.approx(np.log(2), rel=1e-5)


def test_build_strategy_adds_the_dataset_to_cross_dataset_groups():
    encoding = Encoding(
        classes=("neutral", "happiness"),
        attributes={"race": ("White", "Black"), "dataset": ("ferplus", "rafdb")},
    )
    train = Split(torch.zeros(2, 4), torch.tensor([0, 1]), torch.tensor([[0, 0], [1, 1]]))
    params = {
        "groups": ["race"],
        "step_size": 1.0,
        "max_weight": 5.0,
        "min_valid_count": 1,
        "second_dataset": "rafdb",
    }
    strategy = build_strategy(
        "dynamic_weighting",
        params,
        encoding=encoding,
        train=train,
        representation_dim=4,
        label_smoothing=0.0,
    )
    assert strategy.groups == ["dataset", "race"]
    assert strategy.train_groups.tolist() == [0, 3]
    with pytest.raises(ValueError, match="unknown strategy"):
        build_strategy(
            "nope", {}, encoding=encoding, train=train, representation_dim=4, label_smoothing=0
        )
