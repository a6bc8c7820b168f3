"""Reference models: small classifiers for learning-rate studies on small datasets.

Every model takes a float tensor (B, *input_shape) and returns logits (B, num_classes). Layers are
attributes with readable names (fc1, conv1, gru, head, ...) registered input to output, so
`layer_groups` can hand them to the optimizer as named groups for layer-wise learning rates.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lrstudy.errors import UserInputError

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
}


def _positive_int(model: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"model {model!r}: {key} must be a positive integer, got {value!r}")
    return value


class Logistic(nn.Module):
    """Multinomial logistic regression: the baseline every other model should beat."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.head = nn.Linear(math.prod(input_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


class MLP(nn.Module):
    """Fully connected net; the MNIST-1D paper's MLP is hidden=[100, 100] with ReLU."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        hidden: list[int] | tuple[int, ...] = (100, 100),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(hidden, int) or not isinstance(hidden, (list, tuple)):
            raise UserInputError(f"model 'mlp': hidden must be a list of widths, got {hidden!r}")
        widths = [_positive_int("mlp", "hidden", h) for h in hidden]
        if activation not in _ACTIVATIONS:
            raise UserInputError(
                f"model 'mlp': unknown activation {activation!r}; "
                f"expected one of: {', '.join(_ACTIVATIONS)}"
            )
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not 0 <= dropout < 1
        ):
            raise UserInputError(f"model 'mlp': dropout must be in [0, 1), got {dropout!r}")
        self.hidden_names = [f"fc{i + 1}" for i in range(len(widths))]
        width = math.prod(input_shape)
        for name, out in zip(self.hidden_names, widths, strict=True):
            setattr(self, name, nn.Linear(width, out))
            width = out
        self.act = _ACTIVATIONS[activation]()
        self.drop = nn.Dropout(float(dropout))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for name in self.hidden_names:
            x = self.drop(self.act(getattr(self, name)(x)))
        return self.head(x)


class CNN(nn.Module):
    """The MNIST-1D paper's ConvBase: three stride-2 Conv1d + ReLU, then a linear head.

    Any input is read as one channel over its flattened samples: (L,) is a length-L signal and an
    (H, W) image is a row-major sequence of H*W pixels. That keeps the model exactly the paper's for
    MNIST-1D and independent of image height; a 2-D CNN would suit images better but is not the
    point of a learning-rate reference model.
    """

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, *, channels: int = 25
    ) -> None:
        super().__init__()
        c = _positive_int("cnn", "channels", channels)
        length = math.prod(input_shape)
        if length < 3:  # conv1 (kernel 5, padding 1) needs at least 3 positions
            raise UserInputError(f"model 'cnn': needs inputs of at least 3 values, got {length}")
        self.conv1 = nn.Conv1d(1, c, 5, stride=2, padding=1)
        self.conv2 = nn.Conv1d(c, c, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(c, c, 3, stride=2, padding=1)
        with torch.no_grad():  # the head's width depends on the input length: measure it once
            flat = self._features(torch.zeros(1, length)).shape[1]
        self.head = nn.Linear(flat, num_classes)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).unsqueeze(1)  # (B, 1, L)
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._features(x))


class GRU(nn.Module):
    """A GRU over the input sequence, classifying from its hidden states.

    (L,) is L steps of one feature; (H, W) is H steps of W features (rows of an image); higher ranks
    flatten everything after the first dimension into the features.

    readout: "last" classifies from the last layer's final hidden state (both directions when
    bidirectional); "all" from the last layer's outputs at every time step, concatenated — the
    MNIST-1D paper's GRU (hidden=6, bidirectional=true, readout=all), whose head sees where
    along the signal each feature occurs.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        hidden: int = 64,
        layers: int = 1,
        bidirectional: bool = False,
        readout: str = "last",
    ) -> None:
        super().__init__()
        hidden = _positive_int("gru", "hidden", hidden)
        layers = _positive_int("gru", "layers", layers)
        if not isinstance(bidirectional, bool):
            raise UserInputError(
                f"model 'gru': bidirectional must be true or false, got {bidirectional!r}"
            )
        if readout not in ("last", "all"):
            raise UserInputError(
                f"model 'gru': unknown readout {readout!r}; expected one of: last, all"
            )
        self.features = math.prod(input_shape[1:]) if len(input_shape) > 1 else 1
        self.steps = math.prod(input_shape) // self.features
        self.readout = readout
        self.gru = nn.GRU(
            self.features, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional
        )
        self.directions = 2 if bidirectional else 1
        width = hidden * self.directions * (self.steps if readout == "all" else 1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, h = self.gru(x.reshape(x.shape[0], -1, self.features))  # h: (layers * dirs, B, hidden)
        if self.readout == "all":
            return self.head(out.flatten(1))  # out: (B, steps, dirs * hidden)
        last = h[-self.directions :]  # the last layer, both directions when bidirectional
        return self.head(last.transpose(0, 1).flatten(1))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "logistic": Logistic,
    "mlp": MLP,
    "cnn": CNN,
    "gru": GRU,
}


def model_names() -> list[str]:
    """Names of the reference models, for error messages and help text."""
    return list(MODELS)


def _lookup(name: str) -> Callable[..., nn.Module]:
    if name not in MODELS:
        raise UserInputError(f"unknown model {name!r}; expected one of: {', '.join(MODELS)}")
    return MODELS[name]


def model_arg_names(name: str) -> list[str]:
    """The allowed `model_args` keys of a model: its keyword-only constructor arguments.

    Raises:
        UserInputError: unknown model name.
    """
    params = inspect.signature(_lookup(name)).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, args: dict | None = None
) -> nn.Module:
    """Build a reference model for inputs of `input_shape` (per sample) and `num_classes` logits.

    Raises:
        UserInputError: unknown model, unknown arg, or a bad arg value; one line listing what is valid.
    """
    from lrstudy.train.user_classes import RESOLVED

    if (
        name in RESOLVED
    ):  # a user's nn.Module class (task.model: {class_path}), resolved by preflight
        return RESOLVED[name](**dict(args or {}))
    factory = _lookup(name)
    args = dict(args or {})
    allowed = model_arg_names(name)
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        what = f"allowed: {', '.join(allowed)}" if allowed else "it takes none"
        raise UserInputError(f"model {name!r}: unknown args {', '.join(unknown)}; {what}")
    return factory(tuple(input_shape), num_classes, **args)


def layer_groups(model: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """Trainable parameters grouped by the module that owns them, in registration order.

    For the reference models registration order is input to output and the names are the layer
    attributes ("fc1", "conv2", "gru", "head"). For any other module the groups are its modules that
    own parameters directly, named by dotted path with "." -> "_" ("root" for the model's own).
    Every trainable parameter appears in exactly one group (a shared parameter in its first owner);
    frozen parameters are left out, since no optimizer group needs them.
    """
    seen: set[int] = set()
    groups: list[tuple[str, list[nn.Parameter]]] = []
    names: set[str] = set()
    for path, module in model.named_modules():
        params = []
        for p in module.parameters(recurse=False):
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
        if not params:
            continue
        name = path.replace(".", "_") or "root"
        base, n = name, 1
        while name in names:  # "a.b_c" and "a_b.c" would collide
            n += 1
            name = f"{base}_{n}"
        names.add(name)
        groups.append((name, params))
    return groups


# A user's module may name its own parameter groups (input -> output) with this method, returning
# {group name: iterable of parameters}; a study's task.param_groups (name prefixes) does the same
# from the study file.
GROUPS_METHOD = "lrstudy_param_groups"


def named_groups(
    model: nn.Module, prefixes: dict[str, list[str]] | None = None
) -> list[tuple[str, list[nn.Parameter]]] | None:
    """The parameter groups a user named, in order, or None when they named none.

    `prefixes` (task.param_groups) wins over the module's own `lrstudy_param_groups()`.

    Raises:
        ValueError: a group that matches nothing, a parameter in two groups, or trainable
            parameters left out of every group (they would silently never train).
    """
    if prefixes:
        named = dict(model.named_parameters())
        groups, taken = [], {}
        for group, heads in prefixes.items():
            ps = [
                p
                for n, p in named.items()
                if p.requires_grad and any(n == h.rstrip(".") or n.startswith(h) for h in heads)
            ]
            if not ps:
                raise ValueError(
                    f"param group {group!r}: no trainable parameter name starts with "
                    f"{', '.join(map(repr, heads))} (names: {', '.join(list(named)[:6])}...)"
                )
            for p in ps:
                if id(p) in taken:
                    raise ValueError(f"a parameter is in groups {taken[id(p)]!r} and {group!r}")
                taken[id(p)] = group
            groups.append((group, ps))
    elif callable(getattr(model, GROUPS_METHOD, None)):
        groups = [
            (str(g), [p for p in ps if p.requires_grad])
            for g, ps in getattr(model, GROUPS_METHOD)().items()
        ]
    else:
        return None
    covered = {id(p) for _, ps in groups for p in ps}
    left = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
    if left:
        raise ValueError(
            f"param groups {', '.join(g for g, _ in groups)} leave out {len(left)} trainable "
            f"parameters ({', '.join(left[:4])}{', ...' if len(left) > 4 else ''})"
        )
    return groups


def check_groups(
    model: nn.Module,
    prefixes: dict[str, list[str]] | None,
    layer_lrs: list,
    source: str,
    label: str,
) -> None:
    """The user-named groups resolve, and every layer_lr list has one multiplier per group.

    Args:
        layer_lrs: each optimizer's `layer_lr` (None, {"decay": d} or a list of multipliers).
        label: the model as named in messages.
    Raises:
        UserInputError: one line naming the field.
    """
    try:
        groups = named_groups(model, prefixes)
    except ValueError as e:
        raise UserInputError(f"{source}: task.param_groups: {e}") from None
    group_names = [g for g, _ in (groups or layer_groups(model))]
    for i, layer_lr in enumerate(layer_lrs):
        if isinstance(layer_lr, tuple | list) and len(layer_lr) != len(group_names):
            raise UserInputError(
                f"{source}: optimizers[{i}].layer_lr: {list(layer_lr)} has {len(layer_lr)} "
                f"multipliers; {label} has {len(group_names)} "
                f"{'named groups' if groups else 'layers'} ({', '.join(group_names)})"
            )
