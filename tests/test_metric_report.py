"""The report, the best configuration and the diagnosis on any ranking metric (issue 13).

Synthetic runs in a real sqlite MLflow store, laid out as `lrstudy run` writes a study of a user's
module: tags lrstudy.metric / lrstudy.metric_mode on the parent and trial runs, the module's own
metric names, and no final/val_acc.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from lrstudy import names as N
from lrstudy.report.best import best_config
from lrstudy.report.build import generate_report
from lrstudy.report.results import load_results

T0 = 1_700_000_000_000
LRS = (1e-3, 1e-2, 1e-1)


def write_module_study(
    uri: str,
    tmp_path: Path,
    finals: dict[float, dict[str, float]],
    metric: tuple[str, str] | None,
    *,
    study: str = "userstudy",
    seeds=(0, 1),
    task_kind: str = "module",
    diverged: tuple[float, ...] = (),
    wds: tuple[float, ...] = (0.0,),
) -> None:
    """One parent run and one trial run per (LR, seed). `finals[lr]` = {metric name: final value}
    (seed 1 adds 1 % so seeds differ); every run logs a falling train loss per step."""
    client = MlflowClient(uri)
    exp = client.create_experiment(study, artifact_location=(tmp_path / "art").resolve().as_uri())
    tags = {N.TAG_KIND: N.KIND_STUDY, N.TAG_STUDY: study, N.TAG_SPEC_HASH: "h1",
            N.TAG_TASK_KIND: task_kind}  # fmt: skip
    if metric is not None:
        tags |= {N.TAG_METRIC: metric[0], N.TAG_METRIC_MODE: metric[1]}
    parent = client.create_run(exp, start_time=T0, tags=tags, run_name=study).info.run_id
    client.log_batch(parent, params=[Param("study", study), Param("epochs", "2")])
    steps, spe = 40, 20
    combos = [(lr, s, wd) for wd in wds for lr in finals for s in seeds]
    for i, (lr, seed, wd) in enumerate(combos):
        key = f"cfg-{lr:g}-{wd:g}"
        run_tags = {**tags, N.TAG_KIND: N.KIND_TRIAL, N.TAG_TRIAL_KEY: f"{key}|{seed}",
                    N.TAG_CONFIG_KEY: key, N.PARENT_RUN_ID: parent,
                    N.TAG_OUTCOME: N.OUTCOME_DIVERGED if lr in diverged else N.OUTCOME_OK}  # fmt: skip
        rid = client.create_run(exp, start_time=T0 + 10 + i, tags=run_tags,
                                run_name=f"adam lr={lr:g} seed={seed}").info.run_id  # fmt: skip
        params = {"optimizer": "adam", "lr": lr, "seed": seed, "schedule": "constant",
                  "schedule_label": "constant", "total_steps": steps, "opt.weight_decay": wd}  # fmt: skip
        client.log_batch(rid, params=[Param(k, str(v)) for k, v in params.items()])
        loss = 2.0 * np.exp(-np.arange(steps) / (10 + 100 * lr)) + 0.1
        ms = [Metric(N.LR, lr, T0, s) for s in range(steps)]
        ms += [Metric(N.TRAIN_LOSS, float(v), T0, s) for s, v in enumerate(loss)]
        ms += [Metric(N.GRAD_NORM, 1.0, T0, s) for s in range(steps)]
        for e in (1, 2):
            st = e * spe - 1
            ms.append(Metric(N.TRAIN_LOSS_EPOCH, float(loss[st - spe + 1 : st + 1].mean()), T0, st))
            for name, final in finals[lr].items():  # an earlier, worse value, then the final one
                v = final * (1 + 0.01 * seed) * (1 + wd)
                ms.append(Metric(name, v * (1.5 if e == 1 else 1.0), T0, st))
        ms.append(Metric(N.FINAL_TRAIN_LOSS, float(loss[-spe:].mean()), T0, steps))
        client.log_batch(rid, metrics=ms)
        client.set_terminated(rid, "FINISHED")
    client.set_terminated(parent, "FINISHED")


def report(uri: str, tmp_path: Path, study: str = "userstudy"):
    return generate_report(uri, study=study, out_dir=tmp_path / "reports", log_artifact=False)


def by_lr(df: pd.DataFrame, col: str) -> dict[float, str]:
    return df.drop_duplicates("lr").set_index("lr")[col].to_dict()


def test_min_metric_lowest_lr_wins(store_uri: str, tmp_path: Path) -> None:
    # val_loss falls with a lower LR; the module's own val_acc would crown the highest LR if the
    # mode were ignored (or if the report ranked by an accuracy)
    finals = {lr: {"val_loss": 0.2 + 3 * lr + (0.5 if lr == 1e-1 else 0), "val_acc": 0.5 + 3 * lr}
              for lr in LRS}  # fmt: skip
    write_module_study(store_uri, tmp_path, finals, ("val_loss", "min"))
    res = report(store_uri, tmp_path)
    df = load_results("userstudy", tracking_uri=store_uri)
    best = best_config(df)
    assert best is not None and best.name.endswith("lr=0.001")
    assert best.metric.name == "val_loss" and best.metric.mode == "min"
    assert best.mean == pytest.approx((0.203 + 0.203 * 1.01) / 2, rel=1e-3)
    assert "final val_loss 0.204 ± 0.00144 (n=2)" in best.text()
    assert "lowest LR tried" in best.edge
    # the report agrees: header, diagnosis, rules, table
    assert "final val_loss 0.204 ± 0.00144 (n=2)" in res.html
    verdict = by_lr(df, "diagnosis")
    assert verdict[1e-3] == "good"
    assert verdict[1e-1] == "too_high"
    reasons = by_lr(df, "diagnosis_reason")
    assert "lowest LR tried" in reasons[1e-3]
    assert "above the best" in reasons[1e-1]
    assert "lower is better" in res.html
    assert "final val_loss (lower is better)" in res.html  # table column / figure title
    assert "share of" not in res.html or "spread" in res.html


def test_mode_matters(store_uri: str, tmp_path: Path) -> None:
    """The same values ranked max crown the other end: the test fails if the mode is ignored."""
    finals = {lr: {"score": 1.0 + lr} for lr in LRS}
    write_module_study(store_uri, tmp_path, finals, ("score", "min"), study="low")
    write_module_study(store_uri, tmp_path / "b", finals, ("score", "max"), study="high")
    low = best_config(load_results("low", tracking_uri=store_uri))
    high = best_config(load_results("high", tracking_uri=store_uri))
    assert low.name.endswith("lr=0.001") and high.name.endswith("lr=0.1")
    frame = load_results("low", tracking_uri=store_uri)
    assert best_config(frame.assign(metric_mode="max")).name.endswith("lr=0.1")


def test_max_metric_of_the_users_own_name(store_uri: str, tmp_path: Path) -> None:
    finals = {1e-3: {"my_f1": 0.40}, 1e-2: {"my_f1": 0.80}, 1e-1: {"my_f1": 0.79}}
    write_module_study(store_uri, tmp_path, finals, ("my_f1", "max"))
    res = report(store_uri, tmp_path)
    df = load_results("userstudy", tracking_uri=store_uri)
    best = best_config(df)
    assert best.name.endswith("lr=0.01") and best.edge == ""
    assert "final my_f1 0.804" in res.html
    v = by_lr(df, "diagnosis")
    assert v[1e-2] == "good" and v[1e-3] == "too_low"
    # 0.79 vs 0.80: within 10 % of the family's spread (0.4) -> not clearly worse
    assert v[1e-1] == "good"
    assert "higher is better" in res.html
    # its per-epoch my_f1 is the convergence figure's right column (no val/acc was logged):
    # 3 LRs x (40 train-loss steps + 2 epochs of my_f1), seed means
    assert "No per-epoch val/acc" not in res.html
    assert "my_f1 is drawn in the convergence figure" in res.html
    assert res.figures["convergence"]["points"] == 3 * (40 + 2)


def test_metric_never_logged_is_said_and_lists_what_exists(store_uri: str, tmp_path: Path) -> None:
    finals = {lr: {"val_loss": 0.3 + lr} for lr in LRS}
    write_module_study(store_uri, tmp_path, finals, ("val_f1", "max"))
    res = report(store_uri, tmp_path)
    assert "never logged" in res.html and "val_f1" in res.html
    assert "val_loss" in res.html.split("never logged")[1][:400]
    df = load_results("userstudy", tracking_uri=store_uri)
    assert best_config(df) is None
    assert set(df["diagnosis"]) == {"good"}
    assert "no final val_f1 was logged by any trial" in res.html


def test_module_study_without_any_accuracy(store_uri: str, tmp_path: Path) -> None:
    """A user LightningModule without task.metric: ranked by train/loss_epoch, lowest wins; no
    accuracy figure panel, no at-chance, one line for what is left out."""
    write_module_study(store_uri, tmp_path, {lr: {} for lr in LRS}, (N.TRAIN_LOSS_EPOCH, "min"))
    res = report(store_uri, tmp_path)
    df = load_results("userstudy", tracking_uri=store_uri)
    best = best_config(df)
    # the synthetic loss falls slower with a larger LR: the lowest LR has the lowest loss
    assert best is not None and best.name.endswith("lr=0.001")
    assert "lowest LR tried" in best.edge
    assert "at_chance" not in set(df["diagnosis"])
    assert "No validation accuracy was logged" in res.html
    assert "No per-epoch val/acc" in res.html  # train/loss_epoch is no second curve
    assert res.figures["convergence"]["points"] == 3 * 40
    assert "final train/loss_epoch (lower is better)" in res.html
    assert "robustness" not in res.figures
    assert "<th>final val acc</th>" not in res.html  # no empty accuracy columns
    assert {"lr-sensitivity", "convergence", "stability", "outcomes"} <= set(res.figures)


def test_untagged_study_keeps_val_acc_ranking(tmp_path: Path, store_uri: str) -> None:
    """Runs without the metric tags (older studies) rank by final val accuracy, as always."""
    from tests.report_fixtures import SyntheticStudy, write_study

    write_study(store_uri, SyntheticStudy(), tmp_path)
    df = load_results("synthetic", tracking_uri=store_uri)
    assert set(df["metric"]) == {N.VAL_ACC} and set(df["metric_mode"]) == {"max"}
    best = best_config(df)
    plain = best_config(df.drop(columns=["metric", "metric_mode", "metric_value"]))
    assert best == plain and best.text().split(": ")[1].startswith("final val acc")


def test_progress_ranks_by_the_study_metric() -> None:
    from rich.console import Console

    from lrstudy.execute.progress import StudyProgress

    p = StudyProgress(Console(file=open("/dev/null", "w")), "s", 4, set(), ("val_loss", "min"))  # noqa: SIM115
    for i, (lr, v) in enumerate([(0.1, 0.9), (0.01, 0.3)]):
        p.on_event({"type": "trial", "key": f"k{i}", "name": f"adam lr={lr:g} seed=0",
                    "config_key": f"c{i}", "outcome": "ok", "val_acc": 0.99 - i, "seconds": 1.0,
                    "lr": lr, "lr_source": "spec", "metric_value": v})  # fmt: skip
    b = p.best()
    assert b.name == "adam lr=0.01" and "final val_loss 0.3" in b.text()
    assert "lowest LR tried" in b.edge


def test_accuracy_claims_are_skipped_without_accuracy(store_uri: str, tmp_path: Path) -> None:
    write_module_study(store_uri, tmp_path, {lr: {"val_loss": 0.3 + lr} for lr in LRS},
                       ("val_loss", "min"))  # fmt: skip
    res = generate_report(store_uri, study="userstudy", out_dir=tmp_path / "r", log_artifact=False,
                          claims=["too_high_unstable", "grad_norm_grows_at_high_lr"])  # fmt: skip
    by_name = {c.name: c for c in res.claims}
    assert by_name["too_high_unstable"].verdict == "skipped"
    assert "ranked by val_loss" in by_name["too_high_unstable"].reason
    assert by_name["grad_norm_grows_at_high_lr"].verdict != "skipped"
    assert "1 skipped" in res.html


def test_swept_axis_figure_shows_the_metric(store_uri: str, tmp_path: Path) -> None:
    finals = {lr: {"val_loss": 0.2 + lr} for lr in LRS}
    write_module_study(store_uri, tmp_path, finals, ("val_loss", "min"), wds=(0.0, 0.5))
    res = report(store_uri, tmp_path)
    assert "axis-weight_decay" in res.figures
    from lrstudy.report.plots.axes import axis_heatmap_data
    from lrstudy.report.read import find_study
    from lrstudy.report.results import collect
    from lrstudy.track.store import open_client

    client = open_client(store_uri, create=False)
    data = collect(client, find_study(client, study="userstudy"))
    panels = axis_heatmap_data(data.configs, "weight_decay", ["weight_decay"])
    assert panels[0]["label"] == "final val_loss (lower is better)"
    assert np.nanmin(panels[0]["values"]) == pytest.approx(0.2 + 1e-3, rel=0.01)  # not negated
    best = best_config(load_results("userstudy", tracking_uri=store_uri))
    assert best.name == "adam · constant · wd=0 · lr=0.001"
