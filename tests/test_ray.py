"""`--executor ray` with a real Ray: a local runtime and a `ray start` cluster, Ctrl-C, bad input.

Ray binds the machine's interface address (and probes an outside address to find it) even when
told 127.0.0.1, so every scenario that starts Ray runs inside a fresh network namespace that has
only loopback, and a PID namespace, so that everything it started dies with it
(`unshare --net --pid --fork --mount-proc --kill-child`). The scenarios are this file's own
`__main__` (`python tests/test_ray.py SCENARIO ...`); each prints one JSON line, and the test
reads the tracking store back from outside: exactly one FINISHED run per trial key.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import smoke_study

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"
HAS_RAY = importlib.util.find_spec("ray") is not None
CAN_UNSHARE = os.geteuid() == 0 and bool(shutil.which("unshare")) and bool(shutil.which("ip"))
needs_ray = pytest.mark.skipif(
    not (HAS_RAY and CAN_UNSHARE),
    reason="needs ray (pip install 'lrstudy[ray]') and root for a loopback-only namespace",
)
KIND, TRIAL, KEY = "lrstudy.kind", "trial", "lrstudy.trial_key"  # lrstudy.names, kept import-free


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LRSTUDY_LEASE_SECONDS": "4", **extra}
    env.pop("RAY_ADDRESS", None)
    return env


def _inside(tmp_path: Path, *args: str, timeout: float = 480, **env: str) -> dict:
    """Run scenario `args` in a loopback-only network + PID namespace; its JSON result."""
    cmd = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
    cmd += ["sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    cmd += [sys.executable, str(Path(__file__).resolve()), *args]
    # A private HOME: Ray keeps its auth token in ~/.ray and turns token auth on when it exists.
    # A private (short: socket paths) RAY_TMPDIR for the session folders and logs, removed after.
    ray_tmp = tempfile.mkdtemp(prefix="lrray-", dir="/tmp")
    env = _env(HOME=str(tmp_path), RAY_TMPDIR=ray_tmp, **env)
    try:
        done = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, timeout=timeout, text=True
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _lrstudy(*args: str) -> list[str]:
    return [sys.executable, "-m", "lrstudy", *args]


def _assert_exactly_once(db: Path, study: Path) -> list:
    from mlflow.tracking import MlflowClient

    from lrstudy.plan import plan_trials
    from lrstudy.spec import load_spec

    spec = load_spec(study)
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(spec.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    trials = [r for r in runs if r.data.tags.get(KIND) == TRIAL]
    finished = Counter(r.data.tags[KEY] for r in trials if r.info.status == "FINISHED")
    assert finished == Counter({t.key: 1 for t in plan_trials(spec)})
    assert not [r for r in trials if r.info.status == "RUNNING"]
    return trials


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("lrstudy:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@needs_ray
def test_local_runtime_ctrl_c_closes_trials_then_resume_finishes_once(tmp_path: Path) -> None:
    study = smoke_study(tmp_path, "rayint", epochs=60, seeds="[0]")
    db = tmp_path / "mlflow.db"
    out = _inside(tmp_path, "interrupt-resume", str(study), str(db))
    first, second = out["first"], out["second"]
    assert first["rc"] == 130, first["err"]
    assert "Traceback" not in first["err"]
    assert "interrupted; run the same command again to resume" in first["err"]
    assert second["rc"] == 0, second["err"]
    assert "Traceback" not in second["err"]
    trials = _assert_exactly_once(db, study)
    killed = [r for r in trials if r.info.status == "KILLED"]
    assert killed and {r.data.tags["lrstudy.outcome"] for r in killed} == {"killed"}


@needs_ray
def test_ray_cluster_with_a_tracking_server(tmp_path: Path) -> None:
    study = smoke_study(tmp_path, "raycluster")
    db = tmp_path / "mlflow.db"
    out = _inside(tmp_path, "cluster", str(study), str(db))
    assert out["rc"] == 0, out["err"]
    assert "Traceback" not in out["err"]
    assert "raycluster: 12 trials; 0 already finished; ran: 4 diverged, 8 ok" in out["err"]
    trials = _assert_exactly_once(db, study)
    # The tasks ran in the cluster's worker processes, not in the driver (the parent run's pid).
    from mlflow.tracking import MlflowClient

    parent = MlflowClient(f"sqlite:///{db}").get_run(trials[0].data.tags["mlflow.parentRunId"])
    assert parent.data.tags["lrstudy.pid"] not in {r.data.tags["lrstudy.pid"] for r in trials}


@needs_ray
def test_ray_address_where_nothing_answers_is_one_line(tmp_path: Path) -> None:
    out = _inside(tmp_path, "bad-address", str(SMOKE), str(tmp_path / "mlflow.db"))
    assert out["closed"]["rc"] == 2, out["closed"]["err"]
    line = _one_error_line(out["closed"]["err"])
    assert "--ray-address 127.0.0.1:1: no Ray cluster answers there" in line
    assert out["listening"]["rc"] == 2, out["listening"]["err"]
    line = _one_error_line(out["listening"]["err"])
    assert "no Ray cluster answers there (something listens" in line
    assert out["listening"]["seconds"] < 60
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.skipif(not HAS_RAY, reason="needs ray (pip install 'lrstudy[ray]')")
@pytest.mark.parametrize("via", ["flag", "env"])
def test_sqlite_with_a_remote_cluster_is_refused(tmp_path: Path, via: str) -> None:
    # Refused before Ray is contacted (nothing need listen there), and nothing is written.
    db = tmp_path / "mlflow.db"
    args = ["run", str(SMOKE), "--executor", "ray", "--tracking-uri", f"sqlite:///{db}"]
    env = _env()
    if via == "flag":
        args += ["--ray-address", "127.0.0.1:6399"]
    else:
        env["RAY_ADDRESS"] = "127.0.0.1:6399"
    done = subprocess.run(_lrstudy(*args), env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stderr)
    flag = "--ray-address" if via == "flag" else "RAY_ADDRESS"
    assert f"{flag} 127.0.0.1:6399: tracking URI sqlite:///{db} is a file" in line
    assert "other machines cannot reach" in line
    assert not db.exists()


def test_missing_ray_is_one_line_and_lrstudy_never_imports_it(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    code = (
        "import sys\n"
        "import lrstudy, lrstudy.cli, lrstudy.execute.study, lrstudy.execute.worker\n"
        "assert 'ray' not in sys.modules, 'ray imported by lrstudy'\n"
        "sys.modules['ray'] = None  # what `import ray` meets where it is not installed\n"
        "from lrstudy.cli import main\n"
        f"sys.exit(main(['run', {str(SMOKE)!r}, '--executor', 'ray', "
        f"'--tracking-uri', 'sqlite:///{db}']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env(), cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    line = _one_error_line(done.stderr)
    assert "--executor ray needs the extra: pip install 'lrstudy[ray]'" in line
    assert not db.exists()


# ---- scenarios, run inside the namespace: `python tests/test_ray.py SCENARIO ARGS` ----


def _running_trials(db: Path) -> int:
    query = (
        "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE r.status = 'RUNNING' AND r.lifecycle_stage = 'active' "
        f"AND t.key = '{KIND}' AND t.value = '{TRIAL}'"
    )
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute(query).fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def _run(args: list[str], timeout: float = 300) -> dict:
    t0 = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    return {"rc": done.returncode, "err": done.stderr, "seconds": time.monotonic() - t0}


def _scenario_interrupt_resume(study: str, db: str) -> dict:
    """Ctrl-C (SIGINT to the driver's process group) while two Ray tasks train; then resume."""
    cmd = _lrstudy("run", study, "--executor", "ray", "--workers", "2")
    cmd += ["--tracking-uri", f"sqlite:///{db}", "--no-report"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while _running_trials(Path(db)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first = {"rc": proc.returncode, "err": err}
    return {"first": first, "second": _run(cmd)}


def _scenario_cluster(study: str, db: str) -> dict:
    """`ray start --head` + `mlflow server` (sqlite), the study through both, then stop both."""
    sys.path.insert(0, str(ROOT))
    from tests.servers import MlflowServer

    ray_bin = str(Path(sys.executable).with_name("ray"))
    # With a token in (this test's own) ~/.ray, `ray start` turns token authentication on, as
    # after any local ray.init; lrstudy must then join with that token.
    subprocess.run([ray_bin, "get-auth-token", "--generate"], capture_output=True, timeout=60)
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # Ray's socket paths must stay short
    head = [ray_bin, "start", "--head", "--port=6399", "--num-cpus=2", "--include-dashboard=false"]
    head += ["--disable-usage-stats", f"--temp-dir={temp}"]
    started = subprocess.run(head, capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        return {"rc": -1, "err": "ray start failed: " + started.stdout + started.stderr}
    server = MlflowServer(f"sqlite:///{db}", Path(db).parent / "server", workers=1)
    try:
        server.start()
        cmd = _lrstudy("run", study, "--executor", "ray", "--ray-address", "127.0.0.1:6399")
        cmd += ["--workers", "2", "--tracking-uri", server.url, "--no-report"]
        return _run(cmd)
    finally:
        server.stop()
        # Only this PID namespace's processes are visible here: this stops our cluster alone.
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=60)
        shutil.rmtree(temp, ignore_errors=True)


def _scenario_bad_address(study: str, db: str) -> dict:
    """Nothing on the port; then something that accepts connections but is not Ray."""
    base = _lrstudy("run", study, "--executor", "ray", "--tracking-uri", "http://127.0.0.1:9")
    closed = _run([*base, "--ray-address", "127.0.0.1:1"])
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        listening = _run([*base, "--ray-address", f"127.0.0.1:{port}"])
    return {"closed": closed, "listening": listening}


_SCENARIOS = {
    "interrupt-resume": _scenario_interrupt_resume,
    "cluster": _scenario_cluster,
    "bad-address": _scenario_bad_address,
}

if __name__ == "__main__":
    result = _SCENARIOS[sys.argv[1]](*sys.argv[2:])
    print(json.dumps(result))
