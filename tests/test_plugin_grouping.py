"""Plugin runs group themselves (issue 17, item 3, the report side): runs of a user's own loop
that log optimizer, lr, schedule, seed and `lrstudy.config_params` become configurations with
their seeds aggregated."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from lrstudy import names as N
from lrstudy.report.build import generate_report
from lrstudy.report.results import load_results


def _plugin_runs(uri: str, tmp_path: Path, widths=(64,)) -> None:
    client = MlflowClient(uri)
    exp = client.create_experiment("myloop", artifact_location=(tmp_path / "a").as_uri())
    for width in widths:
        for lr in (0.001, 0.01, 0.1):
            for seed in (0, 1):
                run = client.create_run(exp, run_name=f"run w{width} {lr} {seed}",
                                        tags={N.TAG_KIND: N.KIND_PLUGIN})  # fmt: skip
                params = {"optimizer": "SGD", "lr": lr, "opt.momentum": 0.9,
                          "opt.weight_decay": 0.0, "schedule": "none", "seed": seed,
                          "width": width, "note": f"free text {seed}"}  # fmt: skip
                acc = 0.6 + lr + 0.001 * seed - 0.01 * (width == 128)
                ms = [Metric(N.TRAIN_LOSS, 2.0 / (1 + s * lr * 10), 0, s) for s in range(30)]
                ms += [Metric(N.LR, lr, 0, s) for s in range(30)]
                ms += [Metric(N.VAL_ACC, acc - 0.1 * (e == 0), 0, e * 15 + 14) for e in (0, 1)]
                client.log_batch(run.info.run_id, metrics=ms,
                                 params=[Param(k, str(v)) for k, v in params.items()],
                                 tags=[RunTag(N.TAG_CONFIG_PARAMS, json.dumps(["width"]))])  # fmt: skip
                client.set_terminated(run.info.run_id)


def test_three_lrs_two_seeds_are_three_configurations(store_uri: str, tmp_path: Path) -> None:
    _plugin_runs(store_uri, tmp_path)
    res = generate_report(store_uri, experiment="myloop", out_dir=tmp_path / "r",
                          log_artifact=False)  # fmt: skip
    assert "3 configurations, 6 runs" in res.html
    df = load_results("myloop", tracking_uri=store_uri)
    assert df.groupby("config").size().to_dict() == {
        "SGD · width=64 · lr=0.001": 2, "SGD · width=64 · lr=0.01": 2, "SGD · width=64 · lr=0.1": 2,
    }  # fmt: skip
    assert set(df["family"]) == {"SGD · width=64"}  # `note` is not configuration: seeds merge


def test_config_params_split_families(store_uri: str, tmp_path: Path) -> None:
    _plugin_runs(store_uri, tmp_path, widths=(64, 128))
    df = load_results("myloop", tracking_uri=store_uri)
    assert set(df["family"]) == {"SGD · width=64", "SGD · width=128"}
    assert df.groupby("config").size().eq(2).all() and df["config"].nunique() == 6


def test_runs_differing_in_another_groups_lr_do_not_merge(store_uri: str, tmp_path: Path) -> None:
    client = MlflowClient(store_uri)
    exp = client.create_experiment("groups", artifact_location=(tmp_path / "g").as_uri())
    for body_lr in (0.001, 0.01):
        for seed in (0, 1):
            run = client.create_run(
                exp, run_name=f"r{body_lr}{seed}", tags={N.TAG_KIND: N.KIND_PLUGIN}
            )
            params = {"optimizer": "AdamW", "lr": 0.01, "lr/body": body_lr, "lr/head": 0.01,
                      "schedule": "none", "seed": seed}  # fmt: skip
            client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()],
                             metrics=[Metric(N.TRAIN_LOSS, 1.0 / (1 + s), 0, s) for s in range(5)])  # fmt: skip
            client.set_terminated(run.info.run_id)
    df = load_results("groups", tracking_uri=store_uri)
    assert df["config_key"].nunique() == 2 and df["config"].nunique() == 2
    assert df.groupby("config").size().eq(2).all()
