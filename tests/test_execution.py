"""Execution with real processes: concurrent invocations, local workers, kill -9, Ctrl-C.

Every test ends with the promise the README makes: exactly one FINISHED run per trial key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lrstudy import names
from lrstudy.cli import main
from lrstudy.plan import plan_trials
from lrstudy.spec import load_spec
from tests.conftest import smoke_study, wait_until_gone

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"


def _trial_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get(names.TAG_KIND) == names.KIND_TRIAL]


def _assert_exactly_once(uri: str, study: Path) -> list:
    spec = load_spec(study)
    runs = _trial_runs(uri, spec.experiment)
    finished = Counter(
        r.data.tags[names.TAG_TRIAL_KEY] for r in runs if r.info.status == "FINISHED"
    )
    assert finished == Counter({t.key: 1 for t in plan_trials(spec)})
    assert not [r for r in runs if r.info.status == "RUNNING"]
    return runs


def _cmd(study: Path, uri: str, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "lrstudy", "run", str(study)),
        *("--tracking-uri", uri, "--no-report", *extra),
    ]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def _running_trials(db: Path) -> int:
    # Trials in training: RUNNING, and their params logged (a bare claim does not count).
    query = (
        "SELECT count(DISTINCT r.run_uuid) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "JOIN params p ON p.run_uuid = r.run_uuid "
        "WHERE r.status = 'RUNNING' AND r.lifecycle_stage = 'active' "
        f"AND t.key = '{names.TAG_KIND}' AND t.value = 'trial'"
    )
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute(query).fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _wait_running(db: Path, procs: list[subprocess.Popen], n: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, p.communicate()
        if _running_trials(db) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{n} running trial(s) never seen")


def test_three_invocations_on_a_fresh_store_share_the_work(tmp_path: Path) -> None:
    study = smoke_study(tmp_path, "trio")
    uri = f"sqlite:///{tmp_path}/mlflow.db"  # does not exist yet: all three create it at once
    procs = [
        subprocess.Popen(
            _cmd(study, uri, "--workers", "1"),
            env=_env(),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
        assert b"Traceback" not in err
    _assert_exactly_once(uri, study)


def test_two_workers_finish_every_trial_once(tmp_path: Path, capsys) -> None:
    study = smoke_study(tmp_path, "pair")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report", "--workers", "2"]) == 0
    runs = _assert_exactly_once(uri, study)
    err = capsys.readouterr().err
    assert "12 trials; 0 already finished; ran: 4 diverged, 8 ok" in err
    assert "± " in err and "n=2" in err  # best = seed mean ± std over the config's seeds
    assert len({r.data.tags[names.PARENT_RUN_ID] for r in runs}) == 1


def _two_long_trials(tmp_path: Path, name: str) -> Path:
    # Two trials of several seconds each: both workers are mid-trial when the signal lands.
    study = smoke_study(tmp_path, name, epochs=1000, seeds="[0]")
    text = study.read_text().replace("lr: [0.05, 50.0]", "lr: [0.05]")
    study.write_text(text.replace("  - name: cosine\n    warmup: 2\n", ""))
    assert len(plan_trials(load_spec(study))) == 2
    return study


def _start(study: Path, uri: str, cwd: Path, *extra: str) -> subprocess.Popen:
    """`lrstudy run` in a process group of its own: what a terminal's Ctrl-C reaches, and what a
    test kills whole."""
    return subprocess.Popen(_cmd(study, uri, *extra), env=_env(), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip


def _wait_training(db: Path, proc: subprocess.Popen, n: int, timeout: float = 120) -> None:
    """Until n trial runs have train-loss points in the store: they are in their steps."""
    query = f"SELECT count(DISTINCT run_uuid) FROM metrics WHERE key = '{names.TRAIN_LOSS}'"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                if con.execute(query).fetchone()[0] >= n:
                    return
        except sqlite3.OperationalError:
            pass  # the store is not created (or migrated) yet
        time.sleep(0.2)
    raise AssertionError(f"{n} training trial(s) never seen")


def _running_pids(db: Path) -> set[int]:
    query = (
        "SELECT t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        f"WHERE r.status = 'RUNNING' AND t.key = '{names.TAG_PID}'"
    )
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return {int(v) for (v,) in con.execute(query)}


def test_cli_workers_are_forked(tmp_path: Path) -> None:
    # `lrstudy run` forks its workers from the study process once the training stack is
    # imported (execute/local.py). A forked worker runs the study's own command line, a fresh
    # interpreter `-m lrstudy.execute.worker`.
    study = _two_long_trials(tmp_path, "forked")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = _start(study, uri, tmp_path, "--workers", "2", "--engine", "trial")
    try:
        _wait_running(tmp_path / "mlflow.db", [proc], n=2)
        pids = _running_pids(tmp_path / "mlflow.db") - {proc.pid}
        assert len(pids) == 1, pids  # worker 1; worker 0 is the study process itself
        (worker,) = pids
        cmdline = Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
        assert b"lrstudy.execute.worker" not in cmdline and b"run" in cmdline, cmdline
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    assert not [r for r in _trial_runs(uri, "forked") if r.info.status == "RUNNING"]


HEAVY_DATA = """
import torch
from torch.utils.data import Dataset


class Heavy(Dataset):
    def __init__(self, n: int = 400) -> None:
        torch.randn(4_000_000).exp_().sum()  # a parallel op in the study process, before forking
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 256, generator=g)
        self.y = (self.x.sum(1) > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]
"""


def test_forked_workers_train_with_two_threads(tmp_path: Path) -> None:
    # The user's dataset runs a parallel torch op while the study process loads it, before the
    # workers are forked. Had it run on two threads, OpenMP's pool (which does not survive a
    # fork) would make each worker hang at its first parallel op on two threads of its own.
    (tmp_path / "heavy.py").write_text(HEAVY_DATA)
    study = tmp_path / "threads.yaml"
    study.write_text(
        "name: threads\ntask:\n  dataset: {class_path: heavy.Heavy}\n  model: mlp\n"
        "  model_args: {hidden: [1024]}\n"  # matmuls big enough for parallel regions
        "train: {epochs: 30, batch_size: 200, threads: 2}\n"  # both workers train
        "optimizers: [{name: sgd, lr: [0.01, 0.1]}]\nseeds: [0]\n"
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.Popen(
        _cmd(study, uri, "--workers", "2", "--engine", "trial"),
        env=_env(),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a hung worker is killed with its group below
    )
    try:
        _, err = proc.communicate(timeout=240)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err.decode()
    runs = _assert_exactly_once(uri, study)
    assert len({r.data.tags[names.TAG_PID] for r in runs}) == 2  # the forked worker trained too


def test_more_workers_than_trials_exit_at_once(tmp_path: Path) -> None:
    # Workers beyond the number of trials are dismissed: each must see the end of its order
    # pipe although the workers forked after it inherited the study process's copy.
    study = smoke_study(tmp_path, "few", seeds="[0]")
    text = study.read_text().replace("lr: [0.05, 50.0]", "lr: [0.05]")
    study.write_text(text.replace("  - name: cosine\n    warmup: 2\n", ""))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = subprocess.run(
        _cmd(study, uri, "--workers", "5", "--engine", "trial"),
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert b"2 trials; 0 already finished; ran: 2 ok" in out.stderr
    _assert_exactly_once(uri, study)


def test_ctrl_c_stops_every_worker_and_leaves_nothing_running(tmp_path: Path) -> None:
    study = _two_long_trials(tmp_path, "interrupt")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = _start(study, uri, tmp_path, "--workers", "2")
    _wait_running(tmp_path / "mlflow.db", [proc], n=2)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    runs = _trial_runs(uri, "interrupt")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert len(killed) >= 2
    assert {r.data.tags[names.TAG_OUTCOME] for r in killed} == {names.OUTCOME_KILLED}
    # No process of that group is left, nor the metric writers (in sessions of their own).
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
    assert wait_until_gone(str(tmp_path)) == []
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report", "--workers", "2"]) == 0
    _assert_exactly_once(uri, study)


SWALLOWING_NET = """
import time

from torch import nn


class _Slow:
    def __del__(self):
        time.sleep(0.02)  # most of every step: a Ctrl-C lands here, in a finalizer


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(40, 10)

    def forward(self, x):
        _Slow()
        return self.fc(x.flatten(1))
"""


@pytest.mark.parametrize("engine", ["trial", "population"])
def test_ctrl_c_swallowed_by_a_finalizer_still_stops_the_trials(tmp_path: Path, engine) -> None:
    # Python turns a SIGINT that lands in a `__del__` into "Exception ignored in ..." and carries
    # on. Seen in CI: a worker went on to finish its trial and the other one. The recorded
    # request (lrstudy.interrupts) stops training at the next step instead.
    (tmp_path / "swallow.py").write_text(SWALLOWING_NET)
    study = tmp_path / "swallow.yaml"
    study.write_text(
        "name: swallow\ntask:\n  model: {class_path: swallow.Net}\n  dataset: mnist1d\n"
        "  data_args: {num_samples: 400}\n"
        "train: {epochs: 40, batch_size: 50}\n"  # ~300 steps of 20 ms: ~6 s a trial
        "optimizers: [{name: sgd, lr: [0.01, 0.1]}]\nseeds: [0]\n"
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = _start(study, uri, tmp_path, "--workers", "2", "--engine", engine)
    try:
        _wait_training(tmp_path / "mlflow.db", proc, n=2)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err and b"Exception ignored" not in err, err.decode()
    runs = _trial_runs(uri, "swallow")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"KILLED"}, err.decode()
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report", "--workers", "2"]) == 0
    _assert_exactly_once(uri, study)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root for a UTS namespace"
)
def test_dead_worker_on_another_machine_is_taken_over_after_its_lease(tmp_path: Path) -> None:
    # The first worker runs under another hostname (a UTS namespace): its pid cannot be checked
    # from here, so only its lease can give its trial back, exactly as for another machine.
    study = _two_long_trials(tmp_path, "lease")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    inner = " ".join(_cmd(study, uri, "--workers", "1"))
    other = subprocess.Popen(
        ["unshare", "-u", "sh", "-c", f"hostname other-machine && exec {inner}"],
        env=_env(LRSTUDY_LEASE_SECONDS="4"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_running(tmp_path / "mlflow.db", [other], n=1)
    other.kill()
    other.communicate(timeout=30)
    killed_at = time.time()
    env = _env(LRSTUDY_LEASE_SECONDS="4")
    done = subprocess.run(
        _cmd(study, uri, "--workers", "1"), env=env, cwd=tmp_path, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()
    runs = _assert_exactly_once(uri, study)
    orphan = [r for r in runs if r.info.status == "KILLED"]
    assert len(orphan) == 1 and orphan[0].data.tags[names.TAG_HOST] == "other-machine"
    # Closed as of its last sign of life (before the kill), not the time of the rerun.
    assert orphan[0].info.end_time / 1000 <= killed_at + 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers: 0 is not allowed"),
        (["--workers", "-2"], "--workers: -2 is not allowed"),
        (["--workers", "two"], "--workers: 'two' is not allowed"),
        (["--executor", "slurm"], "--executor: 'slurm' is not an executor; allowed: local, ray"),
    ],
)
def test_bad_execution_flags_are_one_line(tmp_path: Path, capsys, args, message) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(SMOKE), "--tracking-uri", uri, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
    assert not (tmp_path / "mlflow.db").exists()


def test_ctrl_c_while_a_finished_trial_is_being_ended_still_ends_it(tmp_path, monkeypatch) -> None:
    # The forced interleaving: a real SIGINT arrives the moment the first trial's run is being
    # ended. The run must end with its real outcome (not stay RUNNING), and the study stops.
    from lrstudy.track import runs as track_runs

    real_end_run, fired = track_runs.end_run, []

    def end_run_interrupted(client, run_id, **kwargs):
        if not fired and kwargs.get("outcome") == names.OUTCOME_OK:
            fired.append(run_id)
            os.kill(os.getpid(), signal.SIGINT)
        return real_end_run(client, run_id, **kwargs)

    monkeypatch.setattr(track_runs, "end_run", end_run_interrupted)
    study = smoke_study(tmp_path, "late", seeds="[0]")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ["run", str(study), "--tracking-uri", uri, "--no-report", "--workers", "1"]
    assert main([*args, "--engine", "trial"]) == 130
    runs = {r.info.run_id: r for r in _trial_runs(uri, "late")}
    assert fired and runs[fired[0]].info.status == "FINISHED"
    assert runs[fired[0]].data.tags[names.TAG_OUTCOME] == names.OUTCOME_OK
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]
