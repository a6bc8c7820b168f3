"""The torch-free optimizer catalog agrees with the installed torch.optim signatures."""

from __future__ import annotations

import inspect

import pytest
import torch

from lrstudy.spec.optimizers import LR_FREE, OPTIMIZERS, resolved_hparams
from lrstudy.train.optim import optimizer_class

# Not hyperparameters of the method: implementation switches, or set by lrstudy itself.
NOT_TUNABLE = {
    "self",
    "fsdp_in_use",  # LR-free packages: distributed and logging switches
    "log_every",
    "slice_p",
    "params",
    "lr",
    "foreach",
    "fused",
    "differentiable",
    "capturable",
    "maximize",
}
# Where the catalog deliberately differs from torch's default: "momentum"/"nesterov" mean SGD
# with momentum, as users say them.
OVERRIDES = {("momentum", "momentum"): 0.9, ("nesterov", "momentum"): 0.9}


def _signature(name: str) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(optimizer_class(name).__init__).parameters)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_torch_class_exists(name: str) -> None:
    # LR-free ones come from the `lrfree` extra, which `make test` installs.
    assert issubclass(optimizer_class(name), torch.optim.Optimizer)


@pytest.mark.parametrize("name", sorted(LR_FREE))
def test_lr_free_default_lr_is_the_package_default(name: str) -> None:
    assert OPTIMIZERS[name].default_lr == _signature(name)["lr"].default


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_catalog_key_is_an_init_parameter(name: str) -> None:
    info = OPTIMIZERS[name]
    params = _signature(name)
    assert set(info.defaults) - set(params) == set()
    assert set(info.fixed) - set(params) == set()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_tunable_init_parameter_is_in_the_catalog(name: str) -> None:
    tunable = set(_signature(name)) - NOT_TUNABLE
    assert tunable - set(OPTIMIZERS[name].defaults) == set(), (
        f"{name}: torch.optim.{OPTIMIZERS[name].torch_class} takes parameters the catalog lacks"
    )


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_defaults_equal_torch_defaults(name: str) -> None:
    params = _signature(name)
    for key, value in OPTIMIZERS[name].defaults.items():
        expected = OVERRIDES.get((name, key), params[key].default)
        assert value == expected, f"{name}.{key}: catalog {value!r}, torch {expected!r}"
        assert type(value) is type(expected) or {type(value), type(expected)} <= {int, float}


def test_overrides_are_still_real_overrides() -> None:
    # If torch ever changes these defaults the override table above would hide it.
    for (name, key), value in OVERRIDES.items():
        assert _signature(name)[key].default != value
    assert OPTIMIZERS["nesterov"].fixed == {"nesterov": True}


def test_resolved_hparams_merges_defaults_given_and_fixed() -> None:
    got = resolved_hparams("nesterov", {"momentum": 0.8, "nesterov": False})
    assert got["momentum"] == 0.8 and got["nesterov"] is True and got["dampening"] == 0.0
    assert resolved_hparams("adam", {"betas": [0.8, 0.99]})["betas"] == (0.8, 0.99)
