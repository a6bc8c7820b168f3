"""Your own model in a study: a LightningModule + DataModule, or a plain nn.Module, that the tests
define outside lrstudy/ (tests/own_model_fixtures.py writes them into the test's folder).

Real processes, a real sqlite store: two workers and a kill -9 resume, the module's own metrics,
the spec's optimizer instead of the module's, populations for a plain nn.Module (and the
fall-back with its reason), find-lr per named group, the Python API with classes, bad input.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lrstudy import names
from lrstudy.cli import main
from lrstudy.errors import UserInputError
from lrstudy.plan import plan_trials
from lrstudy.spec import load_spec
from tests.conftest import wait_until_gone
from tests.own_model_fixtures import OWN_LR, module_study, write_user_package
from tests.store_runs import kind_runs as _runs
from tests.test_execution import _wait_running

ROOT = Path(__file__).resolve().parents[1]


def _first(uri: str, run_id: str, key: str) -> float:
    history = MlflowClient(uri).get_metric_history(run_id, key)
    return min(history, key=lambda m: m.step).value


def _cmd(study: Path, uri: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lrstudy", "run", str(study), "--tracking-uri", uri,
            "--no-report", *extra]  # fmt: skip


def test_lightning_module_study_two_workers_kill9_then_resume(tmp_path: Path) -> None:
    # Trials of a few seconds each, so both workers are mid-trial when everything is killed.
    study = module_study(tmp_path / "user", "killed", epochs=150, n=256)
    elsewhere = tmp_path / "cwd"  # class paths resolve from the study file's folder
    elsewhere.mkdir()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        _cmd(study, uri, "--workers", "2"), env=env, cwd=elsewhere, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_running(tmp_path / "mlflow.db", [proc], 2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the study process and both workers, at once
        proc.communicate(timeout=60)
    assert wait_until_gone(str(tmp_path)) == []
    assert [r for r in _runs(uri, "killed") if r.info.status == "RUNNING"]

    again = subprocess.run(_cmd(study, uri, "--workers", "2"), env=env, cwd=elsewhere,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert (
        "LitNet: its own configure_optimizers is replaced by the study's optimizer" in again.stderr
    )
    runs = _runs(uri, "killed")
    planned = plan_trials(load_spec(study))
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert Counter(r.data.tags[names.TAG_TRIAL_KEY] for r in finished) == Counter(
        {t.key: 1 for t in planned}
    )
    assert not [r for r in runs if r.info.status == "RUNNING"]
    lr_of = {t.key: t.lr for t in planned}
    for r in finished:
        metrics = set(r.data.metrics)
        # the module's own metrics, under its own names; lrstudy's per-group LR and loss
        assert {"my_loss", "val_loss", "val_acc", "lr/body", "lr/head", "train/loss"} <= metrics
        assert r.data.params["init.hidden"] == "16"
        assert r.data.tags[names.TAG_METRIC] == "val_loss"
        assert r.data.tags[names.TAG_OPTIMIZER_REPLACED].startswith("LitNet: its own")
        assert r.data.tags[names.TAG_CODE_HASH]
        spec_lr = lr_of[r.data.tags[names.TAG_TRIAL_KEY]]
        assert _first(uri, r.info.run_id, "lr/head") == pytest.approx(spec_lr)
        assert _first(uri, r.info.run_id, "lr/head") != pytest.approx(OWN_LR)


def test_a_module_that_raises_fails_its_trial_not_the_study(tmp_path: Path) -> None:
    study = module_study(tmp_path, "raises", epochs=1, module_args=", fail_seed: 1")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code = main(["run", str(study), "--tracking-uri", uri, "--no-report", "--workers", "1"])
    assert code == 1  # some trials failed
    runs = _runs(uri, "raises")
    by_seed = {}
    for r in runs:
        by_seed.setdefault(r.data.params["seed"], set()).add(r.data.tags[names.TAG_OUTCOME])
    assert by_seed == {"0": {names.OUTCOME_OK}, "1": {names.OUTCOME_FAILED}}
    failed = next(r for r in runs if r.data.params["seed"] == "1")
    client = MlflowClient(uri)
    text = Path(
        client.download_artifacts(failed.info.run_id, "error.txt", str(tmp_path))
    ).read_text()
    assert "boom in training_step" in text and "Traceback" in text


def test_manual_optimization_gets_the_study_schedule(tmp_path: Path) -> None:
    from lrstudy.schedules.catalog import build_schedule

    write_user_package(tmp_path)
    values = {}
    for steps_it in ("false", "true"):  # the module steps the scheduler itself, or not
        name = f"manual_{steps_it}"
        study = tmp_path / f"{name}.yaml"
        study.write_text(
            f"name: {name}\ntask:\n  module: {{class_path: userpkg.lit.ManualNet, "
            f"init_args: {{step_scheduler: {steps_it}}}}}\n"
            "  datamodule: {class_path: userpkg.data.BlobData, init_args: {n: 128}}\n"
            "train: {epochs: 2, batch_size: 32}\n"
            "optimizers: [{name: sgd, lr: 0.1}]\nschedules: [{name: cosine}]\n"
        )
        uri = f"sqlite:///{tmp_path}/m.db"
        assert main(["run", str(study), "--tracking-uri", uri, "--no-report"]) == 0
        (run,) = _runs(uri, name)
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "lr/head")
        values[steps_it] = [m.value for m in sorted(history, key=lambda m: m.step)]
    total = 8  # 128 samples / 32 per batch x 2 epochs
    schedule = build_schedule("cosine", {}, total_steps=total, steps_per_epoch=4, warmup_steps=0)
    expected = [0.1 * schedule(k) for k in range(total)]
    assert values["false"] == pytest.approx(expected)
    assert values["true"] == pytest.approx(expected)  # never stepped twice


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("userpkg.lit.LitNet", "userpkg.nope.LitNet"),
         "task.module.class_path: cannot import 'userpkg.nope.LitNet': no module named "
         "'userpkg.nope' (looked in "),
        (("userpkg.lit.LitNet", "userpkg.lit.NotAModule"),
         "task.module: userpkg.lit.NotAModule is not a LightningModule"),
        (("{hidden: 16}", "{hiden: 16}"),
         "task.module.init_args: 'hiden' is not allowed: LitNet takes hidden, fail_seed"),
        (("userpkg.data.BlobData", "userpkg.data.FixedBatchData"),
         "train.batch_size: not allowed: FixedBatchData has no batch_size init arg"),
        (("userpkg.lit.LitNet, init_args: {hidden: 16}", "userpkg.lit.TwoOptimizers"),
         "TwoOptimizers uses manual optimization with 2 optimizers"),
        (("  module: {class_path", "  model: {class_path"),
         "task.datamodule: needs task.module"),
        (("metric:", "param_groups: {body: [body.], head: [nothing.]}\n  metric:"),
         "task.param_groups: param group 'head': no trainable parameter name starts with"),
    ],
    ids=["import", "kind", "init-arg", "batch-size", "two-optimizers", "module-as-model",
         "param-groups"],
)  # fmt: skip
def test_bad_user_classes_are_one_line_and_write_nothing(
    tmp_path: Path, capsys, change: tuple[str, str], message: str
) -> None:
    study = module_study(tmp_path, "bad")
    text = study.read_text()
    assert change[0] in text
    study.write_text(text.replace(change[0], change[1]))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert main(["run", str(study), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert message in err, err
    assert "Traceback" not in err
    assert _runs(uri, "bad") == [] and _runs(uri, "bad", names.KIND_STUDY) == []


def test_a_lightning_module_given_as_task_model_is_refused(tmp_path: Path, capsys) -> None:
    write_user_package(tmp_path)
    study = tmp_path / "asmodel.yaml"
    study.write_text(
        "name: asmodel\ntask:\n  model: {class_path: userpkg.lit.LitNet}\n  dataset: blobs\n"
        "train: {epochs: 1, batch_size: 32}\noptimizers: [{name: sgd, lr: 0.1}]\n"
    )
    assert main(["run", str(study), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    assert "is a LightningModule: name it as task.module" in capsys.readouterr().err


NET_STUDY = """
name: {name}
task:
  model: {{class_path: userpkg.nets.{cls}, init_args: {{width: 16}}}}
  dataset: mnist1d
  data_args: {{num_samples: 400}}
train: {{epochs: 2, batch_size: 50}}
optimizers:
  - name: adam
    lr: [1e-3, 1e-2]
seeds: [0, 1]
"""


def _net_study(folder: Path, name: str, cls: str) -> Path:
    write_user_package(folder)
    path = folder / f"{name}.yaml"
    path.write_text(NET_STUDY.format(name=name, cls=cls))
    return path


def test_plain_module_trains_as_a_population_like_its_solo_trials(tmp_path: Path, capsys) -> None:
    study = _net_study(tmp_path, "net", "Net")
    uris = {}
    for engine in ("population", "trial"):
        uris[engine] = f"sqlite:///{tmp_path}/{engine}.db"
        args = ["run", str(study), "--tracking-uri", uris[engine], "--no-report"]
        assert main([*args, "--engine", engine]) == 0
    finals = {}
    for engine, uri in uris.items():
        runs = _runs(uri, "net")
        assert {r.data.tags[names.TAG_ENGINE] for r in runs} == {engine}
        finals[engine] = {
            r.data.tags[names.TAG_TRIAL_KEY]: r.data.metrics[names.FINAL_VAL_ACC] for r in runs
        }
    assert finals["population"].keys() == finals["trial"].keys()
    for key, acc in finals["trial"].items():
        assert finals["population"][key] == pytest.approx(acc, abs=1e-4)
    capsys.readouterr()
    assert main(["plan", str(study), "--tracking-uri", f"sqlite:///{tmp_path}/new.db"]) == 0
    assert "populations (trained as one model each): P1 (4)" in capsys.readouterr().out


def test_plain_module_that_does_not_vectorise_falls_back_with_its_reason(
    tmp_path: Path, capsys
) -> None:
    study = _net_study(tmp_path, "drop", "DropNet")
    uri = f"sqlite:///{tmp_path}/m.db"
    assert main(["plan", str(study), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    # four trials share the reason: one line for all of them
    assert "alone: 4 trials: model 'userpkg.nets.DropNet' does not vectorise" in out
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report"]) == 0
    err = capsys.readouterr().err
    assert "trial engine for 4 trials: model 'userpkg.nets.DropNet' does not vectorise" in err
    runs = _runs(uri, "drop")
    assert {r.data.tags[names.TAG_ENGINE] for r in runs} == {"trial"}
    assert all("does not vectorise" in r.data.tags[names.TAG_ENGINE_REASON] for r in runs)


def test_user_dataset_class_with_mse_ranks_by_validation_loss(tmp_path: Path, capsys) -> None:
    write_user_package(tmp_path)
    study = tmp_path / "reg.yaml"
    study.write_text(
        "name: reg\ntask:\n  model: {class_path: userpkg.nets.Regressor}\n"
        "  dataset: {class_path: userpkg.data.Regression, init_args: {n: 200}}\n"
        "  data_args: {val_fraction: 0.25}\n  loss: mse\n"
        "train: {epochs: 3, batch_size: 25}\noptimizers: [{name: sgd, lr: [0.001, 0.05]}]\n"
    )
    uri = f"sqlite:///{tmp_path}/m.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report"]) == 0
    err = capsys.readouterr().err
    assert "loss mse: populations train cross-entropy classifiers" in err
    runs = _runs(uri, "reg")
    assert len(runs) == 2
    for r in runs:
        assert r.data.tags[names.TAG_METRIC] == names.VAL_LOSS
        assert r.data.tags[names.TAG_METRIC_MODE] == "min"
        assert names.VAL_LOSS in r.data.metrics and names.VAL_ACC not in r.data.metrics
        assert r.data.params["loss"] == "mse"
    loss = {float(r.data.params["lr"]): r.data.metrics[names.VAL_LOSS] for r in runs}
    assert loss[0.05] < loss[0.001]  # the larger LR fits the line in 3 epochs; the tiny one not


def test_find_lr_on_a_user_module_moves_its_named_groups_together(tmp_path: Path, capsys) -> None:
    study = module_study(tmp_path, "groups")
    text = study.read_text().replace(
        "    momentum: 0.9\n", "    momentum: 0.9\n    layer_lr: [0.1, 1.0]\n"
    )
    study.write_text(text)
    uri = f"sqlite:///{tmp_path}/m.db"
    args = ["find-lr", str(study), "--tracking-uri", uri, "--steps", "120"]
    assert main(args) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "per param group at the recommended LR" in x)
    body, head = (float(part.split()[-1]) for part in line.split(": ", 1)[1].split(", "))
    assert line.split(": ", 1)[1].startswith("body ") and ", head " in line
    assert body == pytest.approx(head / 10, rel=0.02)  # layer_lr [0.1, 1.0]: they move together
    (rt,) = _runs(uri, "groups", names.KIND_RANGE_TEST)
    assert json.loads(rt.data.params["group_ratios"]) == pytest.approx([0.1, 1.0])


def test_python_api_takes_classes_and_refuses_what_cannot_travel(tmp_path: Path) -> None:
    import lightning as L
    import torch
    from torch import nn
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset

    import lrstudy

    # Defined here, as in a notebook: no importable module holds them (they travel by value).
    class ApiNet(L.LightningModule):
        def __init__(self, hidden: int = 8) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 2))

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("api_loss", loss, on_epoch=True, on_step=False)
            return loss

    class ApiData(L.LightningDataModule):
        def __init__(self, batch_size: int = 16) -> None:
            super().__init__()
            self.batch_size = batch_size

        def train_dataloader(self):
            g = torch.Generator().manual_seed(0)
            x = torch.randn(64, 4, generator=g)
            return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=self.batch_size)

    study = tmp_path / "api.yaml"
    study.write_text(
        "name: api\ntask:\n  module: {init_args: {hidden: 8}}\n  metric: {name: api_loss}\n"
        "train: {epochs: 2}\noptimizers: [{name: sgd, lr: [0.01, 0.1]}]\n"
        "sweep: {batch_size: [16, 32]}\n"
    )
    uri = f"sqlite:///{tmp_path}/m.db"
    summary = lrstudy.run_study(
        study, module=ApiNet, datamodule=ApiData, workers=2, tracking_uri=uri, report=False
    )
    assert summary.outcomes == {names.OUTCOME_OK: 4}
    runs = _runs(uri, "api")
    assert {r.data.params["batch_size"] for r in runs} == {"16", "32"}
    assert all("api_loss" in r.data.metrics for r in runs)
    assert all(r.data.tags[names.TAG_METRIC_MODE] == "min" for r in runs)  # "loss" in the name

    lock = threading.Lock()

    def factory(hidden: int = 8) -> ApiNet:  # holds a lock: it cannot be pickled
        with lock:
            return ApiNet(hidden)

    with pytest.raises(UserInputError) as e:
        lrstudy.run_study(study, module=factory, datamodule=ApiData, workers=2,
                          tracking_uri=f"sqlite:///{tmp_path}/other.db", report=False)  # fmt: skip
    message = str(e.value)
    assert "\n" not in message and "cannot be sent to other worker processes" in message
    assert "use workers=1" in message


def test_a_metric_never_logged_finishes_and_says_what_exists(tmp_path: Path, capsys) -> None:
    study = module_study(tmp_path, "nometric", epochs=1, seeds="[0]")
    study.write_text(study.read_text().replace("name: val_loss, mode: min", "name: val_los"))
    uri = f"sqlite:///{tmp_path}/m.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--report-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "note: the study's metric 'val_los' was never logged" in err
    assert "logged: my_loss, val_acc, val_loss (set task.metric.name to one)" in err
    page = (tmp_path / "nometric" / "index.html").read_text()
    assert "val_los" in page and "val_loss" in page


def test_lr_auto_range_tests_the_users_module(tmp_path: Path) -> None:
    study = module_study(tmp_path, "autolr", epochs=1, seeds="[0]")
    text = study.read_text().replace("    lr: [0.05, 0.2]\n", "    lr: auto\n")
    study.write_text(text)
    uri = f"sqlite:///{tmp_path}/m.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report"]) == 0
    (trial,) = _runs(uri, "autolr")
    assert trial.data.tags[names.TAG_LR_SOURCE].startswith("range_test:")
    (rt,) = _runs(uri, "autolr", names.KIND_RANGE_TEST)
    assert rt.data.params["model"] == "userpkg.lit.LitNet"
    assert _first(uri, trial.info.run_id, "lr/head") == pytest.approx(
        float(trial.data.params["lr"])
    )


def test_plan_warns_when_finished_trials_came_from_other_code(tmp_path: Path, capsys) -> None:
    study = module_study(tmp_path, "changed", epochs=1, seeds="[0]")
    uri = f"sqlite:///{tmp_path}/m.db"
    assert main(["run", str(study), "--tracking-uri", uri, "--no-report"]) == 0
    assert main(["plan", str(study), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "LitNet: its own configure_optimizers is replaced" in out and "warning" not in out
    lit = tmp_path / "userpkg" / "lit.py"
    lit.write_text(lit.read_text() + "\n# the user edits their module\n")
    # A fresh process: the classes' source is hashed once per process.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plan = subprocess.run([sys.executable, "-m", "lrstudy", "plan", str(study), "--tracking-uri",
                           uri], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert "warning: 2 finished trials of this study were trained on other code of" in plan.stdout


def test_metric_names_mlflow_refuses_are_recorded_and_named_clearly(tmp_path: Path) -> None:
    from lrstudy.spec import parse_spec
    from lrstudy.track.run_params import metric_key

    # a module that logs `acc@1` loses nothing: the name is recorded as `acc_1`
    assert metric_key("acc@1") == "acc_1" and metric_key("val_acc") == "val_acc"
    with pytest.raises(UserInputError) as e:
        parse_spec(module_study(tmp_path).read_text().replace("val_loss, mode: min", "acc@1"))
    assert "task.metric.name: 'acc@1' is not allowed" in str(e.value)
    assert "recorded as 'acc_1'" in str(e.value)
