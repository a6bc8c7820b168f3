"""The notebook API: lrstudy.run_study / load_results / best_config, in-process, real store."""

from __future__ import annotations

from pathlib import Path

import pytest

import lrstudy
from lrstudy.errors import UserInputError

ROOT = Path(__file__).resolve().parents[1]


def test_run_study_returns_the_summary_and_load_results_the_trials(tmp_path: Path) -> None:
    study = tmp_path / "api.yaml"
    smoke = (ROOT / "studies" / "smoke.yaml").read_text()
    study.write_text(
        smoke.replace("name: smoke", "name: api").replace("experiment: smoke", "experiment: api")
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    summary = lrstudy.run_study(study, workers=1, tracking_uri=uri, report_dir=tmp_path)
    assert summary.outcomes == {"ok": 8, "diverged": 4}
    assert summary.report_path == tmp_path / "api" / "index.html" and summary.report_path.exists()
    df = lrstudy.load_results("api", tracking_uri=uri)
    assert len(df) == 12 and set(df["outcome"]) == {"ok", "diverged"}
    best = lrstudy.best_config(df)
    assert best is not None and best.config_key == summary.best.config_key and best.n == 2
    again = lrstudy.run_study(study, workers=1, tracking_uri=uri, report=False)
    # nothing left to run: the outcomes are those of the finished trials (issue 17 item 9)
    assert again.skipped == 12 and again.outcomes == {"ok": 8, "diverged": 4}


def test_run_study_refuses_bad_arguments_before_writing(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="--workers: 0 is not allowed"):
        lrstudy.run_study(
            ROOT / "studies" / "smoke.yaml", workers=0, tracking_uri=f"sqlite:///{tmp_path}/x.db"
        )
    assert not (tmp_path / "x.db").exists()
