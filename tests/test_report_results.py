"""`load_results`: the report's per-trial table for notebooks, on a store written by a real
`python -m lrstudy run` (and on a synthetic one for plugin experiments)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lrstudy.errors import UserInputError
from lrstudy.report.best import BestConfig, best_config
from lrstudy.report.diagnose import VERDICTS
from lrstudy.report.results import RESULT_COLUMNS, load_results
from tests.report_fixtures import SyntheticStudy, write_study

ROOT = Path(__file__).resolve().parents[1]
# The smoke study cut down to 4 trials: a good LR and a diverging one, two seeds each.
TINY = """\
name: tiny
task:
  dataset: mnist1d
  model: mlp
  model_args: {hidden: [32]}
  data_args: {num_samples: 600}
train:
  epochs: 2
  batch_size: 50
optimizers:
  - name: sgd
    lr: [0.05, 50.0]
    momentum: 0.9
schedules:
  - name: constant
seeds: [0, 1]
tracking:
  experiment: tiny-exp
"""


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("tiny")
    (d / "tiny.yaml").write_text(TINY, encoding="utf-8")
    uri = f"sqlite:///{d}/mlflow.db"
    cmd = [sys.executable, "-m", "lrstudy", "run", str(d / "tiny.yaml"), "--tracking-uri", uri,
           "--no-report", "--workers", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return uri


def test_one_row_per_trial_with_keys_params_outcome_diagnosis_and_finals(tiny_store):
    df = load_results("tiny", tracking_uri=tiny_store)
    assert isinstance(df, pd.DataFrame) and len(df) == 4
    assert list(df.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert df["trial_key"].is_unique and df["run_id"].is_unique
    assert df.groupby("config_key")["seed"].apply(sorted).tolist() == [[0, 1], [0, 1]]
    assert set(df["trial"]) == {f"sgd lr={lr} constant seed={s}" for lr in ("0.05", "50") for s in (0, 1)}  # fmt: skip
    assert set(df["diagnosis"]) <= set(VERDICTS)
    by_lr = df.set_index(["lr", "seed"])
    assert (by_lr.loc[50.0, "outcome"] == "diverged").all() and by_lr.loc[50.0, "diverged"].all()
    assert (by_lr.loc[50.0, "diagnosis"] == "diverged").all()
    assert (by_lr.loc[0.05, "outcome"] == "ok").all()
    assert by_lr.loc[0.05, "final_val_acc"].between(0, 1).all()
    assert by_lr.loc[0.05, "diagnosis_reason"].str.startswith("best LR of its family").all()
    # every param as logged, as text
    assert set(df["params.optimizer"]) == {"sgd"} and set(df["params.epochs"]) == {"2"}
    assert df["lr"].dtype == float and pd.api.types.is_numeric_dtype(df["seed"])


def test_the_study_name_and_the_experiment_name_both_work(tiny_store):
    by_study = load_results("tiny", tracking_uri=tiny_store)
    by_experiment = load_results("tiny-exp", tracking_uri=tiny_store)
    pd.testing.assert_frame_equal(by_study, by_experiment)
    with pytest.raises(UserInputError, match="no study named 'nope'"):
        load_results("nope", tracking_uri=tiny_store)


def test_best_config_of_the_results_is_the_clean_lr(tiny_store):
    df = load_results("tiny", tracking_uri=tiny_store)
    best = best_config(df)
    assert isinstance(best, BestConfig) and best.n == 2
    assert best.name == "sgd · lr=0.05" or best.name.endswith("lr=0.05")
    assert best.config_key == df.loc[df["lr"] == 0.05, "config_key"].iloc[0]
    assert best.mean == pytest.approx(df.loc[df["lr"] == 0.05, "final_val_acc"].mean())


def test_load_results_never_imports_torch(tiny_store):
    code = (
        "import sys\n"
        "from lrstudy.report.results import load_results\n"
        f"df = load_results('tiny', tracking_uri={tiny_store!r})\n"
        "assert len(df) == 4\n"
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=300)


def test_a_synthetic_study_loads_with_its_noise_accuracies(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    spec = SyntheticStudy(study="syn", experiment="syn-exp", optimizers=("adam",),
                          lrs={"adam": (1e-3, 3e-3)}, epochs=2, steps_per_epoch=10,
                          noise_sigmas=(0.1,))  # fmt: skip
    written = write_study(uri, spec, tmp_path / "artifacts")
    df = load_results("syn", tracking_uri=uri)
    assert sorted(df["run_id"]) == sorted(written.trial_run_ids)  # the killed attempt left out
    assert df["noise:0.1"].to_numpy() == pytest.approx(df["final_val_acc"].to_numpy() - 0.08)
