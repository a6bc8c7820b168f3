"""The population engine against the solo trial: init, batch order, schedules, results, grouping."""

from __future__ import annotations

import collections

import lightning as L
import pytest
import torch
from torch import nn

from lrstudy import names
from lrstudy.train.data import load_dataset, subset_train
from lrstudy.train.models import build_model
from lrstudy.train.module import TensorBatches, run_trial
from lrstudy.train.population import (
    NotVectorisable,
    PopulationModule,
    default_population_size,
    fit_population,
    form_populations,
    population_key,
    run_population,
    vectorise_problem,
    vectorises,
)
from lrstudy.train.population.batches import MemberBatches, subset_index
from lrstudy.train.population.grouping import check_population
from tests.test_population_support import (
    LRRecorder,
    make_trial,
    rel_err,
    solo_fit,
    tiny_data,
    weights,
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _InitialWeights(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.model.named_parameters()}


def test_each_member_starts_from_its_solo_trials_init() -> None:
    data = tiny_data()
    trials = [make_trial(seed=s, lr=0.1 * (s + 1)) for s in (0, 1, 7)]
    module = PopulationModule(trials, data, emit=lambda i, rows: None)
    for k, trial in enumerate(trials):
        grab = _InitialWeights()
        run_trial(make_trial(seed=trial.seed, epochs=1), data, [grab])
        for name, w in grab.weights.items():
            assert torch.equal(module.stack.params[name][k], w), (k, name)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_each_member_sees_its_own_tensor_batches(fraction: float) -> None:
    data = tiny_data()
    seeds = [0, 5, 5, 11]
    subsets = [subset_index(data, fraction, s) for s in seeds]
    batches = MemberBatches(len(data.x_train), 16, seeds, subsets)
    solo = [TensorBatches(*_split(data, fraction, s), 16, s) for s in seeds]
    for epoch in range(3):
        index = batches.epoch(epoch)
        for k, tb in enumerate(solo):
            for step, (x, y) in enumerate(tb):
                assert torch.equal(data.x_train[index[k, step]], x)
                assert torch.equal(data.y_train[index[k, step]], y)
            assert step + 1 == len(batches)
    assert not torch.equal(batches.epoch(0)[0], batches.epoch(1)[0])  # reshuffled per epoch


def _split(data, fraction: float, seed: int):
    ds = subset_train(data, fraction, seed) if fraction < 1 else data
    return ds.x_train, ds.y_train


def test_each_member_follows_its_own_schedule_and_plateau() -> None:
    data = tiny_data()
    plateau = {
        "schedule": "plateau",
        "schedule_args": {"patience": 0, "threshold": 0.0, "factor": 0.5},
    }
    trials = [
        make_trial(lr=0.05, seed=0, epochs=6, **plateau),
        make_trial(lr=1.0, seed=1, epochs=6, **plateau),
        make_trial(lr=1.0, seed=2, epochs=6, warmup=3, **plateau),
        # Warmup spans the first epoch end (step 4): that observation is dropped, as in solo.
        make_trial(lr=3.0, seed=5, epochs=6, warmup=6, **plateau),
        make_trial(lr=0.3, seed=3, epochs=6, schedule="cosine", warmup=0.25, layer_lr=[0.5, 2.0]),
        make_trial(lr=0.3, seed=4, epochs=6, schedule="one_cycle"),
    ]
    rows: dict[int, list] = collections.defaultdict(list)
    module = fit_population(trials, data, emit=lambda i, r: rows[i].extend(r))
    cuts = []
    for i, trial in enumerate(trials):
        recorder = LRRecorder()
        solo_fit(trial, data, callbacks=[recorder])
        lr_keys = ["lr/fc1", "lr/head"] if trial.layer_lr else ["lr"]
        by_key = {k: [v for key, v, _ in rows[i] if key == k] for k in lr_keys}
        # Exactly the LR the solo optimizer used at every step, per param group.
        assert [list(x) for x in zip(*by_key.values())] == recorder.lrs, trial.name
        assert module.results[i].outcome == names.OUTCOME_OK
        cuts.append(
            [s for s in range(1, len(recorder.lrs)) if recorder.lrs[s] < recorder.lrs[s - 1]]
        )
    # The three plateaus decided on their own val losses: no cut, and cuts at different steps.
    assert cuts[0] == [] and cuts[1] and cuts[2] and cuts[1] != cuts[2]
    assert min(cuts[2]) > 3 and min(cuts[3]) > 6  # nothing cut during a warmup


@pytest.fixture(scope="module")
def mnist1d():
    return load_dataset("mnist1d", {"num_samples": 400})


def test_small_mixed_population_matches_run_trial(mnist1d) -> None:
    target = {"metric": "val/acc", "value": 0.15, "mode": "max"}
    # Each member trains on its own seeded 75% subset (two share seed 0, and so their subset).
    common = {"dataset": "mnist1d", "model_args": {}, "batch_size": 32, "epochs": 3}
    common |= {"train_fraction": 0.75}
    common |= {"evaluate_noise": (0.1, 0.5), "target": target}
    trials = [
        make_trial(lr=0.05, seed=0, **common),
        make_trial(lr=0.2, seed=1, layer_lr={"decay": 0.5}, schedule="cosine", **common),
        make_trial(lr=0.1, seed=2, hparams={"momentum": 0.9}, warmup=5, **common),
        make_trial(lr=0.1, seed=0, hparams={"weight_decay": 1e-3}, **common),
    ]
    results = run_population(trials, mnist1d, emit=lambda i, rows: None)
    for trial, got in zip(trials, results, strict=True):
        want = run_trial(trial, mnist1d, [])
        assert got.outcome == want.outcome == names.OUTCOME_OK
        assert (got.total_steps, got.steps_per_epoch) == (want.total_steps, want.steps_per_epoch)
        assert set(got.metrics) == set(want.metrics)
        for key, value in want.metrics.items():
            if key != names.TRAIN_SECONDS:
                assert got.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


# --- grouping ------------------------------------------------------------------------------------


def test_population_key_shares_shape_and_optimizer_only() -> None:
    base = population_key(make_trial())
    same = [
        make_trial(lr=1.0, seed=9, schedule="cosine", warmup=2, layer_lr={"decay": 0.5}),
        make_trial(hparams={"momentum": 0.9, "weight_decay": 0.1}, divergence_factor=4.0),
    ]
    assert all(population_key(t) == base for t in same)
    other = [
        make_trial(optimizer="adam"),
        make_trial(batch_size=8),
        make_trial(model_args={"hidden": [16]}),
        make_trial(epochs=3),
        make_trial(train_fraction=0.5),
    ]
    assert all(population_key(t) != base for t in other)
    with pytest.raises(ValueError, match="differ in optimizer"):
        check_population([make_trial(), make_trial(optimizer="adam")])
    with pytest.raises(ValueError, match="lr: auto"):
        check_population([make_trial(lr=None, lr_auto=True)])


def test_form_populations_groups_and_says_why_not() -> None:
    data = tiny_data()
    sgd = [make_trial(lr=lr) for lr in (0.01, 0.1, 1.0, 3.0, 10.0)]
    adam = [make_trial(optimizer="adam", lr=lr) for lr in (1e-3, 1e-2)]
    dropout = [make_trial(model_args={"hidden": [8], "dropout": 0.5}, seed=s) for s in (0, 1)]
    auto = make_trial(lr=None, lr_auto=True)
    bad = make_trial(optimizer="nesterov", hparams={"momentum": 0.0})  # torch refuses this
    alone = make_trial(batch_size=8)
    pops, solo = form_populations([*sgd, *adam, *dropout, auto, bad, alone], data, max_size=2)
    assert [len(p) for p in pops] == [2, 2, 2]  # 5 sgd as 2 + 2 + 1 (alone: solo), then adam
    assert [t.lr for p in pops[:2] for t in p] == [t.lr for t in sgd[:4]]
    assert all(t.optimizer == "adam" for t in pops[2])
    reasons = {t.key: why for t, why in solo}
    assert len(solo) == 6
    assert "size limit (2)" in reasons[sgd[4].key]
    assert all("does not vectorise" in reasons[t.key] for t in dropout)
    assert "lr: auto" in reasons[auto.key]
    assert "Nesterov" in reasons[bad.key]
    assert "no other trial" in reasons[alone.key]


def test_default_population_size_follows_parameters_and_memory() -> None:
    small, big = default_population_size(1_000), default_population_size(1_000_000)
    assert small == 64  # capped: on a CPU more members stop paying off
    assert 1 <= big < small
    assert default_population_size(10**9) == 1
    assert default_population_size(1_000, memory_bytes=10 * 40_000) == 10
    assert default_population_size(1_000, bytes_per_value=8, memory_bytes=10 * 80_000) == 10


def test_which_models_vectorise() -> None:
    for name in ("logistic", "mlp", "cnn", "gru"):
        assert vectorises(build_model(name, (40,), 10), (40,)), name
    assert not vectorises(build_model("mlp", (40,), 10, {"dropout": 0.2}), (40,))
    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert "buffers" in vectorise_problem(bn, (4,))


def test_a_blown_up_member_leaves_the_others_exact() -> None:
    data = tiny_data(n_train=96)
    common = {"batch_size": 8, "epochs": 2}  # 12 steps per epoch: the first drain is mid-epoch
    trials = [
        make_trial(lr=0.1, seed=0, **common),
        make_trial(lr=1e300, seed=1, **common),  # overflows to inf/NaN within a few steps
        make_trial(lr=0.5, seed=2, hparams={"momentum": 0.9}, **common),
    ]
    module = fit_population(
        trials, data, emit=lambda i, rows: None, dtype=torch.float64, keep_weights=True
    )
    blown = module.results[1]
    assert blown.outcome == names.OUTCOME_DIVERGED and blown.diverged_at < 8
    # Frozen where its solo run stops: after the 8-step chunk that showed it, with one validation.
    assert [row["step"] for row in blown.history] == [8]
    assert not all(torch.isfinite(w).all() for w in module.weights[1].values())
    for i in (0, 2):
        solo = solo_fit(trials[i], data, precision="64-true")
        assert module.results[i].outcome == names.OUTCOME_OK
        assert rel_err(module.weights[i], weights(solo.model)) < 1e-10


@pytest.mark.parametrize(
    ("model", "args"), [("logistic", {}), ("cnn", {"channels": 4}), ("gru", {"hidden": 8})]
)
def test_other_reference_models_match_their_solo_runs(model: str, args: dict) -> None:
    data = tiny_data()
    trials = [
        make_trial(model=model, model_args=args, optimizer="adam", lr=0.01 * (s + 1), seed=s)
        for s in range(3)
    ]
    module = fit_population(
        trials, data, emit=lambda i, rows: None, dtype=torch.float64, keep_weights=True
    )
    for i, trial in enumerate(trials):
        solo = solo_fit(trial, data, precision="64-true")
        assert rel_err(module.weights[i], weights(solo.model)) < 1e-10
        # (the solo module sums its train loss in float32 even in a float64 run)
        for got, want in zip(module.results[i].history, solo.history, strict=True):
            assert got == pytest.approx(want, rel=1e-6)


def test_a_model_that_does_not_vectorise_is_refused_before_training() -> None:
    trials = [make_trial(model_args={"hidden": [8], "dropout": 0.5}, seed=s) for s in (0, 1)]
    with pytest.raises(NotVectorisable, match="does not vectorise"):
        run_population(trials, tiny_data(), emit=lambda i, rows: None)


def test_newcomers_take_over_a_stack_that_every_member_left() -> None:
    """Both founders end together; the two newcomers then train alone in the emptied stack
    (from their own step 0), exactly as their solo runs."""
    data = tiny_data()
    founders = [make_trial(lr=0.05, seed=s, epochs=1) for s in (0, 1)]
    newcomers = [make_trial(lr=lr, seed=s, epochs=1) for s, lr in ((2, 0.1), (3, 0.02))]
    offered = list(newcomers)
    asked = []

    def refill(free: int) -> list:
        asked.append(free)
        got, offered[:] = offered[:free], offered[free:]
        return got

    module = fit_population(founders, data, emit=lambda i, rows: None, refill=refill,
                            dtype=torch.float64, keep_weights=True)  # fmt: skip
    assert asked == [2, 2]  # after the founders' epoch, then after the newcomers'
    for i, trial in enumerate(founders + newcomers):
        solo = solo_fit(trial, data, precision="64-true")
        assert rel_err(module.weights[i], weights(solo.model)) < 1e-10, i
        assert [r["step"] for r in module.results[i].history] == [4]
