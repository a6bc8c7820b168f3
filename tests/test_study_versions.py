"""One study, one current definition (issue 17, item 1): a changed study rerun under the same name
ranks, reports and prints the best of its current trials only; a grown grid keeps its old trials."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from rich.console import Console

import lrstudy
from lrstudy import names as N
from lrstudy.report.build import generate_report
from lrstudy.report.versions import LeftOut, Version, current_trials, is_current, spec_difference
from lrstudy.summary import summary_lines
from tests.conftest import smoke_study

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115


def _variant(tmp_path: Path, name: str, old: str, new: str, tag: str) -> Path:
    p = smoke_study(tmp_path, name, epochs=1, seeds="[0]")
    text = p.read_text()
    assert old in text
    out = tmp_path / f"{name}-{tag}.yaml"
    out.write_text(text.replace(old, new))
    return out


def test_changed_study_reports_and_ranks_its_current_trials_only(
    tmp_path: Path, store_uri: str
) -> None:
    v1 = smoke_study(tmp_path, "vers", epochs=1, seeds="[0]")
    v2 = _variant(tmp_path, "vers", "num_samples: 600", "num_samples: 500", "v2")
    first = lrstudy.run_study(v1, tracking_uri=store_uri, report=False, console=QUIET)
    second = lrstudy.run_study(v2, tracking_uri=store_uri, report=False, console=QUIET)
    assert first.skipped == 0 and second.skipped == 0  # other data: other keys, all rerun
    # the best line: one seed per configuration, not the old and the new trial pooled
    assert second.best is not None and second.best.n == 1
    df = lrstudy.load_results("vers", tracking_uri=store_uri)
    assert len(df) == second.total == 6
    assert lrstudy.best_config(df).config_key == second.best.config_key
    assert lrstudy.best_config(df).mean == second.best.mean
    res = generate_report(store_uri, study="vers", out_dir=tmp_path / "r", log_artifact=False)
    assert "6 trials of 1 earlier version of this study" in res.html
    assert "task.data_args.num_samples" in res.html
    assert res.n_runs == 6
    # rerun of the current version: nothing to do, and its outcomes are counted (issue 17 item 9)
    again = lrstudy.run_study(v2, tracking_uri=store_uri, report=False, console=QUIET)
    assert again.skipped == 6 and sum(again.outcomes.values()) == 6
    assert set(again.outcomes) <= {N.OUTCOME_OK, N.OUTCOME_DIVERGED}
    assert (again.best.config_key, again.best.mean, again.best.n) == (
        second.best.config_key,
        second.best.mean,
        1,
    )
    assert "ran: nothing new (finished: " in summary_lines("vers", again)[0]
    # plan says that finished trials came from another version
    from lrstudy.execute.status import study_version_notes
    from lrstudy.spec import load_spec

    notes = study_version_notes(load_spec(v2), store_uri)
    assert any("6 finished trial runs of 1 other version" in n for n in notes)


def test_grown_grid_keeps_the_trials_it_still_contains(tmp_path: Path, store_uri: str) -> None:
    v1 = smoke_study(tmp_path, "grow", epochs=1, seeds="[0]")
    v2 = _variant(tmp_path, "grow", "lr: 1e-3", "lr: [1e-3, 3e-3]", "v2")
    lrstudy.run_study(v1, tracking_uri=store_uri, report=False, console=QUIET)
    grown = lrstudy.run_study(v2, tracking_uri=store_uri, report=False, console=QUIET)
    assert grown.total == 8 and grown.skipped == 6
    df = lrstudy.load_results("grow", tracking_uri=store_uri)
    assert len(df) == 8  # the old trials are trials of the grown grid too
    res = generate_report(store_uri, study="grow", out_dir=tmp_path / "r", log_artifact=False)
    assert "earlier version" not in res.html
    from lrstudy.execute.status import study_version_notes
    from lrstudy.spec import load_spec

    notes = study_version_notes(load_spec(v2), store_uri)
    assert any("6 finished trial runs came from another version" in n for n in notes)


def test_report_without_logged_spec_decides_by_hash(tmp_path: Path, store_uri: str) -> None:
    """Synthetic runs, no study.yaml artifacts: the newest parent's spec hash is current."""
    client = MlflowClient(store_uri)
    exp = client.create_experiment("syn", artifact_location=(tmp_path / "a").resolve().as_uri())
    for i, h in enumerate(("old", "new")):
        tags = {N.TAG_KIND: N.KIND_STUDY, N.TAG_STUDY: "syn", N.TAG_SPEC_HASH: h}
        parent = client.create_run(exp, start_time=1000 * (i + 1), tags=tags).info.run_id
        for lr in (0.01, 0.1):
            acc = 0.9 if (h == "old" and lr == 0.1) else 0.5 + lr
            rt = {**tags, N.TAG_KIND: N.KIND_TRIAL, N.TAG_TRIAL_KEY: f"{h}{lr}",
                  N.TAG_CONFIG_KEY: f"{h}{lr}", N.PARENT_RUN_ID: parent, N.TAG_OUTCOME: "ok"}  # fmt: skip
            rid = client.create_run(exp, start_time=1000 * (i + 1) + 1, tags=rt).info.run_id
            client.log_batch(rid, params=[Param("optimizer", "sgd"), Param("lr", str(lr))],
                             metrics=[Metric(N.FINAL_VAL_ACC, acc, 0, 0),
                                      Metric(N.TRAIN_LOSS, 1.0, 0, 0)])  # fmt: skip
            client.set_terminated(rid, "FINISHED")
        client.set_terminated(parent, "FINISHED")
    df = lrstudy.load_results("syn", tracking_uri=store_uri)
    assert len(df) == 2 and lrstudy.best_config(df).mean == 0.6  # not the old version's 0.9
    res = generate_report(store_uri, experiment="syn", out_dir=tmp_path / "r", log_artifact=False)
    assert "2 trials of 1 earlier version of this study (spec old) are left out" in res.html


def test_is_current_rule() -> None:
    by_keys = Version.of("h2", {"a", "b"})
    assert is_current("a", "h1", by_keys) and not is_current("c", "h2", by_keys)
    by_hash = Version.of("h2")
    assert is_current("c", "h2", by_hash) and not is_current("a", "h1", by_hash)
    assert is_current("x", None, by_hash)  # untagged runs (plugin, older) always count
    runs = pd.DataFrame({f"tags.{N.TAG_TRIAL_KEY}": ["a", "b", "c"],
                         f"tags.{N.TAG_SPEC_HASH}": ["h1", "h2", "h1"]})  # fmt: skip
    kept, left = current_trials(runs, by_hash)
    assert list(kept[f"tags.{N.TAG_TRIAL_KEY}"]) == ["b"]
    assert left == LeftOut({"h1": 2}, {})
    old = yaml.safe_load("task: {data_args: {noise: 0.0}}\nseeds: [0]\ndescription: a")
    new = yaml.safe_load("task: {data_args: {noise: 0.5}}\nseeds: [0]\ndescription: b")
    assert spec_difference(old, new) == "different task.data_args.noise"
