"""Studies against a real `mlflow server` on a real PostgreSQL cluster, including server crashes.

The promise under test, as in tests/test_execution.py: exactly one FINISHED run per trial key,
now also with complete per-step metrics after the tracking server died mid-study. Everything
binds 127.0.0.1; servers are stopped by process group (tests/servers.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from lrstudy import names
from tests.conftest import smoke_study
from tests.servers import MlflowServer, postgres_cluster, why_no_postgres

ROOT = Path(__file__).resolve().parents[1]
LEASE_S = "4"

pytestmark = pytest.mark.skipif(why_no_postgres() is not None, reason=str(why_no_postgres()))


@pytest.fixture(scope="module")
def postgres():
    with postgres_cluster() as pg:
        yield pg


@pytest.fixture
def server(postgres, tmp_path: Path):
    """A fresh database and an `mlflow server` on it (one uvicorn worker: a 2-core machine)."""
    db = f"mlflow_{uuid.uuid4().hex[:8]}"
    srv = MlflowServer(postgres.create_database(db), tmp_path / "server", workers=1)
    srv.db = db
    try:
        yield srv.start()
    finally:
        srv.stop()


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "LRSTUDY_LEASE_SECONDS": LEASE_S, **extra}


def _run_cmd(study: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri", url]


class _Lines:
    """Reads a process's stderr on a thread, stamping each line with when it arrived."""

    def __init__(self, stream) -> None:
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for raw in stream:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "\n".join(line for _, line in self.lines)

    def first(self, needle: str) -> float | None:
        return next((t for t, line in self.lines if needle in line), None)


def _start_study(study: Path, url: str, tmp_path: Path, **env: str):
    proc = subprocess.Popen(
        [*_run_cmd(study, url), "--workers", "2", "--no-report"],
        env=_env(**env),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    return proc, _Lines(proc.stderr)


def _running_trials(server: MlflowServer, postgres) -> int:
    sql = (
        "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE r.status = 'RUNNING' AND r.lifecycle_stage = 'active' "
        f"AND t.key = '{names.TAG_KIND}' AND t.value = '{names.KIND_TRIAL}'"
    )
    try:
        return postgres.query(server.db, sql)[0][0]
    except Exception:  # noqa: BLE001 - tables not created yet
        return 0


def _wait_running(server, postgres, proc, lines: _Lines, n: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"study ended early ({proc.returncode}): {lines.text()}")
        if _running_trials(server, postgres) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{n} running trial(s) never seen: {lines.text()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)


def _assert_complete(url: str, study: Path) -> list:
    """Exactly one FINISHED run per key, none RUNNING, every finished run's `lr` history whole."""
    from mlflow.tracking import MlflowClient

    from lrstudy.plan import plan_trials
    from lrstudy.spec import load_spec

    spec = load_spec(study)
    client = MlflowClient(url)
    exp = client.get_experiment_by_name(spec.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    trials = [r for r in runs if r.data.tags.get(names.TAG_KIND) == names.KIND_TRIAL]
    finished = [r for r in trials if r.info.status == "FINISHED"]
    assert Counter(r.data.tags[names.TAG_TRIAL_KEY] for r in finished) == Counter(
        {t.key: 1 for t in plan_trials(spec)}
    )
    assert not [r for r in trials if r.info.status == "RUNNING"]
    for r in finished:
        steps = {m.step for m in client.get_metric_history(r.info.run_id, names.LR)}
        total = int(r.data.params["total_steps"])
        outcome = r.data.tags[names.TAG_OUTCOME]
        if outcome == names.OUTCOME_OK:
            assert steps == set(range(total)), (r.info.run_name, total, sorted(steps)[-5:])
        else:  # diverged: stopped early, but no gap before it stopped
            assert outcome == names.OUTCOME_DIVERGED
            assert steps and steps == set(range(max(steps) + 1)), r.info.run_name
    return trials


def test_study_on_a_tracking_server_backed_by_postgres(server, tmp_path: Path) -> None:
    study = smoke_study(tmp_path, "srv")
    done = subprocess.run(
        [*_run_cmd(study, server.url), "--workers", "2", "--no-report"],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        timeout=600,
    )
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "Traceback" not in err
    assert "srv: 12 trials; 0 already finished; ran: 4 diverged, 8 ok" in err
    _assert_complete(server.url, study)
    report = subprocess.run(
        [sys.executable, "-m", "lrstudy", "report", str(study)]
        + ["--tracking-uri", server.url, "--out", str(tmp_path / "reports")],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr.decode()
    assert (tmp_path / "reports" / "srv" / "index.html").stat().st_size > 10_000


def test_server_crash_mid_study_is_ridden_out(server, postgres, tmp_path: Path) -> None:
    study = smoke_study(tmp_path, "crash", epochs=40)
    proc, lines = _start_study(study, server.url, tmp_path)
    try:
        _wait_running(server, postgres, proc, lines, n=2)
        server.kill()
        killed_at = time.monotonic()
        time.sleep(10)
        restart_at = time.monotonic()
        server.start()
        proc.wait(timeout=600)
    finally:
        _stop(proc)
    err = lines.text()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    _assert_complete(server.url, study)
    # Said while the server was down, not only afterwards.
    seen = lines.first("tracking server unreachable")
    assert seen is not None and killed_at < seen < restart_at, err
    assert "tracking server reachable again" in err


def test_server_gone_past_patience_stops_then_resumes(server, postgres, tmp_path: Path) -> None:
    study = smoke_study(tmp_path, "gone", epochs=40)
    proc, lines = _start_study(study, server.url, tmp_path, LRSTUDY_TRACKING_PATIENCE="5")
    try:
        _wait_running(server, postgres, proc, lines, n=2)
        server.kill()
        proc.wait(timeout=300)
    finally:
        _stop(proc)
    err = lines.text()
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("lrstudy:")]
    assert len(errors) == 1 and "unreachable for" in errors[0] and "patience 5 s" in errors[0], err
    server.start()
    again = subprocess.run(
        [*_run_cmd(study, server.url), "--workers", "2", "--no-report"],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        timeout=600,
    )
    err = again.stderr.decode()
    assert again.returncode == 0, err
    assert "Traceback" not in err
    trials = _assert_complete(server.url, study)
    # What the first invocation left RUNNING was closed, not finished twice.
    assert [r for r in trials if r.info.status == "KILLED"], err
