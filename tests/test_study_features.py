"""End to end through `lrstudy run`: layer-wise LRs, plateau + warmup, noise evaluation,
a train-fraction sweep and random search, read back from a real sqlite store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lrstudy import names
from lrstudy.cli import main

STUDY = """
name: features
task:
  dataset: digits
  model: mlp
  model_args: {hidden: [16]}
train: {epochs: 3, batch_size: 64}
optimizers:
  - name: adam
    lr: 3e-3
    layer_lr: {decay: 0.5}
schedules:
  - name: plateau
    warmup: 3
    patience: 0
    factor: 0.5
    monitor: train/loss_epoch
sweep: {train_fraction: [0.5, 1.0]}
evaluate: {noise: [0.5]}
seeds: [0]
"""


@pytest.fixture(scope="module")
def features_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("features")
    (d / "features.yaml").write_text(STUDY)
    uri = f"sqlite:///{d}/mlflow.db"
    assert main(["run", str(d / "features.yaml"), "--tracking-uri", uri, "--no-report"]) == 0
    return uri


def _trials(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment).experiment_id
    return [
        r for r in client.search_runs([exp]) if r.data.tags.get(names.TAG_KIND) == names.KIND_TRIAL
    ]


def test_layer_lrs_are_logged_per_group_with_the_decay(features_store: str) -> None:
    client = MlflowClient(features_store)
    trials = _trials(features_store, "features")
    assert len(trials) == 2
    for run in trials:
        groups = run.data.tags[names.TAG_PARAM_GROUPS].split(",")
        assert len(groups) == 2  # hidden layer and head
        total = int(run.data.params["total_steps"])
        hist = {g: client.get_metric_history(run.info.run_id, f"{names.LR}/{g}") for g in groups}
        for g in groups:
            assert sorted(m.step for m in hist[g]) == list(range(total))
        first, last = (sorted(hist[g], key=lambda m: m.step) for g in groups)
        for a, b in zip(first, last):
            assert a.value == pytest.approx(0.5 * b.value)  # earlier layer: decay x the next one's


def test_warmup_then_plateau_cuts_are_what_was_applied(features_store: str) -> None:
    client = MlflowClient(features_store)
    run = next(
        r for r in _trials(features_store, "features") if r.data.params["train_fraction"] == "1.0"
    )
    head = run.data.tags[names.TAG_PARAM_GROUPS].split(",")[-1]
    lrs = [
        m.value
        for m in sorted(
            client.get_metric_history(run.info.run_id, f"lr/{head}"), key=lambda m: m.step
        )
    ]
    assert lrs[0] == pytest.approx(3e-3 / 3) and lrs[2] == pytest.approx(3e-3)  # 3 warmup steps
    # After warmup the multiplier is only ever the peak or a plateau cut (factor 0.5), never rising.
    after = lrs[3:]
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:]))
    assert {round(v / 3e-3, 6) for v in after} <= {1.0, 0.5, 0.25, 0.125}


def test_noise_robustness_and_data_fraction_are_recorded(features_store: str) -> None:
    trials = _trials(features_store, "features")
    fractions = sorted(r.data.params["train_fraction"] for r in trials)
    assert fractions == ["0.5", "1.0"]
    steps = {r.data.params["train_fraction"]: int(r.data.params["steps_per_epoch"]) for r in trials}
    assert steps["0.5"] < steps["1.0"]
    for r in trials:
        acc = r.data.metrics[f"{names.NOISE_ACC_PREFIX}0.5"]
        assert 0.0 <= acc <= 1.0
        assert r.data.tags[names.TAG_OUTCOME] == names.OUTCOME_OK


def test_random_search_runs_the_sampled_trials(tmp_path: Path) -> None:
    text = STUDY.replace("name: features", "name: rnd").replace(
        "lr: 3e-3", "lr: {low: 1e-3, high: 1e-2}"
    )
    text = text.replace(
        "sweep: {train_fraction: [0.5, 1.0]}", "search: {method: random, trials: 2, seed: 1}"
    )
    text = text.replace("epochs: 3", "epochs: 1").replace("warmup: 3", "warmup: 0")
    (tmp_path / "rnd.yaml").write_text(text)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(tmp_path / "rnd.yaml"), "--tracking-uri", uri, "--no-report"]) == 0
    lrs = sorted(float(r.data.params["lr"]) for r in _trials(uri, "rnd"))
    assert len(lrs) == 2 and all(1e-3 <= lr <= 1e-2 for lr in lrs) and lrs[0] != lrs[1]
