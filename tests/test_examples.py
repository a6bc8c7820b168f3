"""The copyable example of the README's "Your own model in a study" runs as written, from the
repository root, with two workers, and writes its report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lrstudy import names

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own_model"


@pytest.mark.parametrize(
    ("study", "engine"),
    [("study.yaml", "trial"), ("plain_module.yaml", "population")],
    ids=["lightning-module", "plain-module"],
)
def test_own_model_example_runs_as_written(tmp_path: Path, study: str, engine: str) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [sys.executable, "-m", "lrstudy", "run", str(EXAMPLE / study), "--workers", "2",
           "--tracking-uri", uri]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report = tmp_path / proc.stdout.strip().splitlines()[-1].removeprefix("report: ")
    assert report.is_file() and "Best configuration" in report.read_text()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(_name(EXAMPLE / study))
    runs = client.search_runs([exp.experiment_id], max_results=100)
    trials = [r for r in runs if r.data.tags.get(names.TAG_KIND) == names.KIND_TRIAL]
    assert trials and {r.data.tags[names.TAG_OUTCOME] for r in trials} <= {"ok", "diverged"}
    assert {r.data.tags[names.TAG_ENGINE] for r in trials} == {engine}


def _name(path: Path) -> str:
    from lrstudy.spec import load_spec

    return load_spec(path).experiment
