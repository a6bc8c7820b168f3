"""Population members against solo trials tracked by the real LRStudyCallback in a sqlite store.

What a member's `emit` rows say must be what its solo trial's callback logs (same names, steps and
values), and a member that diverges must be marked at the step, with the reason, that its solo
guard reports, stop where the solo run stops, and leave the other members untouched.
"""

from __future__ import annotations

import collections
import math

import lightning as L
import pytest
import torch

from lrstudy import LRStudyCallback, names
from lrstudy.track import runs as track_runs
from lrstudy.track.store import experiment_id, open_client
from lrstudy.train.module import run_trial
from lrstudy.train.population import fit_population
from tests.test_population_support import make_trial, rel_err, tiny_data

SYNC = 8  # LRStudyCallback's default on CPU; 12 steps per epoch puts a drain mid-epoch


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LRSTUDY_WRITER", "thread")  # no writer process for a few hundred rows
        client = open_client(f"sqlite:///{tmp_path_factory.mktemp('store')}/m.db")
        yield client, experiment_id(client, "population")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class _FinalWeights(L.Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.model.named_parameters()}


def _solo(client, exp: str, trial, data):
    """run_trial under a real LRStudyCallback; its rows read back from the store."""
    run_id = track_runs.start_run(client, exp, name=trial.name, tags={})
    callback = LRStudyCallback("population", run_id=run_id, client=client)
    final = _FinalWeights()
    result = run_trial(trial, data, [callback, final])
    run = client.get_run(run_id)
    rows = {
        (key, m.step): m.value
        for key in run.data.metrics
        for m in client.get_metric_history(run_id, key)
    }
    return result, rows, run.data.tags, final.weights


def _same(a: float, b: float, rel: float) -> bool:
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.isnan(a) == math.isnan(b)
    return a == pytest.approx(b, rel=rel, abs=1e-7)


def test_members_log_and_diverge_exactly_as_their_solo_runs(store) -> None:
    client, exp = store
    data = tiny_data(n_train=96)
    common = {"batch_size": 8, "epochs": 3}
    trials = [
        make_trial(lr=0.05, seed=0, hparams={"momentum": 0.9, "weight_decay": 1e-3}, **common),
        make_trial(lr=0.2, seed=1, layer_lr={"decay": 0.5}, schedule="cosine", warmup=3, **common),
        make_trial(lr=80.0, seed=2, **common),  # blows up in its first steps
        make_trial(
            lr=1.0,
            seed=3,
            schedule="plateau",
            schedule_args={"patience": 0, "threshold": 0.0},
            warmup=6,
            **common,
        ),
    ]
    calls: dict[int, list[list]] = collections.defaultdict(list)
    module = fit_population(
        trials, data, emit=lambda i, rows: calls[i].append(rows), keep_weights=True
    )
    outcomes = [module.results[i].outcome for i in range(len(trials))]
    assert outcomes == ["ok", "ok", "diverged", "ok"]
    for i, trial in enumerate(trials):
        got = module.results[i]
        want, solo_rows, tags, solo_weights = _solo(client, exp, trial, data)
        rows = [r for call in calls[i] for r in call]
        pop_rows = {(k, s): v for k, v, s in rows}
        assert len(pop_rows) == len(rows)  # no (name, step) twice
        assert set(pop_rows) == set(solo_rows), trial.name
        assert got.outcome == want.outcome
        assert tags[names.TAG_PARAM_GROUPS] == ",".join(got.param_groups)
        stop = got.diverged_at if got.diverged_at is not None else math.inf
        for (key, step), value in solo_rows.items():
            if key == names.EPOCH_SECONDS or step > stop:
                continue  # wall time; values past a blow-up are overflow noise
            assert _same(pop_rows[key, step], value, rel=1e-4), (trial.name, key, step)
        if got.diverged_at is None:
            assert names.TAG_DIVERGED_AT not in tags
            assert rel_err(module.weights[i], solo_weights) < 1e-5
            for key, value in want.metrics.items():
                if key != names.TRAIN_SECONDS:
                    assert _same(got.metrics[key], value, rel=1e-5), key
        else:
            assert got.diverged_at == int(tags[names.TAG_DIVERGED_AT])
            assert got.diverged_reason == tags[names.TAG_DIVERGED_REASON]
            # Stopped where the solo run stopped: the end of the chunk that showed the blow-up.
            assert max(s for _, s in pop_rows) == max(s for _, s in solo_rows) == SYNC
        # Rows arrive in chunks of at most SYNC steps, in training order.
        steps = [sorted({s for k, _, s in call if k == names.TRAIN_LOSS}) for call in calls[i]]
        steps = [c for c in steps if c]
        assert all(len(c) <= SYNC for c in steps)
        assert [s for c in steps for s in c] == sorted(s for c in steps for s in c)
