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
    from lrstudy.cli_parser import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
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


def test_generated_data_sets_keep_their_class_indices_even_when_small() -> None:
    from lrstudy.train.data import load_dataset

    # 0-based by construction: a split that lacks a class is no labelling mistake.
    assert load_dataset("mnist1d", {"num_samples": 20}).num_classes == 10


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


# --- 1 & 2. schedule arguments, the schema and union errors ------------------------------------

README = ROOT / "README.md"


def test_readme_schedule_table_is_the_one_the_catalogue_generates() -> None:
    from lrstudy.schedules.catalog import (
        ARG_HELP,
        SCHEDULES,
        schedule_arg_names,
        schedules_markdown,
    )

    text = README.read_text()
    begin = text.index("<!-- schedules:begin")
    table = text[text.index("\n", begin) + 1 : text.index("<!-- schedules:end -->")].strip()
    assert table == schedules_markdown(), (
        "README's schedule table is stale; paste lrstudy.schedules.catalog.schedules_markdown()"
    )
    for name in SCHEDULES:  # every argument is described, and nothing else
        assert set(ARG_HELP.get(name, {})) == set(schedule_arg_names(name)), name
        assert f"| `{name}` |" in table


def test_schema_describes_each_schedule_with_its_own_arguments() -> None:
    import jsonschema
    import yaml

    from lrstudy.schedules.catalog import SCHEDULES, schedule_defaults
    from lrstudy.spec.study import StudySpec

    schema = StudySpec.model_json_schema()
    variants = schema["$defs"]["ScheduleSpec"]["oneOf"]
    assert schema["$defs"]["ScheduleSpec"]["discriminator"] == {"propertyName": "name"}
    assert [v["properties"]["name"]["const"] for v in variants] == list(SCHEDULES)
    for v in variants:
        name = v["properties"]["name"]["const"]
        assert v["additionalProperties"] is False
        assert set(v["properties"]) == {"name", "warmup", *schedule_defaults(name)}
        for arg, default in schedule_defaults(name).items():
            assert (
                v["properties"][arg]["default"] == default and v["properties"][arg]["description"]
            )
    by_name = {v["properties"]["name"]["const"]: v for v in variants}
    assert by_name["cyclic"]["properties"]["mode"]["enum"] == [
        "triangular",
        "triangular2",
        "exp_range",
    ]

    from lrstudy.spec.load import _Loader  # YAML 1.2 floats, as the study loader reads them

    study = yaml.load((ROOT / "studies" / "smoke.yaml").read_text(), Loader=_Loader)  # noqa: S506
    study["schedules"] = [{"name": "step", "every": 2, "gamma": 0.5, "warmup": 0.1}]
    jsonschema.validate(study, schema)  # what the runtime accepts, the schema accepts
    study["schedules"] = [{"name": "step", "step_size": 3}]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(study, schema)  # an editor flags the key the runtime refuses


def _spec_error(text: str) -> str:
    from lrstudy.errors import UserInputError
    from lrstudy.spec.load import parse_spec

    with pytest.raises(UserInputError) as err:
        parse_spec(text, source="x.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    return msg


SMOKE = (ROOT / "studies" / "smoke.yaml").read_text()


def test_an_unknown_schedule_argument_lists_all_allowed_and_counts_no_phantom_mistake() -> None:
    # The "(+1 more)" was schedules' own min_length failing after its one item failed.
    text = SMOKE.replace(
        "  - name: constant\n  - name: cosine\n    warmup: 2\n",
        "  - name: step\n    step_size: 3\n",
    )
    assert _spec_error(text) == (
        "x.yaml: schedules[0].step_size: schedule step does not take 'step_size'; "
        "allowed: warmup, every, gamma"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "warmup: 2",
            'warmup: "10%"',
            "schedules[1].warmup: '10%' is not allowed: a fraction of all steps, >= 0 and < 1, "
            "or a whole number of steps; write 0.1 for 10%",
        ),
        (
            "warmup: 2",
            "warmup: [1]",
            "schedules[1].warmup: [1] is not allowed: a fraction of all steps, >= 0 and < 1, "
            "or a whole number of steps",
        ),
        ("warmup: 2", "warmup: true", "schedules[1].warmup: True is not allowed: a fraction"),
        (
            "lr: 1e-3",
            "lr: 1e-3\n    layer_lr: half",
            "optimizers[1].layer_lr: 'half' is not allowed: a {decay: D} mapping (each earlier "
            "layer gets D x the next one's LR, D > 0) or a list of per-layer multipliers > 0",
        ),
        (
            "lr: 1e-3",
            "lr: 1e-3\n    layer_lr: [0.5, -1]",
            "optimizers[1].layer_lr: [0.5, -1] is not allowed: -1 is not a multiplier > 0; a "
            "{decay: D} mapping",
        ),
        (
            "lr: 1e-3",
            "lr: {low: 1e-3, hi: 1}",
            "optimizers[1].lr: {'low': 0.001, 'hi': 1} is not allowed: unknown key 'hi' in a "
            "range; allowed: low, high, num, scale",
        ),
        (
            "dataset: mnist1d",
            "dataset: 5",
            "task.dataset: 5 is not allowed: a string or a {class_path, init_args} mapping",
        ),
        (
            "  - name: constant\n",
            "  - constant\n",
            "schedules[0]: 'constant' is not allowed: a schedule is a mapping; write {name: constant}",
        ),
    ],
    ids=[
        "warmup-percent",
        "warmup-list",
        "warmup-bool",
        "layer_lr-word",
        "layer_lr-negative",
        "lr-range-key",
        "dataset-number",
        "schedule-bare-name",
    ],
)
def test_union_errors_name_the_accepted_forms(old: str, new: str, expected: str) -> None:
    assert old in SMOKE
    msg = _spec_error(SMOKE.replace(old, new, 1))
    assert msg.startswith(f"x.yaml: {expected}"), msg
    assert "Input should be" not in msg and "(+" not in msg, msg


# --- 6. the README's examples run as written -------------------------------------------------


def _readme_blocks() -> list[str]:
    """The ```python blocks right after a `<!-- runs-in-tests` marker."""
    text, blocks, at = README.read_text(), [], 0
    while (at := text.find("<!-- runs-in-tests", at)) >= 0:
        start = text.index("```python\n", at) + len("```python\n")
        blocks.append(text[start : text.index("```", start)])
        at = start
    return blocks


QUICK = """\
name: quickstart
task:
  dataset: moons
  model: mlp
  model_args: {hidden: [8]}
  data_args: {n_samples: 300}
train:
  epochs: 1
  batch_size: 50
optimizers:
  - name: sgd
    lr: [0.1, 0.3]
  - name: adam
    lr: [0.01, 0.1]
seeds: [0, 1]
report: {enabled: false}
"""


def test_readme_python_examples_run_as_written(tmp_path: Path) -> None:
    blocks = _readme_blocks()
    assert len(blocks) == 2, "the notebook and find_lr examples are marked runs-in-tests"
    assert 'groupby("lr")' not in README.read_text()  # an LR alone mixes optimizers
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "quickstart.yaml").write_text(QUICK)  # the README's path, small
    checks = (
        "\nassert len(df) == 8, df\n"
        "groups = df.groupby('config')\n"
        "assert (groups['optimizer'].nunique() == 1).all() and len(groups) == 4\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for i, block in enumerate(blocks):
        script = tmp_path / f"block{i}.py"
        script.write_text(block + (checks if "run_study" in block else ""))
        out = subprocess.run(
            [PY, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, f"README block {i}:\n{block}\n{out.stderr[-3000:]}"
