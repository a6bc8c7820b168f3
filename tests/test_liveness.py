"""Liveness across pid namespaces: one hostname, several pid spaces (containers with host network).

A claim's pid can only be checked from the same machine (boot id) AND the same pid namespace;
anything else is judged by its lease. Real processes: `python -m lrstudy run` under
`unshare --pid --fork --mount-proc` (same UTS namespace, so the same hostname) on one sqlite store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lrstudy import names
from lrstudy.plan import plan_trials
from lrstudy.spec import load_spec
from lrstudy.track import runs as track_runs
from lrstudy.track.done_or_stale import is_stale
from lrstudy.track.leases import Lease
from lrstudy.track.store import experiment_id, open_client
from tests.conftest import smoke_study

ROOT = Path(__file__).resolve().parents[1]
CAN_UNSHARE_PID = os.geteuid() == 0 and bool(shutil.which("unshare"))

# Inside each namespace `sh` (pid 1) first forks N short-lived processes, so the study process
# gets pid N+2 there: the three invocations have pids that differ (and are absent in each
# other's namespaces), exactly as three containers sharing a hostname.
_SPACER = 'i=0; while [ "$i" -lt "$N" ]; do /bin/true; i=$((i+1)); done; "$@"'


def _in_pid_namespace(cmd: list[str], spacer: int, env: dict[str, str], cwd: Path):
    wrapped = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    wrapped += ["sh", "-c", _SPACER, "sh", *cmd]
    return subprocess.Popen(
        wrapped,
        env={**env, "N": str(spacer)},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.required
@pytest.mark.skipif(not CAN_UNSHARE_PID, reason="needs root and unshare for pid namespaces")
def test_runs_in_other_pid_namespaces_with_one_hostname_are_never_reaped(tmp_path: Path) -> None:
    study = smoke_study(tmp_path, "pidns", epochs=12, seeds="[0, 1]")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LRSTUDY_WORKERS": "1",
        "LRSTUDY_LEASE_SECONDS": "20",  # live rivals beat every 5 s; idle workers look as often
    }
    cmd = [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri", uri]
    cmd += ["--no-report", "--engine", "trial"]
    procs = [_in_pid_namespace(cmd, spacer, env, tmp_path) for spacer in (0, 40, 80)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
        assert b"Traceback" not in err
    spec = load_spec(study)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(spec.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    trials = [r for r in runs if r.data.tags.get(names.TAG_KIND) == names.KIND_TRIAL]
    # The invocations really ran in three pid namespaces, under one hostname.
    assert len({r.data.tags[track_runs.TAG_PID_NS] for r in trials}) >= 2
    assert len({r.data.tags[names.TAG_HOST] for r in trials}) == 1
    finished = Counter(
        r.data.tags[names.TAG_TRIAL_KEY] for r in trials if r.info.status == "FINISHED"
    )
    assert finished == Counter({t.key: 1 for t in plan_trials(spec)})
    # No live trial was reaped mid-training (and redone): nothing ended KILLED, nothing RUNNING.
    assert Counter(r.info.status for r in trials) == Counter({"FINISHED": len(finished)})


@pytest.mark.required
@pytest.mark.skipif(not CAN_UNSHARE_PID, reason="needs root and unshare for pid namespaces")
def test_a_dead_worker_in_another_pid_namespace_is_taken_over_by_its_lease(tmp_path: Path) -> None:
    # Its pid means nothing here, so its trial comes back when its lease expires (not never).
    from tests.test_execution import _assert_exactly_once, _two_long_trials, _wait_running

    study = _two_long_trials(tmp_path, "pidlease")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LRSTUDY_LEASE_SECONDS": "4"}
    cmd = [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri", uri]
    cmd += ["--no-report", "--workers", "1"]
    other = _in_pid_namespace(cmd, 20, env, tmp_path)
    _wait_running(tmp_path / "mlflow.db", [other], n=1)
    other.kill()  # unshare --kill-child: the whole namespace dies with it
    other.communicate(timeout=60)
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()
    runs = _assert_exactly_once(uri, study)
    (orphan,) = [r for r in runs if r.info.status == "KILLED"]
    ours = track_runs.process_identity()[track_runs.TAG_PID_NS]
    assert orphan.data.tags[track_runs.TAG_PID_NS] != ours
    assert orphan.data.tags[names.TAG_HOST] == track_runs.host()


def _run_with(client, exp: str, **tags: str):
    base = {names.TAG_KIND: names.KIND_TRIAL, names.TAG_HEARTBEAT: "9e12"}  # a fresh lease
    return client.create_run(exp, tags={**base, **tags})


def test_a_dead_pid_is_only_judged_in_our_own_machine_and_pid_namespace(store_uri: str) -> None:
    client = open_client(store_uri)
    exp = experiment_id(client, "liveness")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that existed here and is gone now (reaped)
    ours = track_runs.process_identity()
    pid = str(gone.pid)
    host = track_runs.host()
    cases = {
        # ours: the pid check is sound, a dead pid is reaped at once
        "same machine and pid namespace": (dict(ours), True),
        # another pid namespace (a container with host network): its pids mean nothing here
        "other pid namespace": ({**ours, track_runs.TAG_PID_NS: "pid:[1]"}, False),
        # another machine that happens to share the hostname (and the init pid namespace inode)
        "other boot": ({**ours, track_runs.TAG_BOOT_ID: "0-other-boot"}, False),
        # written before the boot id / pid namespace were recorded: the lease decides
        "old run, same host": ({}, False),
    }
    lease = Lease(ttl_s=60)
    for what, (identity, dead) in cases.items():
        run = _run_with(client, exp, **{names.TAG_HOST: host, names.TAG_PID: pid, **identity})
        run = client.get_run(run.info.run_id)
        assert track_runs.pid_gone_here(run) is dead, what
        assert is_stale(run, lease) is dead, what
