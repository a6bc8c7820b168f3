"""A study of a user's LightningModule through `--executor ray` (a real local Ray runtime): the
Ray workers find the user's classes (class paths resolve from the study file's folder, sent to
them as absolute paths) and each trial finishes once, with the module's own metrics.

Like tests/test_ray.py, Ray runs inside a loopback-only network + PID namespace of the test's own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.own_model_fixtures import module_study
from tests.test_ray import _assert_exactly_once, _env, needs_ray


@needs_ray
def test_module_study_on_ray_workers(tmp_path: Path) -> None:
    study = module_study(tmp_path / "user", "rayown", epochs=2, seeds="[0, 1]")
    db = tmp_path / "mlflow.db"
    cmd = ["unshare", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
    cmd += ["sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    cmd += [sys.executable, "-m", "lrstudy", "run", str(study), "--executor", "ray"]
    cmd += ["--workers", "2", "--tracking-uri", f"sqlite:///{db}", "--no-report"]
    ray_tmp = tempfile.mkdtemp(prefix="lrray-", dir="/tmp")  # short: Ray's socket paths
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    try:
        done = subprocess.run(cmd, env=_env(HOME=str(tmp_path), RAY_TMPDIR=ray_tmp), cwd=cwd,
                              capture_output=True, text=True, timeout=480)  # fmt: skip
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    trials = _assert_exactly_once(db, study)
    for r in trials:
        if r.info.status == "FINISHED":
            assert {"my_loss", "val_loss", "lr/head"} <= set(r.data.metrics)
