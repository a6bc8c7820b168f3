"""What a newcomer trips on (issue 17): undiscoverable schedule arguments, misleading union errors,
labels that are not 0-based, find_lr's result in a notebook, library noise, README examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


# --- 3. labels that are not 0-based --------------------------------------------------------------


def _npz(path: Path, y_train, y_test) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    np.savez(
        path,
        x_train=rng.normal(size=(len(y_train), 4)),
        y_train=y_train,
        x_test=rng.normal(size=(len(y_test), 4)),
        y_test=y_test,
    )
    return path


def test_labels_that_are_not_0_based_are_an_error_naming_them(tmp_path: Path) -> None:
    import numpy as np

    from lrstudy.errors import UserInputError
    from lrstudy.train.data import load_dataset

    one_based = _npz(tmp_path / "a.npz", np.arange(30) % 3 + 1, np.arange(9) % 3 + 1)
    with pytest.raises(UserInputError) as err:
        load_dataset(f"npz:{one_based}")
    assert str(err.value) == (
        f"{one_based}: y_train: labels must be 0..C-1 with every class present; found 1, 2, 3 "
        "(3 classes; 0 absent); remap them or set data_args: {remap_labels: true}"
    )
    gap = _npz(tmp_path / "b.npz", np.arange(30) % 3 * 2, np.arange(9) % 3 * 2)  # 0, 2, 4
    with pytest.raises(UserInputError, match=r"found 0, 2, 4 \(3 classes; 1, 3 absent\)"):
        load_dataset(f"npz:{gap}")
    test_only = _npz(tmp_path / "c.npz", np.arange(30) % 3, np.arange(9) % 4)
    with pytest.raises(
        UserInputError, match=r"y_test: label 3 is not a class of y_train \(0\.\.2\)"
    ):
        load_dataset(f"npz:{test_only}")


def test_remap_labels_is_an_explicit_opt_in_with_a_note(tmp_path: Path, capsys) -> None:
    import numpy as np

    from lrstudy.train.data import load_dataset

    path = _npz(tmp_path / "a.npz", np.arange(30) % 3 + 1, np.arange(9) % 3 + 1)
    ds = load_dataset(f"npz:{path}", {"remap_labels": True})
    assert ds.num_classes == 3 and ds.y_train[:3].tolist() == [0, 1, 2]
    assert f"note: {path}: labels 1, 2, 3 remapped to 0..2" in capsys.readouterr().err
    zero_based = _npz(tmp_path / "z.npz", np.arange(30) % 3, np.arange(9) % 3)
    assert load_dataset(f"npz:{zero_based}", {"remap_labels": True}).num_classes == 3
    assert capsys.readouterr().err == ""  # nothing to remap, nothing said


def test_idx_labels_that_are_not_0_based_are_an_error(tmp_path: Path) -> None:
    import numpy as np

    from lrstudy.errors import UserInputError
    from lrstudy.train.data import load_dataset

    def write_idx(path: Path, array: np.ndarray) -> None:
        magic = 0x0800 | array.ndim
        dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
        path.write_bytes(magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes())

    d = tmp_path / "idx"
    d.mkdir()
    write_idx(d / "train-images-idx3-ubyte", np.zeros((20, 3, 3)))
    write_idx(d / "train-labels-idx1-ubyte", np.arange(20) % 10 + 1)  # 1..10
    write_idx(d / "t10k-images-idx3-ubyte", np.zeros((10, 3, 3)))
    write_idx(d / "t10k-labels-idx1-ubyte", np.arange(10) % 10 + 1)
    with pytest.raises(
        UserInputError, match=r"found 1, 2, 3, 4, 5, 6, 7, 8 \(\+2 more\) \(10 classes; 0 absent\)"
    ):
        load_dataset(f"idx:{d}")
    assert load_dataset(f"idx:{d}", {"remap_labels": True}).num_classes == 10


def test_run_on_1_based_labels_exits_2_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    import numpy as np

    _npz(tmp_path / "data.npz", np.arange(60) % 3 + 1, np.arange(12) % 3 + 1)
    study = TINY.format(name="onebased", dataset="npz:data.npz")
    (tmp_path / "t.yaml").write_text(study)
    out = _cli(["run", "t.yaml", "--no-report"], tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "data.npz: y_train: labels must be 0..C-1" in lines[0]
    assert "found 1, 2, 3 (3 classes; 0 absent)" in lines[0]
    assert "remap_labels: true" in lines[0]
    _assert_no_runs(tmp_path)
    # The opt-in trains, after one note.
    (tmp_path / "t.yaml").write_text(
        study.replace("model: mlp", "model: mlp\n  data_args: {remap_labels: true}")
    )
    out = _cli(["run", "t.yaml", "--no-report"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("labels 1, 2, 3 remapped to 0..2") == 1, out.stderr


def _assert_no_runs(where: Path) -> None:
    db = where / "mlflow.db"
    if not db.exists():
        return
    import sqlite3

    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        runs = con.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0
    assert runs == 0
