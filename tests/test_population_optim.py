"""Every catalogue optimizer in population form against the solo torch.optim run, per member.

Each population has three members that differ in LR, seed, schedule and hyperparameters; one
trains with layer-wise LR multipliers and one with weight decay. The solo reference is the real
ReferenceModule with torch.optim (tests/test_population_support.py: run_trial's own setup).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lrstudy.spec.optimizers import LR_FREE, OPTIMIZERS
from lrstudy.train.population import fit_population
from lrstudy.train.population.grouping import lr_free_reason
from tests.test_population_support import make_trial, rel_err, solo_fit, tiny_data, weights

# (hyperparameters of member 1, of member 2); member 0 keeps the catalogue defaults.
VARIANTS: dict[str, tuple[dict, dict]] = {
    "sgd": ({"momentum": 0.5, "dampening": 0.1}, {"weight_decay": 0.01}),
    "momentum": ({"momentum": 0.8, "dampening": 0.2}, {"weight_decay": 0.01, "nesterov": True}),
    "nesterov": ({"momentum": 0.5}, {"weight_decay": 0.01}),
    "adagrad": ({"lr_decay": 0.01, "initial_accumulator_value": 0.1}, {"weight_decay": 0.01}),
    "adadelta": ({"rho": 0.8}, {"weight_decay": 0.01, "eps": 1e-5}),
    "rmsprop": ({"centered": True, "momentum": 0.5}, {"weight_decay": 0.01, "alpha": 0.9}),
    "adam": (
        {"amsgrad": True, "betas": [0.8, 0.99], "weight_decay": 1e-3},
        {"weight_decay": 0.01, "decoupled_weight_decay": True},
    ),
    "adamw": ({"amsgrad": True}, {"weight_decay": 0.1, "eps": 1e-6}),
    "nadam": (
        {"momentum_decay": 0.01, "weight_decay": 1e-3},
        {"weight_decay": 0.01, "decoupled_weight_decay": True},
    ),
    # beta2 = 0.9 makes RAdam rectify from its 6th step on; beta2 = 0.999 only much later.
    "radam": ({"betas": [0.9, 0.9]}, {"weight_decay": 0.01, "decoupled_weight_decay": True}),
}


def _members(name: str, epochs: int) -> list:
    lr = OPTIMIZERS[name].default_lr
    a, b = VARIANTS[name]
    return [
        make_trial(optimizer=name, lr=lr, seed=0, epochs=epochs),
        make_trial(
            optimizer=name,
            lr=lr * 0.5,
            hparams=a,
            seed=1,
            epochs=epochs,
            layer_lr={"decay": 0.5},
            schedule="cosine",
            warmup=2,
        ),
        make_trial(
            optimizer=name,
            lr=lr * 2,
            hparams=b,
            seed=2,
            epochs=epochs,
            schedule="step",
            schedule_args={"every": 1, "gamma": 0.5},
        ),
    ]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The LR-free optimizers run the packages themselves on the trial engine (`lr_free_reason`).
VECTORISED = sorted(set(OPTIMIZERS) - set(LR_FREE))


def test_variants_cover_the_catalogue() -> None:
    assert set(VARIANTS) == set(VECTORISED)
    assert all(lr_free_reason(name) for name in LR_FREE)
    assert not any(lr_free_reason(name) for name in VECTORISED)


@pytest.mark.parametrize("name", VECTORISED)
@pytest.mark.parametrize(
    ("dtype", "precision", "epochs", "tol"),
    # 4 steps per epoch: 8 steps in float64, 20 in float32 (the study path).
    [(torch.float64, "64-true", 2, 1e-10), (torch.float32, "32-true", 5, 1e-5)],
    ids=["float64", "float32"],
)
def test_each_member_matches_its_solo_torch_optim_run(
    name: str, dtype: torch.dtype, precision: str, epochs: int, tol: float
) -> None:
    data = tiny_data()
    trials = _members(name, epochs)
    module = fit_population(trials, data, emit=lambda i, rows: None, dtype=dtype, keep_weights=True)
    for i, trial in enumerate(trials):
        solo = solo_fit(trial, data, precision=precision)
        assert module.results[i].outcome == "ok"
        err = rel_err(module.weights[i], weights(solo.model))
        assert err < tol, f"member {i} ({trial.name}): relative error {err:.3g}"
        assert module.weights[i]["head.weight"].dtype == dtype
        # The same validation history (values within float noise), epoch by epoch.
        pop_hist, solo_hist = module.results[i].history, solo.history
        assert [r["step"] for r in pop_hist] == [r["step"] for r in solo_hist]
        for p, s in zip(pop_hist, solo_hist, strict=True):
            assert p["val/loss"] == pytest.approx(s["val/loss"], rel=tol * 10)
            assert p["val/acc"] == s["val/acc"]


@pytest.mark.parametrize("name", VECTORISED)
@pytest.mark.parametrize(
    ("dtype", "precision", "tol"),
    [(torch.float64, "64-true", 1e-10), (torch.float32, "32-true", 1e-5)],
    ids=["float64", "float32"],
)
def test_a_member_that_joins_in_a_freed_slot_matches_its_solo_run(
    name: str, dtype: torch.dtype, precision: str, tol: float
) -> None:
    """Two members start; successive halving stops one at epoch 1 and a newcomer takes its slot.
    The newcomer then trains its epochs 1-2 beside the other's epochs 2-3 (other step counts,
    batches, schedules and optimizer state in one stacked step, its momentum buffer taking its
    first step while the other's does not), and its epoch 3 alone: both equal their solo runs."""
    data = tiny_data()
    halving = {"eta": 3.0, "rungs": [1]}
    first, newcomer, other = (
        dataclasses.replace(t, halving=halving) for t in _members(name, epochs=3)
    )
    offered = [newcomer]

    def refill(free: int) -> list:
        got, offered[:] = offered[:free], offered[free:]
        return got

    def judge(epoch: int, at_rung: list) -> list[bool]:
        return [i == 0 for i, _ in at_rung]  # only the first member is stopped

    module = fit_population([first, other], data, emit=lambda i, rows: None, dtype=dtype,
                            keep_weights=True, judge=judge, refill=refill)  # fmt: skip
    assert module.results[0].outcome == "pruned" and module.results[0].pruned_at == (1, 4)
    for i, trial in ((1, other), (2, newcomer)):
        solo = solo_fit(trial, data, precision=precision)
        got = module.results[i]
        assert got.outcome == "ok", (i, got.outcome)
        err = rel_err(module.weights[i], weights(solo.model))
        assert err < tol, f"member {i} ({trial.name}): relative error {err:.3g}"
        assert [r["step"] for r in got.history] == [r["step"] for r in solo.history] == [4, 8, 12]
        for p, s in zip(got.history, solo.history, strict=True):
            assert p["val/acc"] == s["val/acc"]
