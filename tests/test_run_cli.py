"""End to end: `python -m lrstudy run` into a real sqlite store, read back through MlflowClient."""

from __future__ import annotations

import os
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
from tests.conftest import wait_until_gone

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"


def _runs(uri: str, experiment: str = "smoke") -> tuple[list, list]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    kind = lambda k: [r for r in runs if r.data.tags.get(names.TAG_KIND) == k]  # noqa: E731
    return kind(names.KIND_STUDY), kind(names.KIND_TRIAL)


@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The smoke study, run once through the CLI (in-process) for the read-back tests below."""
    d = tmp_path_factory.mktemp("smoke")
    uri = f"sqlite:///{d}/mlflow.db"
    assert main(["run", str(SMOKE), "--tracking-uri", uri, "--no-report"]) == 0
    return uri


def test_parent_and_one_child_per_trial(smoke_store: str) -> None:
    parents, trials = _runs(smoke_store)
    planned = plan_trials(load_spec(SMOKE))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(trials) == len(planned) == 12
    assert {t.data.tags[names.PARENT_RUN_ID] for t in trials} == {parents[0].info.run_id}
    assert {t.data.tags[names.TAG_TRIAL_KEY] for t in trials} == {t.key for t in planned}
    assert {t.info.run_name for t in trials} == {t.name for t in planned}
    artifacts = [a.path for a in MlflowClient(smoke_store).list_artifacts(parents[0].info.run_id)]
    assert names.SPEC_ARTIFACT in artifacts


def test_every_optimizer_step_logs_exactly_one_lr(smoke_store: str) -> None:
    client = MlflowClient(smoke_store)
    _, trials = _runs(smoke_store)
    ok = [t for t in trials if t.data.tags[names.TAG_OUTCOME] == names.OUTCOME_OK]
    assert ok
    for run in ok:
        total = int(run.data.params["total_steps"])
        for key in (names.LR, names.TRAIN_LOSS, names.GRAD_NORM, names.MOMENTUM):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(total)), (run.info.run_name, key)
        val = client.get_metric_history(run.info.run_id, names.VAL_ACC)
        spe = int(run.data.params["steps_per_epoch"])
        assert [m.step for m in val] == [
            spe * (e + 1) for e in range(int(run.data.params["epochs"]))
        ]


def test_logged_lr_is_what_the_schedule_applied(smoke_store: str) -> None:
    client = MlflowClient(smoke_store)
    _, trials = _runs(smoke_store)
    run = next(t for t in trials if t.info.run_name == "adam lr=0.001 cosine+warmup seed=0")
    lrs = sorted(client.get_metric_history(run.info.run_id, names.LR), key=lambda m: m.step)
    assert lrs[0].value == pytest.approx(0.001 / 2)  # warmup: 2 steps, 1/W at step 0
    assert lrs[1].value == pytest.approx(0.001)  # peak at the warmup's last step
    assert lrs[-1].value < lrs[2].value  # cosine decays after warmup
    assert run.data.params["opt.eps"] == "1e-08"  # resolved defaults are recorded
    assert run.data.params["opt.betas"] == "[0.9, 0.999]"


def test_diverged_trials_are_marked_and_kept(smoke_store: str) -> None:
    _, trials = _runs(smoke_store)
    outcomes = Counter(t.data.tags[names.TAG_OUTCOME] for t in trials)
    assert outcomes == {names.OUTCOME_OK: 8, names.OUTCOME_DIVERGED: 4}
    for t in trials:
        if t.data.tags[names.TAG_OUTCOME] == names.OUTCOME_DIVERGED:
            assert t.data.params["lr"] == "50.0"
            assert t.info.status == "FINISHED"
            assert names.TAG_DIVERGED_AT in t.data.tags and names.TAG_DIVERGED_REASON in t.data.tags
        else:
            assert names.FINAL_VAL_ACC in t.data.metrics and names.BEST_VAL_ACC in t.data.metrics


def test_rerun_skips_everything(smoke_store: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", str(SMOKE), "--tracking-uri", smoke_store, "--no-report"]) == 0
    parents, trials = _runs(smoke_store)
    assert len(parents) == 1 and len(trials) == 12  # no new parent when there is nothing to do
    assert "12 already finished" in capsys.readouterr().err


def test_plan_shows_what_is_done(smoke_store: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["plan", str(SMOKE), "--tracking-uri", smoke_store]) == 0
    out = capsys.readouterr().out
    assert "12 trials, 12 done, 0 running, 0 to run" in out


def test_plan_checks_model_args_as_run_does(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace("hidden: [32]", "hiden: [32]"))
    assert main(["plan", str(bad), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "task.model" in err and "hiden" in err
    assert not (tmp_path / "mlflow.db").exists()


def _wait_for_running_trial(db: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Poll the store until the subprocess has a trial run in progress with steps logged.

    Read-only sqlite, not MlflowClient: a client would race the subprocess's schema creation.
    """
    # In training: RUNNING with params logged (a bare claim is withdrawn by Ctrl-C, not killed).
    query = (
        "SELECT count(DISTINCT r.run_uuid) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "JOIN params p ON p.run_uuid = r.run_uuid "
        f"WHERE r.status = 'RUNNING' AND t.key = '{names.TAG_KIND}' AND t.value = 'trial'"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                    if con.execute(query).fetchone()[0]:
                        return
            except sqlite3.Error:  # tables not created yet
                pass
        time.sleep(0.2)
    raise AssertionError("no trial started in time")


def _slow_study(tmp_path: Path) -> Path:
    # Each trial takes a few seconds, so the signal lands mid-trial; the rerun stays affordable.
    text = SMOKE.read_text().replace("epochs: 2", "epochs: 40").replace("name: smoke", "name: slow")
    text = text.replace("experiment: smoke", "experiment: slow").replace(
        "seeds: [0, 1]", "seeds: [0]"
    )
    text = text.replace("lr: [0.05, 50.0]", "lr: [0.05]")
    p = tmp_path / "slow.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("engine", ["trial", "population"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_study_is_closed_and_resumed(
    tmp_path: Path, sig: signal.Signals, engine: str
) -> None:
    study = _slow_study(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri", uri, "--no-report"]
    cmd += ["--engine", engine]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    _wait_for_running_trial(tmp_path / "mlflow.db", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    parents, trials = _runs(uri, "slow")
    unfinished = [t for t in trials if t.info.status != "FINISHED"]
    # The trial engine interrupts one trial; the population engine a whole population (2 here).
    assert len(unfinished) == (1 if engine == "trial" else 2)
    if sig == signal.SIGINT:
        # Ctrl-C closes what it interrupted itself: nothing is left RUNNING.
        assert proc.returncode == 130, err
        assert {t.info.status for t in unfinished} == {"KILLED"}
        assert {t.data.tags[names.TAG_OUTCOME] for t in unfinished} == {names.OUTCOME_KILLED}
        assert [p.info.status for p in parents] == ["KILLED"]
    else:
        assert {t.info.status for t in unfinished} == {"RUNNING"}  # SIGKILL: MLflow cannot know
    # Its helper processes (the metric writer) exit on their own and say nothing.
    assert wait_until_gone(str(tmp_path)) == []
    assert b"Traceback" not in err
    killed_ids = {t.info.run_id for t in unfinished}

    # The same command again closes the orphans (if any), redoes them and finishes the rest.
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report", "--engine", engine]) == 0
    _, trials = _runs(uri, "slow")
    planned = plan_trials(load_spec(study))
    finished = Counter(
        t.data.tags[names.TAG_TRIAL_KEY] for t in trials if t.info.status == "FINISHED"
    )
    assert finished == Counter({t.key: 1 for t in planned})  # no duplicates, nothing missing
    for t in trials:
        if t.info.run_id in killed_ids:
            assert t.info.status == "KILLED"
            assert t.data.tags[names.TAG_OUTCOME] == names.OUTCOME_KILLED
    assert len(trials) == len(planned) + len(killed_ids)
    engines = {t.data.tags[names.TAG_ENGINE] for t in trials if t.info.status == "FINISHED"}
    assert engines == {engine}


def test_bad_study_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace("lr: 1e-3", "lr: 0"))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(bad), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.yaml: optimizers[1].lr: 0 is not allowed" in err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("old", "new", "pattern"),
    [
        ("dataset: mnist1d", "dataset: npz:missing.npz", r"task\.dataset: .*missing\.npz"),
        ("dataset: mnist1d", "dataset: mnist2d", r"task\.dataset: .*mnist2d.*mnist1d"),
        ("model: mlp", "model: transformer", r"task\.model: .*transformer.*logistic"),
        ("hidden: [32]", "hiden: [32]", r"task\.model: .*hiden"),
    ],
)
def test_bad_task_exits_2_before_touching_mlflow(
    tmp_path: Path, capsys: pytest.CaptureFixture, old: str, new: str, pattern: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace(old, new))
    assert main(["run", str(bad), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(bad) in err
    assert __import__("re").search(pattern, err), err
    assert not (tmp_path / "mlflow.db").exists()


def test_unreachable_tracking_server_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["run", str(SMOKE), "--tracking-uri", "http://127.0.0.1:9", "--no-report"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tracking server unreachable" in err and "127.0.0.1:9" in err


def test_schema_lists_the_study_fields(capsys: pytest.CaptureFixture) -> None:
    import json

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"name", "task", "train", "optimizers", "schedules", "sweep", "search"} <= set(
        schema["properties"]
    )


def test_report_from_the_real_smoke_study(smoke_store: str, tmp_path: Path) -> None:
    from lrstudy.report.build import build_report

    path = build_report(smoke_store, study="smoke", experiment="smoke", out_dir=tmp_path)
    html = path.read_text(encoding="utf-8")
    assert path == tmp_path / "smoke" / "index.html"
    assert "diverged" in html and "sgd" in html and "adam" in html
    client = MlflowClient(smoke_store)
    parents, trials = _runs(smoke_store)
    artifacts = [a.path for a in client.list_artifacts(parents[0].info.run_id, "report")]
    assert artifacts == [names.REPORT_ARTIFACT]
    verdicts = {t.data.tags.get(names.TAG_DIAGNOSIS) for t in _runs(smoke_store)[1]}
    allowed = {"too_low", "good", "too_high", "at_chance", "diverged"}
    assert "diverged" in verdicts and verdicts <= allowed


def test_report_on_a_missing_store_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    uri = f"sqlite:///{tmp_path}/typo/mlflow.db"
    assert main(["report", "--experiment", "smoke", "--tracking-uri", uri]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "typo").exists()
