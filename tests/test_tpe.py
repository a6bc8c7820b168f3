"""TPE search through Optuna's TPESampler: N configurations x seeds, exactly once, sampled when
claimed and told what the store holds; resumed after Ctrl-C; with successive halving; bad input.

Real processes and a real sqlite store, small digits/MLP studies on the CPU.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lrstudy import names
from lrstudy.cli import main
from lrstudy.execute import tpe
from lrstudy.plan import plan_trials, sampled_trial
from lrstudy.spec import load_spec
from lrstudy.spec.load import parse_spec
from tests.conftest import wait_until_gone
from tests.store_runs import count_rows as _count
from tests.store_runs import kind_runs as _trial_runs

ROOT = Path(__file__).resolve().parents[1]


def _study(folder: Path, name: str, *, trials: int = 4, seeds: int = 2, epochs: int = 2,
           search: str = "", lr: str = "{low: 1.0e-3, high: 1.0}", extra: str = "") -> Path:  # fmt: skip
    search = search or f"{{method: tpe, trials: {trials}, seed: 7, startup: 2}}"
    text = f"""
name: {name}
task: {{dataset: digits, model: mlp}}
train: {{epochs: {epochs}, batch_size: 64}}
optimizers: [{{name: sgd, lr: {lr}}}]
seeds: {seeds}
search: {search}
{extra}
"""
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _sampled(run) -> dict:
    return json.loads(run.data.tags[tpe.TAG_SAMPLED])


def _assert_exactly_once(uri: str, study: Path, n_configs: int, seeds: int) -> list:
    """One finished run per planned key, N configurations with all their seeds at one LR."""
    spec = load_spec(study)
    runs = _trial_runs(uri, spec.name)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    planned = plan_trials(spec)
    assert len(planned) == n_configs * seeds
    assert Counter(r.data.tags[names.TAG_TRIAL_KEY] for r in finished) == Counter(
        {t.key: 1 for t in planned}
    )
    assert not [r for r in runs if r.info.status == "RUNNING"]
    by_config = defaultdict(list)
    for r in finished:
        by_config[r.data.tags[names.TAG_CONFIG_KEY]].append(r)
    assert len(by_config) == n_configs
    for config, rs in by_config.items():
        assert sorted(int(r.data.params["seed"]) for r in rs) == list(range(seeds))
        assert len({r.data.params["lr"] for r in rs}) == 1
        assert len({r.data.tags[tpe.TAG_TPE_SLOT] for r in rs}) == 1
        # the config key is the grid's for those settings: the report groups the seeds
        slot = next(t for t in planned if t.tpe["slot_id"] == rs[0].data.tags[tpe.TAG_TPE_SLOT])
        real = sampled_trial(
            spec, slot, tpe.Sampled.parse(rs[0].data.tags[tpe.TAG_SAMPLED]).settings()
        )
        assert real.config_key == config and real.tpe is not None
    return finished


# --- the sampler, without training ---------------------------------------------------------------


def _spec(text_search: str, lr: str = "{low: 1.0e-3, high: 1.0}", extra: str = ""):
    return parse_spec(f"""
name: s
task: {{dataset: digits, model: mlp}}
train: {{epochs: 2, batch_size: 64}}
optimizers: [{{name: sgd, lr: {lr}}}]
search: {text_search}
{extra}
""")


def test_slot_keys_are_pinned_and_do_not_depend_on_what_is_sampled() -> None:
    spec = _spec("{method: tpe, trials: 3, seed: 1}")
    trials = plan_trials(spec)
    assert [t.tpe["slot"] for t in trials] == [0, 1, 2]
    assert trials[0].key == "22eac6ed8617f469"  # pinned: a changed encoding loses resumes
    real = sampled_trial(spec, trials[0], {"optimizer": 0, "lr": 0.05, "schedule": 0,
                                               "swept": {}})  # fmt: skip
    assert real.key == trials[0].key and real.lr == 0.05
    # its config key is the one a grid trial with those settings has
    grid = plan_trials(_spec("{method: grid}", lr="[0.05]"))[0]
    assert real.config_key == grid.config_key and real.name == grid.name
    # more slots keep the first ones (a study extended with trials: N resumes)
    more = plan_trials(_spec("{method: tpe, trials: 5, seed: 1}"))
    assert [t.key for t in more[:3]] == [t.key for t in trials]
    # another search seed or space: other slots
    assert plan_trials(_spec("{method: tpe, trials: 3, seed: 2}"))[0].key != trials[0].key
    # the placeholder is a real point (the range's low end), for preflight
    assert trials[0].lr == 1.0e-3 and trials[0].name == "tpe slot 0 seed=0"
    # startup counts in the spec hash only when given: older studies keep theirs
    assert "startup" not in spec.model_dump()["search"]


def _state(spec, slot, lr: float, value: float) -> tpe.SlotState:
    rec = tpe.Sampled({"lr.0": lr}, 0, lr, 0, {}, slot)
    return tpe.SlotState(rec, "complete", value=value)


def test_sampler_is_seeded_per_slot_and_told_the_history() -> None:
    spec = _spec("{method: tpe, trials: 40, seed: 3, startup: 5}")
    slots = plan_trials(spec)
    # seeded: the same history gives the same point; another slot another point
    first = [tpe.sample(spec, slots[i], []).lr for i in range(5)]
    assert first == [tpe.sample(spec, slots[i], []).lr for i in range(5)]
    assert len(set(first)) == 5
    assert tpe.sample(spec, slots[0], []).source == "startup"

    # told: a 1-D problem whose best LR is 0.1; after the start-up, samples gather around it
    def score(lr: float) -> float:
        return -((math.log10(lr) + 1.0) ** 2)

    told = [_state(spec, i, lr, score(lr)) for i, lr in enumerate(first)]
    later = []
    for i in range(5, 40):
        s = tpe.sample(spec, slots[i], told)
        assert s.source == "tpe"
        later.append(s.lr)
        told.append(_state(spec, i, s.lr, score(s.lr)))
    # within half a decade of 0.1: a third of uniform draws on 1e-3..1; most of TPE's last 20
    near = sum(abs(math.log10(lr) + 1.0) < 0.5 for lr in later[-20:])
    assert near >= 12, later
    # a configuration being trained (RUNNING) is told: the liar moves the next sample off it
    alone = tpe.sample(spec, slots[39], told)
    running = tpe.SlotState(alone, "running")
    assert tpe.sample(spec, slots[39], [*told, running]).lr != alone.lr


def test_small_categorical_space_never_samples_a_recorded_configuration_twice() -> None:
    spec = _spec("{method: tpe, trials: 4, seed: 0, startup: 1}", lr="[0.01, 0.1]",
                 extra="sweep: {momentum: [0.0, 0.9]}")  # fmt: skip
    slots = plan_trials(spec)
    told: list = []
    seen = set()
    for i in range(4):
        s = tpe.sample(spec, slots[i], told)
        key = (s.lr, s.swept["momentum"])
        assert key not in seen
        seen.add(key)
        told.append(tpe.SlotState(s, "complete", value=float(i)))
    assert len(seen) == 4


# --- studies ----------------------------------------------------------------------------------------


def test_tpe_study_runs_n_configs_times_seeds_sampled_by_a_told_sampler(tmp_path: Path,
                                                                        capsys) -> None:  # fmt: skip
    study = _study(tmp_path, "tpe", trials=4, seeds=2)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["run", str(study), "--tracking-uri", uri, "--no-report", "--engine", "trial"]
    assert main(args) == 0
    out = "".join(capsys.readouterr())
    assert "8 trials" in out and "ran: 8 ok" in out
    finished = _assert_exactly_once(uri, study, 4, 2)
    # what each slot's first seed was given came from TPE told the store: one worker worked in
    # plan order, so slot i was sampled knowing slots 0..i-1 finished; recomputed here it is
    # the same point (random start-up draws for slots 0, 1, then the model)
    spec = load_spec(study)
    slots = {t.tpe["slot"]: t for t in plan_trials(spec) if t.seed == 0}
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tpe").experiment_id
    states = tpe.slot_states(client, exp, spec, {t.tpe["slot_id"] for t in slots.values()})
    by_slot = {s.sampled.slot: s for s in states.values()}
    assert sorted(by_slot) == [0, 1, 2, 3]
    assert all(s.state == "complete" and math.isfinite(s.value) for s in by_slot.values())
    for i in range(4):
        again = tpe.sample(spec, slots[i], [by_slot[j] for j in range(i)])
        assert again == by_slot[i].sampled, (i, again, by_slot[i].sampled)
        assert again.source == ("startup" if i < 2 else "tpe")
    assert all(r.info.run_name.startswith("sgd lr=") for r in finished)
    # a rerun finds nothing to do and samples nothing
    assert main(args) == 0
    assert "8 already finished" in "".join(capsys.readouterr())
    assert len(_trial_runs(uri, "tpe")) == 8
    _assert_search_section(uri, tmp_path, by_slot)


def _assert_search_section(uri: str, tmp_path: Path, by_slot: dict) -> None:
    """The report's Search section lists the slots in sampling order with the best so far, and
    names the best slot: the one with the highest seed-mean final val acc."""
    from lrstudy.report.build import generate_report
    from lrstudy.report.read import find_study
    from lrstudy.report.results import collect
    from lrstudy.report.tpe_search import tpe_summary

    res = generate_report(uri, study="tpe", out_dir=tmp_path / "reports", log_artifact=False)
    assert "search-tpe" in res.figures and 'id="search"' in res.html
    assert "TPE (Optuna&#39;s TPESampler, search seed 7): 4 of 4 configurations" in res.html
    assert "2 random start-up draws, then 2 from the model" in res.html
    client = MlflowClient(uri)
    sr = find_study(client, study="tpe")
    data = collect(client, sr)
    summary = tpe_summary(sr, data.trials, data.metric)
    pts = summary.points
    assert list(pts["slot"]) == [0, 1, 2, 3] and list(pts["startup"]) == [True, True, False, False]
    values = [by_slot[i].value for i in range(4)]  # what TPE was told: the same seed means
    assert [round(v, 6) for v in pts["value"]] == [round(v, 6) for v in values]
    assert list(pts["best_so_far"]) == [max(values[: i + 1]) for i in range(4)]
    best = max(range(4), key=lambda i: values[i])
    assert f"Best: configuration #{best + 1} of 4" in res.html


def _cmd(study: Path, uri: str, *extra: str) -> list[str]:
    """`run` on the trial engine; an `--engine` in `extra` comes later and wins."""
    return [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri", uri,
            "--no-report", "--engine", "trial", *extra]  # fmt: skip


# Both engines: slots one at a time on the trial engine; in populations of 2 (a batch of slots
# claimed and sampled together, freed slots sampling the next).
ENGINES = pytest.mark.parametrize(
    "engine",
    [["--engine", "trial"], ["--engine", "population", "--population-size", "2"]],
    ids=["trial", "population"],
)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "LRSTUDY_WORKERS": "1"}


@ENGINES
def test_two_workers_sample_distinct_points(tmp_path: Path, engine: list[str]) -> None:
    # trials of a few seconds, so the second worker (seconds of imports) takes slots too
    study = _study(tmp_path, "two", trials=6, seeds=1, epochs=5)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = subprocess.run(_cmd(study, uri, "--workers", "2", *engine), env=_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stderr
    finished = _assert_exactly_once(uri, study, 6, 1)
    assert len({_sampled(r)["lr"] for r in finished}) == 6
    assert len({r.data.tags[names.TAG_OWNER] for r in finished}) == 2  # both sampled


@ENGINES
def test_tpe_study_resumed_after_ctrl_c_continues_from_the_store(
    tmp_path: Path, engine: list[str]
) -> None:
    # epochs long enough (~3 s a trial) that Ctrl-C lands while a sampled trial trains (its
    # params are logged when training starts)
    study = _study(tmp_path, "resume", trials=4, seeds=2, epochs=100)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    db = tmp_path / "mlflow.db"
    proc = subprocess.Popen(_cmd(study, uri, *engine), env=_env(), cwd=tmp_path,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    sampled = f"SELECT count(*) FROM tags WHERE key = '{tpe.TAG_SAMPLED}'"
    training = (
        "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid JOIN params p "
        f"ON p.run_uuid = r.run_uuid WHERE r.status = 'RUNNING' AND t.key = '{tpe.TAG_SAMPLED}'"
    )
    try:
        deadline = time.monotonic() + 300
        # slot 0 (both seeds) done or going, slot 1 sampled, and a sampled trial training now
        while _count(db, sampled) < 3 or _count(db, training) < 1:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "nothing sampled"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    assert wait_until_gone(str(tmp_path)) == []
    before = _trial_runs(uri, "resume")
    killed = [r for r in before if r.info.status == "KILLED" and tpe.TAG_SAMPLED in r.data.tags]
    assert killed and not [r for r in before if r.info.status == "RUNNING"], [
        (r.info.status, r.data.tags.get(names.TAG_OUTCOME), tpe.TAG_SAMPLED in r.data.tags,
         r.data.tags.get(tpe.TAG_TPE_SLOT)) for r in before]  # fmt: skip
    # a killed slot is told as RUNNING (the constant liar), not forgotten
    spec = load_spec(study)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("resume").experiment_id
    ids = {t.tpe["slot_id"] for t in plan_trials(spec)}
    states = tpe.slot_states(client, exp, spec, ids)
    slot_of_killed = killed[0].data.tags[tpe.TAG_TPE_SLOT]
    if not any(r.info.status == "FINISHED" and r.data.tags[tpe.TAG_TPE_SLOT] == slot_of_killed
               for r in before):  # fmt: skip
        assert states[slot_of_killed].state == "running"

    again = subprocess.run(_cmd(study, uri, *engine), env=_env(), cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr
    finished = _assert_exactly_once(uri, study, 4, 2)
    # the killed keys were trained again at the configuration sampled before Ctrl-C
    final = {r.data.tags[names.TAG_TRIAL_KEY]: r for r in finished}
    for r in killed:
        assert _sampled(final[r.data.tags[names.TAG_TRIAL_KEY]]) == _sampled(r)
    # what finished before Ctrl-C was not run again
    done_before = [r.info.run_id for r in before if r.info.status == "FINISHED"]
    assert set(done_before) <= {r.info.run_id for r in finished}


def test_tpe_with_successive_halving_prunes(tmp_path: Path, capsys) -> None:
    study = _study(tmp_path, "tpehalve", trials=6, seeds=1, epochs=3,
                   search="{method: tpe, trials: 6, seed: 1, startup: 3, halving: {eta: 3}}")  # fmt: skip
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report"]) == 0
    finished = _assert_exactly_once(uri, study, 6, 1)
    outcomes = Counter(r.data.tags[names.TAG_OUTCOME] for r in finished)
    assert outcomes[names.OUTCOME_PRUNED] >= 1 and outcomes[names.OUTCOME_OK] >= 1, outcomes
    for r in finished:
        if r.data.tags[names.TAG_OUTCOME] == names.OUTCOME_PRUNED:
            assert r.data.tags[names.TAG_PRUNED_RUNG] == "1"
    # pruned slots are told as PRUNED with their rung value
    spec = load_spec(study)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tpehalve").experiment_id
    states = tpe.slot_states(client, exp, spec, {t.tpe["slot_id"] for t in plan_trials(spec)})
    pruned = [s for s in states.values() if s.state == "pruned"]
    assert len(pruned) == outcomes[names.OUTCOME_PRUNED]
    assert all(set(s.intermediate) == {1} for s in pruned)


def test_tpe_slots_train_as_populations_and_freed_slots_sample_the_next(tmp_path: Path) -> None:
    """9 slots x 2 seeds in populations of at most 6 seeds, halving at epoch 1: the first
    population samples its 3 slots together (the liar keeps them apart), and as halving stops
    members their slots take the next slots, sampled when they join (told what has finished),
    so one population trains more than 6 seeds. Every key still finishes exactly once."""
    study = _study(tmp_path, "tpepop", trials=9, seeds=2, epochs=3,
                   search="{method: tpe, trials: 9, seed: 3, startup: 3, halving: {eta: 3}}")  # fmt: skip
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report", "--workers", "1",
                 "--engine", "population", "--population-size", "6"]) == 0  # fmt: skip
    finished = _assert_exactly_once(uri, study, 9, 2)
    assert {r.data.tags[names.TAG_ENGINE] for r in finished} == {"population"}
    populations = Counter(r.data.tags[names.TAG_POPULATION] for r in finished)
    assert max(populations.values()) > 6, populations
    # sampled in slot order, start-up draws first, the model's picks after
    by_slot = {_sampled(r)["slot"]: _sampled(r)["source"] for r in finished}
    assert sorted(by_slot) == list(range(9))
    assert [by_slot[i] for i in range(3)] == ["startup"] * 3 and "tpe" in by_slot.values()
    outcomes = Counter(r.data.tags[names.TAG_OUTCOME] for r in finished)
    assert outcomes[names.OUTCOME_PRUNED] >= 2 and outcomes[names.OUTCOME_OK] >= 2, outcomes


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lr", "search", "expect"),
    [
        ("{low: 1.0e-3, high: 1.0}", "{method: tpe}", "search.method: tpe needs trials: N"),
        ("auto", "{method: tpe, trials: 4}", "optimizers[0].lr: 'auto' is not allowed with search.method: tpe"),
        ("0.1", "{method: tpe, trials: 4}", "search.method: tpe is not allowed: this study has one configuration"),
        ("[0.01, 0.1]", "{method: tpe, trials: 4}", "search.trials: 4 is not allowed: this study's space has only 2"),
        ("{low: 1.0e-3, high: 1.0}", "{method: random, trials: 4, startup: 2}", "search.startup: 2 is not allowed with method: random"),
        ("{low: 1.0e-3, high: 1.0}", "{method: tpe, trials: 4, startup: 0}", "search.startup"),
        ("{low: 1.0e-3, high: 1.0}", "{method: tpe, trials: 1, halving: {eta: 3}}", "successive halving compares configurations and this study has 1"),
        ("{low: 1.0e-3, high: 1.0}", "{method: tpe, trials: 4, halving: {eta: 1}}", "search.halving.eta: 1 is not allowed"),
    ],
)  # fmt: skip
def test_bad_tpe_input_gets_one_line(tmp_path: Path, capsys, lr: str, search: str,
                                     expect: str) -> None:  # fmt: skip
    study = _study(tmp_path, "bad", search=search, lr=lr)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0] and str(study) in err[0], err
    assert not (tmp_path / "mlflow.db").exists()
