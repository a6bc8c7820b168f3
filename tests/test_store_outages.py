"""Outage-safe reaping and database restarts, with real processes and real services.

- After a tracking-server outage every heartbeat in the store is old, yet the owners are alive and
  beat again as soon as they can: a new invocation (and its start-up reap) must take no claim.
- A direct PostgreSQL store (`postgresql+psycopg2://`) restarting mid-study is ridden out like a
  server outage (the same patience, and exit 3 past it).
Everything binds 127.0.0.1 and is stopped by pid (tests/servers.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from lrstudy import names
from tests.conftest import smoke_study
from tests.servers import MlflowServer, _stop_group, postgres_cluster, why_no_postgres
from tests.store_runs import kind_runs as _trials
from tests.test_server import _assert_complete, _Lines

ROOT = Path(__file__).resolve().parents[1]
LEASE_S = 4.0


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LRSTUDY_LEASE_SECONDS": f"{LEASE_S:g}",
        "LRSTUDY_TRACKING_PATIENCE": "120",
        **extra,
    }


def _start(study: Path, uri: str, tmp_path: Path, workers: int = 1):
    cmd = [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri", uri]
    proc = subprocess.Popen(
        [*cmd, "--workers", str(workers), "--no-report"],
        env=_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    return proc, _Lines(proc.stderr)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wait(predicate, what: str, timeout: float, proc=None, lines=None, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"ended early ({proc.returncode}): {lines.text() if lines else ''}"
            )
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"{what} not seen in {timeout} s")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.required
def test_a_new_invocation_right_after_a_server_outage_reaps_no_live_claim(tmp_path: Path) -> None:
    # Two long trials; the first invocation trains one when the server dies for 3 leases. The
    # moment the server answers again every heartbeat is 12 s old and its owner not yet back:
    # a clock-based reap would close them. The start-up reap path runs right then (polled at
    # 50 ms, before the owner's patient client retries, ~1 s), and a whole new invocation follows.
    from lrstudy.track import runs as track_runs
    from lrstudy.track.done_or_stale import reap_stale
    from lrstudy.track.leases import Lease
    from lrstudy.track.store import experiment_id, open_client
    from tests.test_execution import _two_long_trials

    study = _two_long_trials(tmp_path, "after_outage")
    server = MlflowServer(f"sqlite:///{tmp_path}/server.db", tmp_path / "server").start()
    first = second = None
    try:
        first, lines = _start(study, server.url, tmp_path)

        def training() -> bool:
            return any(
                r.info.status == "RUNNING" and r.data.params
                for r in _trials(server.url, "after_outage")
            )

        _wait(training, "a trial in training", 240, first, lines)
        server.kill()
        time.sleep(3 * LEASE_S)
        server.start()
        _wait(lambda: _healthy(server.url), "the server back", 60, every=0.05)
        # What `lrstudy run` does at start-up, from a process that never saw the outage.
        client = open_client(server.url)
        exp = experiment_id(client, "after_outage")
        runs = track_runs.search_study_runs(client, exp, names.KIND_TRIAL, "after_outage")
        runs += track_runs.search_study_runs(client, exp, names.KIND_STUDY, "after_outage")
        assert [r for r in runs if r.info.status == "RUNNING"]  # live claims, old heartbeats
        assert reap_stale(client, runs, Lease(LEASE_S)) == []
        second, lines2 = _start(study, server.url, tmp_path)
        assert second.wait(timeout=600) == 0, lines2.text()
        assert first.wait(timeout=600) == 0, lines.text()
    finally:
        for p in (first, second):
            if p is not None:
                _kill(p)
        server.stop()
    err = lines.text()
    assert "Traceback" not in err + lines2.text()
    assert "tracking server reachable again" in err
    server.start()  # stopped above: read what the store holds now
    try:
        runs = _assert_complete(server.url, study)
        # No live claim was reaped: nothing KILLED, each key finished once.
        assert {r.info.status for r in runs} == {"FINISHED"}, [
            (r.info.run_name, r.info.status) for r in runs
        ]
    finally:
        server.stop()


@pytest.mark.required
def test_a_clock_that_differs_from_the_servers_is_warned_about(tmp_path: Path, monkeypatch) -> None:
    # The server's clock is its HTTP Date header; ours is shifted by injecting time.time.
    from lrstudy.track.leases import Lease, clock_offset, clock_warning
    from lrstudy.track.store import open_client

    server = MlflowServer(f"sqlite:///{tmp_path}/server.db", tmp_path / "server").start()
    try:
        client = open_client(server.url)
        offset, uncertainty = clock_offset(client, server.url)
        assert abs(offset) <= uncertainty + 1 and uncertainty < 2
        assert clock_warning(client, server.url, Lease(LEASE_S)) is None
        true_time = time.time
        monkeypatch.setattr(time, "time", lambda: true_time() + 2 * LEASE_S)
        line = clock_warning(client, server.url, Lease(LEASE_S))
        # 8 s, as the Date header's whole seconds let it be measured
        assert line is not None and re.search(r"is [89] s ahead of the tracking store's", line)
        assert clock_warning(client, server.url, Lease(60)) is None  # within a quarter of 60 s
    finally:
        server.stop()


def _restart(pg, down_s: float) -> None:
    """Stop the cluster (fast shutdown, as a restart does), wait `down_s`, start it again."""
    args = list(pg.proc.args)
    _stop_group(pg.proc, signal.SIGINT, grace_s=15)
    time.sleep(down_s)
    with open(pg.log, "ab") as log:
        pg.proc = pg._as_postgres(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    pg._wait_ready(60)


@pytest.mark.required
@pytest.mark.skipif(why_no_postgres() is not None, reason=str(why_no_postgres()))
def test_a_postgres_restart_mid_study_is_ridden_out(tmp_path: Path) -> None:
    study = smoke_study(tmp_path, "pgrestart", epochs=40)
    with postgres_cluster() as pg:
        uri = pg.create_database(f"mlflow_{uuid.uuid4().hex[:8]}")
        from lrstudy.track.leases import Lease, clock_offset, clock_warning
        from lrstudy.track.store import open_client

        client = open_client(uri)  # the database's own clock: clock_timestamp()
        offset, uncertainty = clock_offset(client, uri)
        assert abs(offset) <= uncertainty + 0.5
        assert clock_warning(client, uri, Lease(LEASE_S)) is None
        proc, lines = _start(study, uri, tmp_path, workers=2)
        try:
            _wait(
                lambda: sum(r.info.status == "RUNNING" for r in _trials(uri, "pgrestart")) >= 2,
                "two trials running",
                240,
                proc,
                lines,
            )
            stopped_at = time.monotonic()
            _restart(pg, down_s=8)
            back_at = time.monotonic()
            assert proc.wait(timeout=600) == 0, lines.text()
        finally:
            _kill(proc)
        err = lines.text()
        assert "Traceback" not in err, err
        seen = lines.first("unreachable")
        assert seen is not None and stopped_at < seen < back_at + 5, err
        assert "reachable again" in err
        _assert_complete(uri, study)
