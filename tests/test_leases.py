"""Leases that trust nobody's clock or settings (`lrstudy.track.leases`), with real processes.

An observer judges a claim by the claim's own lease (stored on its run) and by watching its
heartbeat stay unchanged for that long on its own monotonic clock: a worker whose wall clock is
skewed by twice the lease, or an invocation with a much shorter lease, reaps no live claim.
The skewed clock is injected into a real `lrstudy run` process (its `time.time` is shifted before
anything is imported: MLflow's run/metric times and lrstudy's heartbeats all read it).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lrstudy import names
from lrstudy.cli import main
from lrstudy.errors import UserInputError
from lrstudy.track.claims import Claims, key_runs
from lrstudy.track.done_or_stale import is_stale
from lrstudy.track.leases import TAG_LEASE, Judge, Lease, Watch, lease_of
from lrstudy.track.outage import Outage
from lrstudy.track.store import experiment_id, open_client
from tests.conftest import smoke_study
from tests.test_execution import _env, _trial_runs

ROOT = Path(__file__).resolve().parents[1]
LEASE_S = 6.0

# `python -m lrstudy` with its wall clock shifted by SKEW seconds (argv[1]); the rest is the CLI.
_SKEWED = (
    "import sys, time\n"
    "_skew = float(sys.argv.pop(1)); _time = time.time; _time_ns = time.time_ns\n"
    "time.time = lambda: _time() + _skew\n"
    "time.time_ns = lambda: _time_ns() + int(_skew * 1e9)\n"
    "from lrstudy.cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


def _run_cmd(study: Path, uri: str, skew_s: float | None = None) -> list[str]:
    head = [sys.executable, "-m", "lrstudy"] if skew_s is None else [
        sys.executable, "-c", _SKEWED, str(skew_s)
    ]  # fmt: skip
    return [
        *(*head, "run", str(study), "--tracking-uri", uri),
        *("--no-report", "--workers", "1", "--engine", "trial"),
    ]


def _assert_no_live_claim_reaped(uri: str, study: Path) -> list:
    from lrstudy.plan import plan_trials
    from lrstudy.spec import load_spec

    spec = load_spec(study)
    runs = _trial_runs(uri, spec.experiment)
    finished = Counter(
        r.data.tags[names.TAG_TRIAL_KEY] for r in runs if r.info.status == "FINISHED"
    )
    assert finished == Counter({t.key: 1 for t in plan_trials(spec)})
    # Nothing reaped (KILLED) and nothing left: every claim that was made ran to its end.
    assert Counter(r.info.status for r in runs) == Counter({"FINISHED": len(finished)})
    return runs


@pytest.mark.parametrize("raw", ["0", "-5", "nan", "soon"])
def test_a_lease_that_is_no_lease_is_refused_in_one_line(
    tmp_path: Path, capsys, monkeypatch, raw: str
) -> None:
    study = smoke_study(tmp_path, "nolease")
    monkeypatch.setenv("LRSTUDY_LEASE_SECONDS", raw)
    assert main(["run", str(study), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "LRSTUDY_LEASE_SECONDS" in err and "> 0" in err, err
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was written
    with pytest.raises(UserInputError):
        Lease(0)


def test_skewed_workers_reap_no_live_claim(tmp_path: Path) -> None:
    # Three invocations of one study at once: one on the true clock, one 2 x lease ahead, one
    # 2 x lease behind. Judged by clocks, the one ahead sees every other heartbeat 12 s old and
    # the others see the one behind as 12 s old: with a 6 s lease, each live claim looks dead.
    study = smoke_study(tmp_path, "skew", epochs=40, seeds="[0, 1]")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = _env(LRSTUDY_LEASE_SECONDS=f"{LEASE_S:g}")
    procs = []
    for skew in (None, 2 * LEASE_S, -2 * LEASE_S):
        procs.append(
            subprocess.Popen(
                _run_cmd(study, uri, skew),
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
        time.sleep(0.5)  # the first creates the store; the others find it
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
        assert b"Traceback" not in err
    runs = _assert_no_live_claim_reaped(uri, study)
    # All three trained side by side, each on its own clock: their runs' start times (the
    # owner's clock) are ~2 x lease apart.
    by_owner: dict[str, list[float]] = {}
    for r in runs:
        by_owner.setdefault(r.data.tags[names.TAG_OWNER], []).append(r.info.start_time / 1000)
    assert len(by_owner) == 3, {k: len(v) for k, v in by_owner.items()}
    firsts = sorted(min(v) for v in by_owner.values())
    assert firsts[-1] - firsts[0] > 3 * LEASE_S
    # Each run carries the lease it was claimed with.
    assert {r.data.tags[TAG_LEASE] for r in runs} == {f"{LEASE_S:g}"}


def test_a_shorter_lease_reaps_no_live_claim_of_a_longer_one(tmp_path: Path) -> None:
    # The first invocation claims with a 20 s lease (beats every 5 s); the second, started while
    # it trains, has a 1 s lease and looks at its claims every 0.25 s: judged by its own lease,
    # every one of them would look dead between two beats.
    from tests.test_execution import _two_long_trials, _wait_running

    study = _two_long_trials(tmp_path, "leases")  # two trials of ~10 s
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    long = subprocess.Popen(
        _run_cmd(study, uri),
        env=_env(LRSTUDY_LEASE_SECONDS="20"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _wait_running(tmp_path / "mlflow.db", [long], n=1)
    short = subprocess.run(
        _run_cmd(study, uri),
        env=_env(LRSTUDY_LEASE_SECONDS="1"),
        cwd=tmp_path,
        capture_output=True,
        timeout=600,
    )
    _, err = long.communicate(timeout=600)
    assert long.returncode == 0, err.decode()
    assert short.returncode == 0, short.stderr.decode()
    runs = _assert_no_live_claim_reaped(uri, study)
    assert {r.data.tags[TAG_LEASE] for r in runs} == {"20", "1"}  # both really claimed


def test_a_run_is_judged_by_its_own_lease_as_watched_here(store_uri: str) -> None:
    client = open_client(store_uri)
    exp = experiment_id(client, "judge")
    tags = {
        names.TAG_KIND: names.KIND_TRIAL,
        names.TAG_STUDY: "judge",
        names.TAG_TRIAL_KEY: "k",
        names.TAG_HEARTBEAT: "1.0",  # the epoch: by any clock, ancient
        TAG_LEASE: "0.5",
    }
    run_id = client.create_run(exp, tags=tags).info.run_id
    watch = Watch()
    judge = Judge(Lease(3600), watch=watch)  # the observer's own lease does not count
    assert lease_of(client.get_run(run_id), Lease(3600)).ttl_s == 0.5
    first = time.monotonic()
    assert not judge.expired(client.get_run(run_id), first)  # first seen: not judged
    time.sleep(0.6)
    looked_at = time.monotonic()
    assert judge.expired(client.get_run(run_id), looked_at)  # unchanged for its lease
    # A beat (any new value, whatever the clock says) renews it.
    client.set_tag(run_id, names.TAG_HEARTBEAT, "0.5")
    assert not judge.expired(client.get_run(run_id), time.monotonic())
    # Watching counts only while the store answered us: an outage that just ended resets it.
    time.sleep(0.6)
    outage = Outage(store_uri, patience_s=60)
    outage.failed(RuntimeError("Connection refused"))
    assert not Judge(Lease(1), outage, watch).expired(client.get_run(run_id), time.monotonic())
    outage.ok()
    assert not Judge(Lease(1), outage, watch).expired(client.get_run(run_id), time.monotonic())
    assert Judge(Lease(1), None, watch).expired(client.get_run(run_id), time.monotonic())
    time.sleep(0.6)
    assert Judge(Lease(1), outage, watch).expired(client.get_run(run_id), time.monotonic())


def test_a_fresh_look_never_reaps_by_age(store_uri: str) -> None:
    # What a new invocation finds after an outage: a live claim whose heartbeat is minutes old.
    client = open_client(store_uri)
    exp = experiment_id(client, "fresh")
    tags = {
        names.TAG_KIND: names.KIND_TRIAL,
        names.TAG_STUDY: "fresh",
        names.TAG_TRIAL_KEY: "k",
        names.TAG_HEARTBEAT: f"{time.time() - 120:.3f}",
        names.TAG_HOST: "elsewhere",
        TAG_LEASE: "60",
    }
    client.create_run(exp, start_time=int((time.time() - 300) * 1000), tags=tags)
    claims = Claims(client, exp, "fresh", lease=Lease(1))
    assert claims.state("k") == "busy"
    (run,) = key_runs(client, exp, "fresh", "k")
    assert not is_stale(run, Lease(1))
    assert run.info.status == "RUNNING"
    assert MlflowClient(store_uri).get_run(run.info.run_id).info.status == "RUNNING"
