"""Successive halving: ASHA's rule, rung decisions recorded once in the store, pruned trials that
stay done, a population whose survivors are unaffected by members leaving, bad input.

Real processes and a real sqlite store: two workers and a kill -9 in the middle, then a rerun.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from lrstudy import names
from lrstudy.cli import main
from lrstudy.plan import plan_trials
from lrstudy.report.build import build_report
from lrstudy.report.plots.sensitivity import sensitivity_data
from lrstudy.report.read import find_study
from lrstudy.report.results import collect
from lrstudy.report.search import search_summary
from lrstudy.spec import load_spec
from lrstudy.spec.search import AUTO_FACTORS
from lrstudy.track.rungs import RungEntry, RungJudge, promotable
from lrstudy.train.module import run_trial
from lrstudy.train.population import fit_population
from tests.conftest import wait_until_gone
from tests.store_runs import count_rows
from tests.store_runs import kind_runs as _trial_runs
from tests.test_population_support import make_trial, tiny_data

ROOT = Path(__file__).resolve().parents[1]


def _study(folder: Path, name: str, *, epochs: int = 9, num: int = 9, seeds: int = 1,
           search: str = "{method: halving}") -> Path:  # fmt: skip
    lr = f"{{low: 1.0e-3, high: 1.0, num: {num}}}" if num > 1 else "0.1"
    text = f"""
name: {name}
task: {{dataset: digits, model: mlp}}
train: {{epochs: {epochs}, batch_size: 64}}
optimizers: [{{name: sgd, lr: {lr}}}]
seeds: {seeds}
search: {search}
"""
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _decisions(run) -> dict[int, dict]:
    tags = run.data.tags
    return {
        int(k.removeprefix(names.TAG_RUNG_PREFIX)): json.loads(v)
        for k, v in tags.items()
        if k.startswith(names.TAG_RUNG_PREFIX)
    }


# --- the rule ------------------------------------------------------------------------------------


def test_promotable_keeps_the_top_fraction_and_only_the_best_below_eta() -> None:
    # fewer than eta values: only the best so far goes on (Optuna's rule)
    assert promotable(0.5, [0.5], 3, "max")
    assert promotable(0.6, [0.5, 0.6], 3, "max")
    assert not promotable(0.5, [0.5, 0.6], 3, "max")
    # six values, eta 3: the top two go on
    values = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert [promotable(v, values, 3, "max") for v in values] == [False] * 4 + [True] * 2
    # lower is better for a loss
    assert [promotable(v, values, 3, "min") for v in values] == [True] * 2 + [False] * 4
    # a diverged configuration (NaN) never goes on, and is the worst for the others
    assert not promotable(math.nan, [math.nan], 3, "max")
    assert promotable(0.1, [math.nan, 0.1, math.nan], 3, "max")
    # eta need not be whole: 2.5 keeps floor(5 / 2.5) = 2 of five
    assert [promotable(v, values[:5], 2.5, "max") for v in values[:5]] == [False] * 3 + [True] * 2


def test_judge_uses_the_seed_mean_and_records_each_decision_once(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("judge")

    def run(key: str, config: str) -> str:
        tags = {names.TAG_KIND: names.KIND_TRIAL, names.TAG_STUDY: "judge",
                names.TAG_SPEC_HASH: "h", names.TAG_TRIAL_KEY: key, names.TAG_CONFIG_KEY: config}  # fmt: skip
        return client.create_run(exp, tags=tags).info.run_id

    judge = RungJudge(client, exp, "judge", "h", mode="max", eta=2)
    # config a: seeds 0.9 and 0.1 (mean 0.5); config b: one seed at 0.6
    first = judge.judge(1, [RungEntry(run("a0", "a"), "a0", "a", 0.9),
                            RungEntry(run("a1", "a"), "a1", "a", 0.1)])  # fmt: skip
    assert [d.config_value for d in first] == [0.5, 0.5] and not any(d.stop for d in first)
    b = judge.judge(1, [RungEntry(run("b0", "b"), "b0", "b", 0.6)])[0]
    assert not b.stop and b.competitors == 2  # b's 0.6 beats a's mean, not a's best seed
    c = judge.judge(1, [RungEntry(run("c0", "c"), "c0", "c", 0.55)])[0]
    assert c.stop  # third of three configurations with eta 2: only the top one goes on
    # a rerun of key c0 (a new run after a crash) follows the recorded decision, even though a
    # value recorded since would now let it through
    judge.judge(1, [RungEntry(run("d0", "d"), "d0", "d", 0.01)])
    again = judge.judge(1, [RungEntry(run("c0", "c"), "c0", "c", 0.55)])[0]
    assert again.reused and again.stop and again.competitors == 3
    # another version of the study (spec hash) does not compete
    other = RungJudge(client, exp, "judge", "other", mode="max", eta=2)
    alone = other.judge(1, [RungEntry(run("z0", "z"), "z0", "z", 0.0)])[0]
    assert alone.competitors == 1 and not alone.stop


# --- a study ---------------------------------------------------------------------------------------


def test_halving_study_prunes_and_a_rerun_redoes_nothing(tmp_path: Path, capsys) -> None:
    study = _study(tmp_path, "prune")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["run", str(study), "--tracking-uri", uri, "--no-report", "--engine", "trial"]
    assert main(args) == 0
    out = capsys.readouterr()
    runs = _trial_runs(uri, "prune")
    outcomes = Counter(r.data.tags[names.TAG_OUTCOME] for r in runs)
    assert outcomes[names.OUTCOME_PRUNED] >= 4 and outcomes[names.OUTCOME_OK] >= 1, outcomes
    assert all(r.info.status == "FINISHED" for r in runs)
    rungs = plan_trials(load_spec(study))[0].halving["rungs"]
    assert rungs == [1, 3]
    for r in runs:
        decisions = _decisions(r)
        if r.data.tags[names.TAG_OUTCOME] == names.OUTCOME_PRUNED:
            rung = int(r.data.tags[names.TAG_PRUNED_RUNG])
            step = int(r.data.tags[names.TAG_PRUNED_STEP])
            assert decisions[rung]["decision"] == "stop"
            assert all(decisions[e]["decision"] == "continue" for e in rungs if e < rung)
            assert step == rung * int(r.data.params["steps_per_epoch"])
            # it trained to its rung and no further
            history = MlflowClient(uri).get_metric_history(r.info.run_id, names.VAL_ACC)
            assert max(m.step for m in history) == step
        else:
            assert [decisions[e]["decision"] for e in rungs] == ["continue", "continue"]
    assert (
        f"ran: {outcomes[names.OUTCOME_OK]} ok, {outcomes[names.OUTCOME_PRUNED]} pruned"
        in out.out + out.err
    )

    assert main(args) == 0  # everything is done: pruned trials are not trained again
    assert len(_trial_runs(uri, "prune")) == len(runs)
    assert "9 already finished" in "".join(capsys.readouterr())

    # the report: the Search section counts what stopped where and what it cost
    client = MlflowClient(uri)
    sr = find_study(client, study="prune")
    assert len(sr.pruned) == outcomes[names.OUTCOME_PRUNED]
    assert len(sr.runs) == outcomes[names.OUTCOME_OK]  # the other sections: finished trials only
    data = collect(client, sr)
    summary = search_summary(sr, data.trials)
    spe = int(runs[0].data.params["steps_per_epoch"])
    stopped_at = Counter(int(r.data.tags[names.TAG_PRUNED_RUNG]) for r in runs
                         if r.data.tags[names.TAG_OUTCOME] == names.OUTCOME_PRUNED)  # fmt: skip
    assert summary.rungs == [1, 3] and summary.epochs == 9
    assert {k: v for k, v in summary.stopped.items() if v} == dict(stopped_at)
    assert summary.steps_full == 9 * 9 * spe
    assert summary.steps_used == spe * (9 * summary.finished + sum(
        rung * n for rung, n in stopped_at.items()))  # fmt: skip
    assert summary.saving == pytest.approx(summary.steps_full / summary.steps_used)
    points = summary.points
    assert points["stopped"].sum() == len(sr.pruned) and (~points["stopped"]).sum() == len(sr.runs)
    assert set(points.loc[points["stopped"], "epochs_trained"]) <= {1, 3}
    # the LR sensitivity figure marks them as stopped, never as diverged
    sens = sensitivity_data(data.configs, data.trials, sr.range_tests,
                            points[points["stopped"]])  # fmt: skip
    assert len(sens.stopped) == len(sr.pruned)
    assert all(not fam.diverged_lrs for fam in sens.families)
    assert {lr for lr, _, _ in sens.stopped} == set(points.loc[points["stopped"], "lr"])
    # the diagnosis calls a best LR the end of the grid only when no LR beyond it was tried
    best = data.configs.loc[data.configs["reason"].str.startswith("best LR")].iloc[0]
    tried = pd.concat([points["lr"], data.configs["lr"]])
    lowest, highest = best["lr"] <= tried.min(), best["lr"] >= tried.max()
    assert ("the lowest LR tried" in best["reason"]) == lowest, best["reason"]
    assert ("the highest LR tried" in best["reason"]) == highest, best["reason"]
    page = build_report(uri, study="prune", out_dir=str(tmp_path / "reports"),
                        log_artifact=False).read_text(encoding="utf-8")  # fmt: skip
    assert 'id="search"' in page and 'data-figure="search"' in page
    assert f"{summary.steps_full:,.0f}" in page
    assert f"{len(sr.pruned)} more runs stopped early by successive halving" in page
    assert "Hollow circles: trials successive halving stopped" in page


def test_a_study_without_halving_has_no_search_section(tmp_path: Path) -> None:
    study = _study(tmp_path, "full", num=3, epochs=2, search="{method: grid}")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report", "--engine", "trial"]) == 0
    client = MlflowClient(uri)
    sr = find_study(client, study="full")
    assert search_summary(sr, collect(client, sr).trials) is None
    page = build_report(uri, study="full", out_dir=str(tmp_path / "reports"),
                        log_artifact=False).read_text(encoding="utf-8")  # fmt: skip
    assert 'id="search"' not in page


def _rung_tags(db: Path) -> int:
    return count_rows(db, f"SELECT count(*) FROM tags WHERE key LIKE '{names.TAG_RUNG_PREFIX}%'")


def test_two_workers_kill9_then_rerun_decide_every_rung_once(tmp_path: Path) -> None:
    # Trials long enough (a few seconds) that the kill lands mid-search.
    study = _study(tmp_path, "killed", epochs=27, num=8, seeds=2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri", uri,
           "--no-report", "--workers", "2", "--engine", "trial"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while _rung_tags(tmp_path / "mlflow.db") < 4:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no rung decisions seen"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the study process and its worker, at once
        proc.communicate(timeout=60)
    assert wait_until_gone(str(tmp_path)) == []
    before = {r.info.run_id: _decisions(r) for r in _trial_runs(uri, "killed")}
    assert sum(len(d) for d in before.values()) >= 4

    again = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr
    runs = _trial_runs(uri, "killed")
    planned = plan_trials(load_spec(study))
    finished = [r for r in runs if r.info.status == "FINISHED"]
    # exactly one finished run per trial, pruned or trained to the end; nothing left running
    assert Counter(r.data.tags[names.TAG_TRIAL_KEY] for r in finished) == Counter(
        {t.key: 1 for t in planned}
    )
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert {r.data.tags[names.TAG_OUTCOME] for r in finished} <= {
        names.OUTCOME_OK, names.OUTCOME_PRUNED,
    }  # fmt: skip
    # every rung of every key was decided once: all runs of a key agree on each decision, and
    # what was decided before the kill stands
    by_key: dict[str, dict[int, set]] = {}
    for r in runs:
        for epoch, d in _decisions(r).items():
            by_key.setdefault(r.data.tags[names.TAG_TRIAL_KEY], {}).setdefault(epoch, set()).add(
                (d["decision"], d["value"])
            )
    assert all(len(v) == 1 for rungs in by_key.values() for v in rungs.values()), by_key
    key_of = {r.info.run_id: r.data.tags[names.TAG_TRIAL_KEY] for r in runs}
    for run_id, decisions in before.items():
        for epoch, d in decisions.items():
            assert by_key[key_of[run_id]][epoch] == {(d["decision"], d["value"])}
    # a pruned configuration's seeds were never trained past their rung
    for r in finished:
        if r.data.tags[names.TAG_OUTCOME] == names.OUTCOME_PRUNED:
            rung = int(r.data.tags[names.TAG_PRUNED_RUNG])
            assert _decisions(r)[rung]["decision"] == "stop"
    # and a third run finds nothing to do
    third = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert third.returncode == 0 and len(_trial_runs(uri, "killed")) == len(runs)


# --- populations -----------------------------------------------------------------------------------


def test_population_survivors_match_their_solo_runs() -> None:
    data = tiny_data(n_train=96)
    halving = {"eta": 3.0, "rungs": [1, 2]}
    trials = [
        make_trial(lr=lr, seed=s, batch_size=8, epochs=4, halving=halving)
        for s, lr in enumerate((0.02, 0.05, 0.1, 0.2, 0.4))
    ]
    asked = []

    def judge(epoch: int, at_rung: list[tuple[int, dict]]) -> list[bool]:
        asked.append((epoch, [i for i, _ in at_rung]))
        return [i in {1: (0, 3), 2: (4,)}[epoch] for i, _ in at_rung]

    module = fit_population(trials, data, emit=lambda i, rows: None, judge=judge,
                            dtype=torch.float64, keep_weights=True)  # fmt: skip
    assert asked == [(1, [0, 1, 2, 3, 4]), (2, [1, 2, 4])]  # the pruned ones are gone at rung 2
    spe = 96 // 8
    for i, rung in ((0, 1), (3, 1), (4, 2)):
        res = module.results[i]
        assert res.outcome == names.OUTCOME_PRUNED and res.pruned_at == (rung, rung * spe)
        assert [row["step"] for row in res.history] == [spe * e for e in range(1, rung + 1)]
    for i in (1, 2):
        solo = run_trial(trials[i], data, [])
        got = module.results[i]
        assert got.outcome == names.OUTCOME_OK and len(got.history) == 4
        # float64 population vs the float32 solo trial: equal to float32 rounding
        for key in (names.FINAL_VAL_ACC, names.FINAL_TRAIN_LOSS):
            assert got.metrics[key] == pytest.approx(solo.metrics[key], rel=1e-4, abs=1e-5), key


def test_population_study_prunes_members_as_the_trial_engine_would(tmp_path: Path) -> None:
    study = _study(tmp_path, "pop", seeds=2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report",
                 "--engine", "population"]) == 0  # fmt: skip
    runs = _trial_runs(uri, "pop")
    assert {r.data.tags[names.TAG_ENGINE] for r in runs} == {"population"}
    outcomes = Counter(r.data.tags[names.TAG_OUTCOME] for r in runs)
    assert outcomes[names.OUTCOME_PRUNED] >= 8 and outcomes[names.OUTCOME_OK] >= 2, outcomes
    # every member of the population reached rung 1 together: one pool of nine configurations,
    # each configuration judged on its two seeds' mean
    first = [_decisions(r)[1] for r in runs]
    assert {d["competitors"] for d in first} == {9}
    by_config: dict[str, set] = {}
    for r, d in zip(runs, first, strict=True):
        by_config.setdefault(r.data.tags[names.TAG_CONFIG_KEY], set()).add(d["decision"])
    assert all(len(v) == 1 for v in by_config.values())  # seeds of a configuration agree
    assert sum(v == {"continue"} for v in by_config.values()) == 9 // 3


def test_freed_population_slots_take_the_next_populations_trials(tmp_path: Path) -> None:
    """18 trials in populations of at most 6: without freed slots taking work that is three
    populations one after another, each shrinking to 2 after its first rung. Members stopped at
    epoch 1 free their slots for the trials of the later populations, so one population trains
    all 18, each exactly once, each member's run ended as it stops."""
    study = _study(tmp_path, "refill", epochs=3, seeds=2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report", "--workers", "1",
                 "--engine", "population", "--population-size", "6"]) == 0  # fmt: skip
    runs = _trial_runs(uri, "refill")
    assert len(runs) == 18 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags[names.TAG_TRIAL_KEY] for r in runs}) == 18
    populations = Counter(r.data.tags.get(names.TAG_POPULATION) for r in runs)
    assert max(populations.values()) > 6, populations  # newcomers joined the first population
    outcomes = Counter(r.data.tags[names.TAG_OUTCOME] for r in runs)
    assert outcomes[names.OUTCOME_PRUNED] >= 8 and outcomes[names.OUTCOME_OK] >= 2, outcomes
    # a member stopped at epoch 1 was ended then, while the others trained on
    first = min(r.info.end_time for r in runs)
    assert first < max(r.info.start_time for r in runs), "every run ended after the last began"


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("search", "expect"),
    [
        ("{method: halving, eta: 1}", "search.eta: 1 is not allowed: the reduction factor must be > 1"),
        ("{method: grid, halving: {eta: 0.5}}", "search.halving.eta: 0.5 is not allowed"),
        ("{method: halving, min_epochs: 9}", "search.min_epochs: 9 is not allowed: it must be below train.epochs (9)"),
        ("{method: grid, eta: 2}", "search.eta: 2.0 is not allowed with method: grid"),
        ("{method: random, trials: 1, halving: {}}", "search.method: random is not allowed: successive halving compares configurations and this study has 1"),
    ],
)  # fmt: skip
def test_bad_halving_settings_get_one_line(
    tmp_path: Path, capsys, search: str, expect: str
) -> None:
    study = _study(tmp_path, "bad", search=search)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and str(study) in err[0], err
    assert not (tmp_path / "mlflow.db").exists()


def test_halving_on_a_metric_the_task_does_not_log_is_refused(tmp_path: Path, capsys) -> None:
    study = _study(tmp_path, "f1")
    study.write_text(
        study.read_text().replace("model: mlp}", "model: mlp, metric: {name: val/f1}}"),
        encoding="utf-8",
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task.metric.name: 'val/f1' is not allowed with successive" in err[0]
    assert not (tmp_path / "mlflow.db").exists()


def test_halving_a_single_configuration_is_refused(tmp_path: Path, capsys) -> None:
    study = _study(tmp_path, "one", num=1)
    assert main(["plan", str(study)]) == 2
    err = capsys.readouterr().err
    assert "search.method: halving is not allowed" in err and "has 1" in err


# --- lr: auto, checked by successive halving -------------------------------------------------------


def test_lr_auto_candidates_around_the_range_test_are_halved(tmp_path: Path, capsys) -> None:
    study = tmp_path / "auto.yaml"
    study.write_text(
        "name: auto\ntask: {dataset: digits, model: mlp}\ntrain: {epochs: 4, batch_size: 64}\n"
        "optimizers: [{name: sgd, lr: auto, momentum: 0.9}]\nsearch: {method: halving}\n",
        encoding="utf-8",
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["plan", str(study), "--tracking-uri", uri]) == 0
    planned = capsys.readouterr().out
    assert "lr: auto: a range test of 200 steps per seed and optimizer (1 in all" in planned
    assert "8 candidates from x0.1 to x21.5 of its recommendation" in planned
    assert "about 13 trial-epochs of the full grid's 32" in planned  # 8x1 + 2x2 + 1x1
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report"]) == 0
    out = "".join(capsys.readouterr())
    runs = _trial_runs(uri, "auto")
    assert len(runs) == len(AUTO_FACTORS)
    recommended = set()
    for r in runs:
        source = r.data.tags[names.TAG_LR_SOURCE]  # "range_test:<rule>×<factor> of <LR>"
        rule, rest = source.removeprefix("range_test:").split("×")
        factor, rec = rest.split(" of ")
        recommended.add(float(rec))
        assert float(r.data.params["lr"]) == pytest.approx(
            float(rec) * float(factor), rel=5e-3
        )  # 3 digits each
    assert len(recommended) == 1  # one range test, shared by every candidate
    outcomes = Counter(r.data.tags[names.TAG_OUTCOME] for r in runs)
    assert outcomes[names.OUTCOME_PRUNED] >= 5, outcomes
    assert "successive halving checks 8 candidates" in out and "; chosen: ×" in out
    range_tests = [r for r in MlflowClient(uri).search_runs(
        [MlflowClient(uri).get_experiment_by_name("auto").experiment_id])
        if r.data.tags.get(names.TAG_KIND) == names.KIND_RANGE_TEST]  # fmt: skip
    assert len(range_tests) == 1
