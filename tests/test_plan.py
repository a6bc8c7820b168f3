"""Plan stage: expansion counts, stable keys, random search reproducibility."""

from __future__ import annotations

import random
from pathlib import Path

from lrstudy.plan import plan_trials
from lrstudy.spec import load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
BASE = (ROOT / "studies" / "smoke.yaml").read_text()


def test_quickstart_expands_to_the_full_grid() -> None:
    trials = plan_trials(load_spec(ROOT / "studies" / "quickstart.yaml"))
    # (8 sgd + 4 adam LRs) x 2 schedules x 2 seeds
    assert len(trials) == (8 + 4) * 2 * 2
    assert len({t.key for t in trials}) == len(trials)
    assert len({t.config_key for t in trials}) == len(trials) // 2
    sgd = [t for t in trials if t.optimizer == "sgd"]
    assert {t.hparams["momentum"] for t in sgd} == {0.9}
    assert trials[0].name == "sgd lr=0.001 constant seed=0"


def test_keys_are_stable_and_depend_on_settings() -> None:
    a = [t.key for t in plan_trials(parse_spec(BASE))]
    b = [t.key for t in plan_trials(parse_spec(BASE.replace("experiment: smoke", "experiment: x")))]
    c = [t.key for t in plan_trials(parse_spec(BASE.replace("epochs: 2", "epochs: 3")))]
    assert a == b
    assert not set(a) & set(c)
    # That keys also stay the same across lrstudy versions is pinned in tests/test_keys.py.


def test_sweep_axes_multiply_and_momentum_means_beta1_for_adam() -> None:
    spec = parse_spec(
        BASE.replace("    momentum: 0.9\n", "")
        + "\nsweep: {batch_size: [25, 50], momentum: [0.0, 0.9], train_fraction: [0.5, 1.0]}\n"
    )
    trials = plan_trials(spec)
    assert len(trials) == 3 * 2 * 2 * 2 * 2 * 2  # 3 LRs x 2 schedules x bs x mom x frac x 2 seeds
    adam = [t for t in trials if t.optimizer == "adam"]
    assert {tuple(t.hparams["betas"]) for t in adam} == {(0.0, 0.999), (0.9, 0.999)}
    assert {t.batch_size for t in trials} == {25, 50}
    assert "bs=25 mom=0 frac=0.5" in trials[0].name


def test_momentum_axis_is_dropped_for_optimizers_without_momentum() -> None:
    spec = parse_spec(
        BASE.replace("name: adam", "name: adagrad") + "\nsweep: {weight_decay: [0, 0.01]}\n"
    )
    spec2 = parse_spec(
        BASE.replace("    momentum: 0.9\n", "").replace("name: adam", "name: adagrad")
        + "\nsweep: {momentum: [0.5, 0.9]}\n"
    )
    assert len([t for t in plan_trials(spec) if t.optimizer == "adagrad"]) == 2 * 2 * 2
    assert len([t for t in plan_trials(spec2) if t.optimizer == "adagrad"]) == 2 * 2


def test_random_search_is_reproducible_and_log_uniform() -> None:
    text = (
        BASE.replace("lr: [0.05, 50.0]", "lr: {low: 1e-4, high: 1.0}")
        + "\nsearch: {method: random, trials: 40, seed: 3}\n"
    )
    a, b = plan_trials(parse_spec(text)), plan_trials(parse_spec(text))
    assert [t.key for t in a] == [t.key for t in b]
    assert len(a) <= 40 * 2
    sgd_lrs = [t.lr for t in a if t.optimizer == "sgd"]
    assert all(1e-4 <= lr <= 1.0 for lr in sgd_lrs)
    # log-uniform: about half the draws below 1e-2 (the log-midpoint), not ~1% as uniform would give
    assert 0.2 < sum(lr < 1e-2 for lr in sgd_lrs) / len(sgd_lrs) < 0.8
    other = plan_trials(parse_spec(text.replace("seed: 3", "seed: 4")))
    assert [t.key for t in other] != [t.key for t in a]


def test_layer_lr_is_part_of_the_trial() -> None:
    spec = parse_spec(BASE.replace("lr: 1e-3", "lr: 1e-3\n    layer_lr: {decay: 0.5}"))
    adam = [t for t in plan_trials(spec) if t.optimizer == "adam"]
    assert adam[0].layer_lr == {"decay": 0.5}


def test_lr_expansion_lives_on_the_optimizer_spec() -> None:
    sgd, adam = parse_spec(BASE).optimizers
    assert sgd.lr_grid() == [0.05, 50.0] and adam.lr_grid() == [1e-3]
    auto = parse_spec(BASE.replace("lr: 1e-3", "lr: auto")).optimizers[1]
    assert auto.lr_grid() == [None]
    # A single LR (or auto) draws nothing: adding such an optimizer to a random search does not
    # change the LRs the others draw.
    rng = random.Random(0)
    state = rng.getstate()
    assert adam.sample_lr(rng) == 1e-3 and auto.sample_lr(rng) is None
    assert rng.getstate() == state
    ranged = parse_spec(
        BASE.replace("lr: 1e-3", "lr: {low: 1e-4, high: 1e-2, scale: linear}")
        + "\nsearch: {method: random, trials: 1}\n"
    )
    lr = ranged.optimizers[1].sample_lr(rng)
    assert 1e-4 <= lr <= 1e-2 and lr == float(f"{lr:.6g}")
