"""Reference models: every model on every input shape, argument errors, layer groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrstudy.errors import UserInputError
from lrstudy.train.models import MODELS, build_model, layer_groups, model_arg_names, model_names

SHAPES = [
    (40,),
    (64,),
    (8, 8),
    (28, 28),
    (2,),
]  # mnist1d, digits flat/image, idx MNIST, 2-D synthetic
CASES = [
    (name, shape)
    for name in MODELS
    for shape in SHAPES
    if not (name == "cnn" and shape == (2,))  # too short for three convs; see its own test
]


@pytest.mark.parametrize(("name", "shape"), CASES)
def test_forward_and_one_sgd_step(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, num_classes=7)
    x, y = torch.randn(5, *shape), torch.arange(5) % 7
    logits = model(x)
    assert logits.shape == (5, 7)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", list(MODELS))
def test_deterministic_given_seed(name):
    torch.manual_seed(3)
    a = build_model(name, (40,), 10)
    torch.manual_seed(3)
    b = build_model(name, (40,), 10)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_reference_shapes():
    # The MNIST-1D paper's ConvBase: 25 channels x 5 positions -> 125 head inputs for length 40.
    cnn = build_model("cnn", (40,), 10)
    assert cnn.head.in_features == 125
    assert sum(p.numel() for p in cnn.parameters()) == 150 + 1900 + 1900 + 1260
    mlp = build_model("mlp", (40,), 10)
    assert [m.out_features for m in (mlp.fc1, mlp.fc2, mlp.head)] == [100, 100, 10]
    assert build_model("gru", (8, 8), 10).gru.input_size == 8  # rows are steps, columns features
    # The paper's GRUBase: 6 hidden, bidirectional, head over all 40 steps x 2 x 6 outputs.
    gru = build_model("gru", (40,), 10, {"hidden": 6, "bidirectional": True, "readout": "all"})
    assert gru.head.in_features == 480
    assert sum(p.numel() for p in gru.parameters()) == 2 * 3 * (6 + 36 + 12) + 4810


@pytest.mark.parametrize(
    ("name", "args", "groups"),
    [
        ("logistic", {}, ["head"]),
        ("mlp", {}, ["fc1", "fc2", "head"]),
        ("mlp", {"hidden": [], "activation": "tanh"}, ["head"]),
        (
            "mlp",
            {"hidden": [16, 8, 4], "activation": "gelu", "dropout": 0.5},
            ["fc1", "fc2", "fc3", "head"],
        ),
        ("cnn", {"channels": 4}, ["conv1", "conv2", "conv3", "head"]),
        ("gru", {"hidden": 8, "layers": 2, "bidirectional": True}, ["gru", "head"]),
        ("gru", {"hidden": 4, "bidirectional": True, "readout": "all"}, ["gru", "head"]),
    ],
)
def test_args_and_layer_groups(name, args, groups):
    model = build_model(name, (8, 8), 3, args)
    assert model(torch.randn(2, 8, 8)).shape == (2, 3)
    found = layer_groups(model)
    assert [g for g, _ in found] == groups
    ids = [id(p) for _, params in found for p in params]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each exactly once


def test_model_arg_names():
    assert model_names() == ["logistic", "mlp", "cnn", "gru"]
    assert model_arg_names("logistic") == []
    assert model_arg_names("mlp") == ["hidden", "activation", "dropout"]
    assert model_arg_names("cnn") == ["channels"]
    assert model_arg_names("gru") == ["hidden", "layers", "bidirectional", "readout"]


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("resnet", {}, "unknown model 'resnet'; expected one of: logistic, mlp, cnn, gru"),
        (
            "mlp",
            {"width": 3},
            "model 'mlp': unknown args width; allowed: hidden, activation, dropout",
        ),
        ("logistic", {"bias": False}, "model 'logistic': unknown args bias; it takes none"),
        ("mlp", {"hidden": 100}, "model 'mlp': hidden must be a list of widths, got 100"),
        ("mlp", {"hidden": [10, 0]}, "model 'mlp': hidden must be a positive integer, got 0"),
        (
            "mlp",
            {"activation": "swish"},
            "unknown activation 'swish'; expected one of: relu, tanh, gelu",
        ),
        ("mlp", {"dropout": 1.0}, "model 'mlp': dropout must be in [0, 1), got 1.0"),
        ("cnn", {"channels": 2.5}, "model 'cnn': channels must be a positive integer, got 2.5"),
        ("gru", {"bidirectional": "yes"}, "model 'gru': bidirectional must be true or false"),
        (
            "gru",
            {"readout": "mean"},
            "model 'gru': unknown readout 'mean'; expected one of: last, all",
        ),
    ],
)
def test_bad_model_or_args(name, args, message):
    with pytest.raises(UserInputError) as err:
        build_model(name, (40,), 10, args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cnn_rejects_too_short_input():
    with pytest.raises(UserInputError, match="at least 3 values, got 2"):
        build_model("cnn", (2,), 2)


def test_layer_groups_fallback_for_any_module():
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))  # owned by the root module itself
            self.body = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
            self.frozen = nn.Linear(4, 4).requires_grad_(False)
            self.out = nn.Linear(4, 4)
            self.out.weight = self.body[0].weight  # tied: must appear only once
            self.norm = nn.LayerNorm(4)

    model = Custom()
    groups = layer_groups(model)
    assert [g for g, _ in groups] == ["root", "body_0", "body_2", "out", "norm"]
    ids = [id(p) for _, params in groups for p in params]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    assert [p.shape for p in dict(groups)["out"]] == [torch.Size([4])]  # only its own bias
