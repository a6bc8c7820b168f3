"""What a newcomer trips on (issue 17): undiscoverable schedule arguments, misleading union errors,
labels that are not 0-based, find_lr's result in a notebook, library noise, README examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

TINY = """\
name: {name}
task:
  dataset: {dataset}
  model: mlp
  model_args: {{hidden: [8]}}
train:
  epochs: 1
  batch_size: 32
optimizers:
  - name: sgd
    lr: 0.1
seeds: [0]
tracking:
  experiment: {name}
"""


def _cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [PY, "-m", "lrstudy", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- 4. find_lr from Python --------------------------------------------------------------------


def _linear_task():
    import torch

    torch.manual_seed(0)
    x = torch.randn(512, 10)
    y = (x[:, 0] > 0).long()
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 512, 64)]

    def ce(module, batch):
        return torch.nn.functional.cross_entropy(module(batch[0]), batch[1])

    return torch.nn.Linear(10, 2), batches, ce


def test_find_lr_result_has_a_short_repr_naming_the_lr_and_the_rule() -> None:
    from lrstudy import find_lr

    model, batches, ce = _linear_task()
    result = find_lr(model, batches, "sgd", steps=120, loss_fn=ce)
    text = repr(result)
    assert len(text) < 300, text
    assert text.startswith("RangeTestResult(recommended_lr=")
    assert f"rule={result.recommended!r}" in text
    assert f"{result.recommended_lr:.4g}" in text
    assert result.warnings == ()
    assert "Warning" not in result.explanation


def test_find_lr_with_too_few_steps_recommends_with_a_warning_saying_why() -> None:
    from lrstudy import find_lr
    from lrstudy.rangetest import rules

    model, batches, ce = _linear_task()
    result = find_lr(model, batches, "sgd", steps=20, loss_fn=ce)
    assert result.recommended_lr is not None  # still recommends...
    (warning,) = result.warnings  # ...but says why not to trust it
    assert "only 20 steps" in warning and "100" in warning and "smoothing 0.98" in warning
    assert f"Warning: {warning}" in result.explanation
    assert "warnings=1" in repr(result)
    # The threshold follows the smoothing: two EMA memories of steps.
    assert rules.trust_warnings(steps=100, end=100, smoothing=0.98, recommended="x") == ()
    assert rules.trust_warnings(steps=99, end=99, smoothing=0.98, recommended="x")
    assert rules.trust_warnings(steps=20, end=20, smoothing=0.0, recommended="x") == ()
    stopped = rules.trust_warnings(steps=400, end=60, smoothing=0.98, recommended="x")
    assert "stopped at step 60 of 400" in stopped[0] and "--min" in stopped[0]


def test_every_find_lr_option_has_help() -> None:
    from lrstudy.cli import _parser

    sub = next(a for a in _parser()._actions if a.dest == "command")
    find_lr = sub.choices["find-lr"]
    for action in find_lr._actions:
        assert action.help, f"find-lr {action.option_strings or action.dest} has no help"


def test_find_lr_cli_prints_the_warning_for_too_few_steps(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(TINY.format(name="fewsteps", dataset="moons"))
    out = _cli(["find-lr", "t.yaml", "--steps", "20"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Warning: the test ran only 20 steps" in out.stdout, out.stdout


# --- 5. noise ----------------------------------------------------------------------------------


def test_pyproject_license_is_an_spdx_string_setuptools_does_not_warn_about(tmp_path: Path) -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    # What `pip install -e .` runs: setuptools reading pyproject.toml, warnings shown.
    code = (
        "import warnings; warnings.simplefilter('always');"
        "from setuptools.config.pyprojecttoml import apply_configuration;"
        "from setuptools.dist import Distribution;"
        f"apply_configuration(Distribution(), {str(ROOT / 'pyproject.toml')!r})"
    )
    out = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "license" not in out.stderr.lower(), out.stderr


def test_run_study_from_python_prints_no_pytree_deprecation(tmp_path: Path) -> None:
    # The notebook API never calls quiet_libraries(): the filter must come with training itself.
    (tmp_path / "t.yaml").write_text(TINY.format(name="quietrun", dataset="moons"))
    code = "import lrstudy; lrstudy.run_study('t.yaml', report=False, workers=1)"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    env["PYTHONWARNINGS"] = "default"  # show every warning nobody filtered on purpose
    out = subprocess.run(
        [PY, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "[1/1]" in out.stderr  # the progress lines are there...
    assert "treespec" not in out.stderr, out.stderr  # ...without Lightning's warning among them
