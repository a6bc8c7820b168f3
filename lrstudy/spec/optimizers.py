"""What each optimizer accepts, without importing torch.

The spec stage validates hyperparameters against this table, and the report stage may read it, and
neither may import torch. tests/test_optim_catalog.py checks the table against torch.optim's real
signatures, so it cannot silently drift from the installed torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_BETAS = (0.9, 0.999)


@dataclass(frozen=True)
class OptimizerInfo:
    """One optimizer name as users write it in a study file."""

    torch_class: str  # attribute of `module` (torch.optim unless an extra provides it)
    defaults: dict[str, Any]  # every tunable hyperparameter but lr, with the default we use
    momentum_kind: str | None  # "momentum" (SGD/RMSprop), "beta1" (Adam family) or None
    fixed: dict[str, Any] = field(default_factory=dict)  # set by the name itself (nesterov=True)
    default_lr: float = 1e-3
    module: str = "torch.optim"
    # LR-free optimizers (extra `lrstudy[lrfree]`): "schedule_free" (needs optimizer.train()/
    # .eval() around evaluation) or "adaptive" (estimates its own step size d; lr multiplies it).
    lr_free: str | None = None
    package: str | None = None  # the PyPI package of `module`, named in the missing-extra error


_SGD = {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False}
_ADAM = {"betas": _BETAS, "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}

OPTIMIZERS: dict[str, OptimizerInfo] = {
    "sgd": OptimizerInfo("SGD", dict(_SGD), "momentum", default_lr=1e-2),
    # "momentum" and "nesterov" are SGD with a non-zero momentum default, as users mean them.
    "momentum": OptimizerInfo("SGD", {**_SGD, "momentum": 0.9}, "momentum", default_lr=1e-2),
    "nesterov": OptimizerInfo(
        "SGD", {**_SGD, "momentum": 0.9}, "momentum", fixed={"nesterov": True}, default_lr=1e-2
    ),
    "adagrad": OptimizerInfo(
        "Adagrad",
        {"lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10},
        None,
        default_lr=1e-2,
    ),
    "adadelta": OptimizerInfo(
        "Adadelta", {"rho": 0.9, "eps": 1e-6, "weight_decay": 0.0}, None, default_lr=1.0
    ),
    "rmsprop": OptimizerInfo(
        "RMSprop",
        {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0, "centered": False},
        "momentum",
        default_lr=1e-2,
    ),
    "adam": OptimizerInfo("Adam", {**_ADAM, "decoupled_weight_decay": False}, "beta1"),
    "adamw": OptimizerInfo("AdamW", {**_ADAM, "weight_decay": 1e-2}, "beta1"),
    "nadam": OptimizerInfo(
        "NAdam",
        {
            "betas": _BETAS,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "momentum_decay": 4e-3,
            "decoupled_weight_decay": False,
        },
        "beta1",
        default_lr=2e-3,
    ),
    "radam": OptimizerInfo(
        "RAdam",
        {"betas": _BETAS, "eps": 1e-8, "weight_decay": 0.0, "decoupled_weight_decay": False},
        "beta1",
    ),
}

# LR-free optimizers, from the `lrfree` extra. Defaults are each package's own (lr included: the
# packages' recommendation), so a baseline "at its defaults" is what their authors ship.
# tests/test_optim_catalog.py checks them against the installed packages' signatures.
_SF = {"weight_decay": 0, "warmup_steps": 0, "r": 0.0, "weight_lr_power": 2.0}
_D = {"d0": 1e-6, "growth_rate": float("inf")}
LR_FREE: dict[str, OptimizerInfo] = {
    "schedulefree_adamw": OptimizerInfo(
        "AdamWScheduleFree",
        {"betas": _BETAS, "eps": 1e-8, **_SF},
        "beta1",
        default_lr=0.0025,
        module="schedulefree",
        lr_free="schedule_free",
        package="schedulefree",
    ),
    "schedulefree_sgd": OptimizerInfo(
        "SGDScheduleFree",
        {"momentum": 0.9, **_SF, "weight_lr_power": 2},
        "momentum",
        default_lr=1.0,
        module="schedulefree",
        lr_free="schedule_free",
        package="schedulefree",
    ),
    "prodigy": OptimizerInfo(
        "Prodigy",
        {
            "betas": _BETAS,
            "beta3": None,  # None: the package uses sqrt(beta2)
            "eps": 1e-8,
            "weight_decay": 0,
            "decouple": True,
            "use_bias_correction": False,
            "safeguard_warmup": False,
            "d_coef": 1.0,
            **_D,
        },
        "beta1",
        default_lr=1.0,
        module="prodigyopt",
        lr_free="adaptive",
        package="prodigyopt",
    ),
    "dadapt_adam": OptimizerInfo(
        "DAdaptAdam",
        {
            "betas": _BETAS,
            "eps": 1e-8,
            "weight_decay": 0,
            "decouple": False,
            "use_bias_correction": False,
            **_D,
        },
        "beta1",
        default_lr=1.0,
        module="dadaptation",
        lr_free="adaptive",
        package="dadaptation",
    ),
    "dadapt_sgd": OptimizerInfo(
        "DAdaptSGD",
        {"momentum": 0.0, "weight_decay": 0, **_D},
        "momentum",
        default_lr=1.0,
        module="dadaptation",
        lr_free="adaptive",
        package="dadaptation",
    ),
}
OPTIMIZERS.update(LR_FREE)
LRFREE_INSTALL = "pip install 'lrstudy[lrfree]'"


def missing_extra(name: str) -> str | None:
    """For an optimizer whose package is not installed: what to do about it, in a few words;
    None when it can be built. Looks the package up without importing it (no torch here)."""
    import importlib.util

    info = OPTIMIZERS.get(name)
    if info is None or info.package is None:
        return None
    try:
        found = importlib.util.find_spec(info.module) is not None
    except (ImportError, ValueError):  # a parent package that fails, or a blocked module
        found = False
    if found:
        return None
    return f"{name} needs the {info.package} package: {LRFREE_INSTALL}"


def optimizer_info(name: str) -> OptimizerInfo:
    """The catalogue entry of optimizer `name`.

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    info = OPTIMIZERS.get(name)
    if info is None:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(OPTIMIZERS)}")
    return info


def resolved_hparams(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of optimizer `name` but lr: defaults, overridden by `given`.

    `given` must already be validated (keys in the optimizer's defaults).
    """
    info = OPTIMIZERS[name]
    out = {**info.defaults, **given, **info.fixed}
    if "betas" in out:
        out["betas"] = tuple(float(b) for b in out["betas"])
    return out
