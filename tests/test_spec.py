"""Spec stage: the quickstart is accepted as written; every mistake gets its own clear line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lrstudy.errors import UserInputError
from lrstudy.spec import LRRange, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[1]
BASE = (ROOT / "studies" / "smoke.yaml").read_text()


def test_quickstart_is_accepted_exactly_as_written() -> None:
    spec = load_spec(ROOT / "studies" / "quickstart.yaml")
    sgd, adam = spec.optimizers
    assert sgd.name == "sgd" and sgd.hparams == {"momentum": 0.9}
    assert isinstance(sgd.lr, LRRange) and sgd.lr.num == 8 and sgd.lr.scale == "log"
    assert sgd.lr.grid()[0] == pytest.approx(1e-3) and sgd.lr.grid()[-1] == pytest.approx(3.0)
    assert adam.lr == (1e-4, 1e-3, 1e-2, 1e-1)  # YAML 1.1 would read "1e-4" as a string
    assert [s.label for s in spec.schedules] == ["constant", "cosine+warmup"]
    assert spec.schedules[1].warmup == 0.05
    assert spec.seeds == (0, 1) and spec.experiment == "quickstart"
    assert spec.train.target and spec.train.target.resolved_mode == "max"


def test_scalar_exponent_lr_parses_as_a_number() -> None:
    spec = parse_spec(BASE.replace("lr: 1e-3", "lr: 3e-4"))
    assert spec.optimizers[1].lr == pytest.approx(3e-4)


def test_spec_hash_ignores_where_results_go() -> None:
    a = parse_spec(BASE)
    b = parse_spec(BASE.replace("experiment: smoke", "experiment: elsewhere"))
    c = parse_spec(BASE.replace("epochs: 2", "epochs: 3"))
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()


ERRORS = {
    "unknown top-level key": (BASE + "\nfoo: 1\n", r"foo: unknown key; allowed: name, .*tracking"),
    "wrong type": (
        BASE.replace("epochs: 2", "epochs: ten"),
        r"train\.epochs: 'ten' is not allowed",
    ),
    "lr <= 0": (
        BASE.replace("lr: 1e-3", "lr: -1"),
        r"optimizers\[1\]\.lr: -1 is not allowed: .*> 0",
    ),
    "lr 0 in a list": (
        BASE.replace("[0.05, 50.0]", "[0.05, 0]"),
        r"optimizers\[0\]\.lr: 0 is not allowed",
    ),
    "empty lr grid": (BASE.replace("[0.05, 50.0]", "[]"), r"optimizers\[0\]\.lr: .*empty list"),
    "unknown optimizer": (
        BASE.replace("name: adam", "name: adamax"),
        r"optimizers\[1\]\.name: unknown optimizer 'adamax'; allowed: sgd, momentum, nesterov, adagrad",
    ),
    "unknown schedule": (
        BASE.replace("name: constant", "name: cosin"),
        r"schedules\[0\]\.name: unknown schedule 'cosin'; allowed: constant, step, .*plateau",
    ),
    "hyperparameter the optimizer does not take": (
        BASE.replace("lr: 1e-3", "lr: 1e-3\n    momentum: 0.9"),
        r"optimizers\[1\]\.momentum: adam does not take 'momentum'; allowed: lr, layer_lr, betas, eps",
    ),
    "wrong hyperparameter shape": (
        BASE.replace("lr: 1e-3", "lr: 1e-3\n    betas: [0.9]"),
        r"optimizers\[1\]\.betas: \[0\.9\] is not allowed: adam\.betas must be a list of 2 numbers",
    ),
    "nesterov without momentum": (
        BASE.replace("name: adam", "name: nesterov\n    momentum: 0"),
        r"optimizers\[1\]\.momentum: 0 is not allowed: nesterov needs momentum > 0",
    ),
    "unknown schedule argument": (
        BASE.replace("name: constant", "name: step\n    gama: 0.1"),
        r"schedules\[0\]\.gama: schedule step does not take 'gama'; allowed: warmup, every, gamma",
    ),
    "bad schedule value": (
        BASE.replace("name: constant", "name: step\n    gamma: -1"),
        r"schedules\[0\]\.gamma: -1 is not allowed",
    ),
    "bad warmup": (
        BASE.replace("warmup: 2", "warmup: 1.5"),
        r"schedules\[1\]\.warmup: warmup 1\.5 is not allowed",
    ),
    "unreadable YAML": (
        BASE.replace("epochs: 2", "epochs: [2"),
        r"invalid YAML at line 11, column \d+",
    ),
    "duplicate key": (
        BASE.replace("epochs: 2", "epochs: 2\n  epochs: 3"),
        r"line 11.*duplicate key 'epochs'",
    ),
    "missing section": (BASE.replace("task:", "tsk:"), r"task: required field is missing"),
    "range without num in a grid": (
        BASE.replace("lr: 1e-3", "lr: {low: 1e-4, high: 1}"),
        r"optimizers\[1\]\.lr: a range needs num: N for a grid search",
    ),
    "range upside down": (
        BASE.replace("lr: 1e-3", "lr: {low: 1e-1, high: 1e-3, num: 3}"),
        r"optimizers\[1\]\.lr: high \(0\.001\) must be >= low \(0\.1\)",
    ),
    "random search without trials": (
        BASE + "\nsearch: {method: random}\n",
        r"search: random search needs trials: N",
    ),
    "empty sweep axis": (
        BASE + "\nsweep: {batch_size: []}\n",
        r"sweep\.batch_size: .*non-empty list",
    ),
    "sweep value out of range": (
        BASE + "\nsweep: {train_fraction: [0.5, 2]}\n",
        r"sweep\.train_fraction: 2 is not allowed: values must be > 0 and <= 1",
    ),
    "axis set twice": (
        BASE + "\nsweep: {momentum: [0.5, 0.9]}\n",
        r"optimizers\[0\]\.momentum: also swept by sweep\.momentum",
    ),
    "unknown target metric": (
        BASE.replace("metric: val/acc", "metric: val/accuracy"),
        r"train\.target\.metric: 'val/accuracy' is not allowed: input should be 'val/acc'",
    ),
    "negative seed": (BASE.replace("seeds: [0, 1]", "seeds: [0, -1]"), r"seeds: -1 is not allowed"),
    "unknown accelerator": (
        BASE.replace("batch_size: 50", "batch_size: 50\n  accelerator: tpu"),
        r"train\.accelerator: 'tpu' is not allowed",
    ),
    "not a mapping": ("- a\n- b\n", r"a study file must be a mapping"),
    "accuracy target in percent": (
        BASE.replace("value: 0.2", "value: 95"),
        r"train\.target\.value: 95 is not allowed: val/acc is an accuracy, a fraction in \[0, 1\] "
        r"\(write 0\.95 for 95%\)$",
    ),
    "negative accuracy target": (
        BASE.replace("metric: val/acc, value: 0.2", "metric: train/acc, value: -0.5"),
        r"train\.target\.value: -0\.5 is not allowed: train/acc is an accuracy, a fraction in \[0, 1\]",
    ),
    "target that is not a number": (
        BASE.replace("value: 0.2", "value: .nan"),
        r"train\.target\.value: nan is not allowed: .*finite number$",
    ),
    # pydantic reports a union's members separately: one mistake, no "(+1 more)", no member label
    "warmup that is not a number": (
        BASE.replace("warmup: 2", "warmup: two"),
        r"schedules\[1\]\.warmup: 'two' is not allowed: [^()]*$",
    ),
    "layer_lr decay out of range": (
        BASE.replace("lr: 1e-3", "lr: 1e-3\n    layer_lr: {decay: -1}"),
        r"optimizers\[1\]\.layer_lr\.decay: -1 is not allowed: Input should be greater than 0$",
    ),
    "unknown key in a union member": (
        BASE.replace("lr: 1e-3", "lr: 1e-3\n    layer_lr: {decay: 0.5, every: 2}"),
        r"optimizers\[1\]\.layer_lr\.every: unknown key; allowed: decay$",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_each_mistake_gets_one_clear_line(case: str) -> None:
    text, pattern = ERRORS[case]
    with pytest.raises(UserInputError) as err:
        parse_spec(text, source="studies/x.yaml")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("studies/x.yaml: ")
    assert re.search(pattern, msg), msg


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"nope\.yaml: cannot read study file"):
        load_spec(tmp_path / "nope.yaml")


def test_more_counts_only_other_mistakes() -> None:
    two = BASE.replace("epochs: 2", "epochs: ten").replace("batch_size: 50", "batch_size: x")
    with pytest.raises(
        UserInputError, match=r"train\.epochs: 'ten' is not allowed: .* \(\+1 more\)$"
    ):
        parse_spec(two, source="studies/x.yaml")
    # The unknown key and the one it was meant to be are two fields, so two mistakes.
    with pytest.raises(UserInputError, match=r"task: required field is missing \(\+1 more\)$"):
        parse_spec(BASE.replace("task:", "tsk:"), source="studies/x.yaml")


def test_targets_that_are_not_accuracies_may_exceed_one() -> None:
    spec = parse_spec(BASE.replace("metric: val/acc, value: 0.2", "metric: val/loss, value: 2.5"))
    assert spec.train.target and spec.train.target.resolved_mode == "min"
    assert parse_spec(BASE.replace("value: 0.2", "value: 1")).train.target.value == 1.0


def test_target_metrics_are_the_names_trials_log() -> None:
    from lrstudy import names
    from lrstudy.spec.study import StudySpec

    schema = StudySpec.model_json_schema()["$defs"]["Target"]["properties"]["metric"]
    assert schema["enum"] == [
        names.VAL_ACC,
        names.VAL_LOSS,
        names.TRAIN_ACC,
        names.TRAIN_LOSS_EPOCH,
    ]


def test_spec_plan_and_keys_do_not_import_torch() -> None:
    code = (
        "import sys; import lrstudy.spec, lrstudy.plan, lrstudy.keys; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
