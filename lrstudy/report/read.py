"""The only MLflow reader (with lrstudy.report.history): find a study and read its runs.

One `search_runs` per run kind returns params, tags and the latest value of every metric, which
covers all the per-trial summaries (final/*, best/*, steps_to_target, train/seconds, robust/*).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
from mlflow.tracking import MlflowClient

from lrstudy import names as N
from lrstudy.errors import UserInputError
from lrstudy.report.history import MLFLOW_MAX_FLOAT, clamp_to_inf
from lrstudy.report.versions import LeftOut, Version, current_trials, plan_keys, spec_difference
from lrstudy.track.runs import search_all


@dataclass
class StudyRuns:
    """What the report needs to know about one study, as read from MLflow."""

    experiment_id: str
    experiment_name: str
    study: str | None  # None for an experiment of plugin runs
    parent: dict | None  # newest parent run: run_id, status, start_time, params, tags
    n_parents: int
    # chosen runs: run_id, run_name, status, start_time, end_time, tags.*, params.*, metrics.*
    runs: pd.DataFrame
    ignored: dict[str, int]  # why runs were left out -> count
    range_tests: pd.DataFrame  # optimizer, rule, lr, recommended
    # trial runs of earlier versions of the study, left out (`lrstudy.report.versions`)
    left_out: LeftOut | None = None
    version: Version | None = None  # the current definition the runs were chosen by
    # trials successive halving stopped at a rung (outcome pruned), chosen like `runs` but kept
    # apart: their values are from an earlier epoch, so only the Search section reads them
    pruned: pd.DataFrame = field(default_factory=pd.DataFrame)


def _search(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list:
    return search_all(client, experiment_ids, filter_string, "attributes.start_time DESC")


def runs_frame(runs: Iterable) -> pd.DataFrame:
    """MLflow Run objects → one row each; metric values with clamped Inf restored. Column
    `nonfinite` lists the metrics whose latest value is NaN/Inf (a NaN cell alone cannot tell a
    logged NaN from a metric that was never logged)."""
    rows = []
    for r in runs:
        row = {
            "run_id": r.info.run_id,
            "run_name": r.info.run_name or r.info.run_id[:8],
            "status": r.info.status,
            "start_time": r.info.start_time or 0,
            "end_time": r.info.end_time,
        }
        row.update({f"tags.{k}": v for k, v in r.data.tags.items()})
        row.update({f"params.{k}": v for k, v in r.data.params.items()})
        metrics = {k: float(v) for k, v in r.data.metrics.items()}
        row.update(
            {
                f"metrics.{k}": v
                for k, v in zip(metrics, clamp_to_inf(list(metrics.values())), strict=True)
            }
        )
        row["n_metrics"] = len(metrics)  # values read, NaN ones included (for the page's counts)
        row["nonfinite"] = ",".join(
            sorted(
                k for k, v in metrics.items() if not math.isfinite(v) or abs(v) >= MLFLOW_MAX_FLOAT
            )
        )
        rows.append(row)
    df = pd.DataFrame(
        rows, columns=None if rows else ["run_id", "run_name", "status", "start_time", "end_time"]
    )
    return df.sort_values(
        ["start_time", "run_id"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return (
        df[name]
        if name in df.columns
        else pd.Series([None] * len(df), index=df.index, dtype=object)
    )


def pick_trials(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per trial key the newest FINISHED run with outcome ok/diverged/pruned (or no outcome tag:
    plugin runs); returns (chosen, {reason: count} of the runs left out)."""
    if df.empty:
        return df, {}
    outcome = _col(df, f"tags.{N.TAG_OUTCOME}")
    usable = (df["status"] == "FINISHED") & (outcome.isna() | outcome.isin(N.DONE_OUTCOMES))
    key = _col(df, f"tags.{N.TAG_TRIAL_KEY}").fillna(df["run_id"])
    ordered = (
        df[usable]
        .assign(_key=key[usable])
        .sort_values("start_time", ascending=False, kind="stable")
    )
    chosen = ordered.drop_duplicates("_key", keep="first").drop(columns="_key")
    ignored: dict[str, int] = {}
    for i in df.index[~df["run_id"].isin(chosen["run_id"])]:
        if usable[i]:
            why = "superseded by a newer run of the same trial"
        elif df.at[i, "status"] == "FINISHED":
            why = f"outcome {outcome[i]}"
        else:
            why = f"status {df.at[i, 'status']}"
        ignored[why] = ignored.get(why, 0) + 1
    return chosen.sort_values("run_id").reset_index(drop=True), dict(sorted(ignored.items()))


def _range_tests(client: MlflowClient, exp_id: str, study: str | None) -> pd.DataFrame:
    cols = ["optimizer", "rule", "lr", "recommended"]
    rt = runs_frame(_search(client, [exp_id], f"tags.`{N.TAG_KIND}` = '{N.KIND_RANGE_TEST}'"))
    if rt.empty:
        return pd.DataFrame(columns=cols)
    if study is not None:
        rt = rt[_col(rt, f"tags.{N.TAG_STUDY}") == study]
    rows = []
    for opt, group in rt.groupby(_col(rt, "params.optimizer").fillna("?"), sort=True):
        newest = group.iloc[0]  # runs_frame sorts newest first
        for col in sorted(
            c for c in group.columns if c.startswith(f"metrics.{N.RT_SUGGESTION_PREFIX}")
        ):
            lr = newest[col]
            if isinstance(lr, float) and math.isfinite(lr) and lr > 0:
                rule = col.removeprefix(f"metrics.{N.RT_SUGGESTION_PREFIX}")
                rows.append((opt, rule, lr, rule == newest.get("params.suggestion")))
    return pd.DataFrame(rows, columns=cols)


def _experiment(client: MlflowClient, name: str):
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise UserInputError(f"no MLflow experiment named {name!r} in this tracking store")
    return exp


def _experiment_of_study(client: MlflowClient, study: str):
    """The experiment holding a study: the one named like it, else the one of its parent runs
    (a study may log into an experiment with another name)."""
    exp = client.get_experiment_by_name(study)
    if exp is not None:
        return exp
    exps = client.search_experiments()
    parents = _search(
        client, [e.experiment_id for e in exps], f"tags.`{N.TAG_KIND}` = '{N.KIND_STUDY}'"
    )
    hits = [p for p in parents if p.data.tags.get(N.TAG_STUDY) == study]
    if not hits:
        raise UserInputError(f"no study named {study!r} in this tracking store")
    return client.get_experiment(hits[0].info.experiment_id)


def _locate(
    client: MlflowClient, study: str | None, experiment: str | None, parent_run_id: str | None
):
    """(experiment, study name or None) that a report request names."""
    if parent_run_id is not None:
        try:
            run = client.get_run(parent_run_id)
        except Exception as exc:  # MlflowException(RESOURCE_DOES_NOT_EXIST) and friends
            raise UserInputError(f"no MLflow run with id {parent_run_id!r}") from exc
        if run.data.tags.get(N.TAG_KIND) != N.KIND_STUDY:
            raise UserInputError(f"run {parent_run_id} is not an lrstudy parent (study) run")
        return client.get_experiment(run.info.experiment_id), run.data.tags.get(N.TAG_STUDY)
    if experiment is not None:
        return _experiment(client, experiment), study
    if study is not None:
        return _experiment_of_study(client, study), study
    raise UserInputError("name a study, an experiment or a parent run id to report on")


def _only_study(parents: pd.DataFrame, exp_name: str) -> str | None:
    """The one study an experiment holds (None: plain or plugin runs only)."""
    studies = sorted(set(_col(parents, f"tags.{N.TAG_STUDY}").dropna())) if len(parents) else []
    if len(studies) > 1:
        raise UserInputError(
            f"experiment {exp_name!r} holds several studies ({', '.join(studies)}): pass a study name"
        )
    return studies[0] if studies else None


def _candidate_runs(client: MlflowClient, exp_id: str, study: str | None) -> pd.DataFrame:
    """A study's trial runs; without a study, every run but our other kinds (plugin runs, or
    plain runs of someone's own loop)."""
    if study is not None:
        runs = runs_frame(_search(client, [exp_id], f"tags.`{N.TAG_KIND}` = '{N.KIND_TRIAL}'"))
        return runs[_col(runs, f"tags.{N.TAG_STUDY}") == study] if not runs.empty else runs
    runs = runs_frame(_search(client, [exp_id], ""))
    if runs.empty:
        return runs
    kind = _col(runs, f"tags.{N.TAG_KIND}")
    return runs[kind.isna() | (kind == N.KIND_PLUGIN)]


def _parent_summary(parents: pd.DataFrame) -> dict | None:
    """The newest parent run as run_id, status, start_time, params and tags."""
    if parents.empty:
        return None
    p = parents.iloc[0]  # runs_frame sorts newest first

    def prefixed(prefix: str) -> dict:
        return {
            c[len(prefix) :]: p[c]
            for c in parents.columns
            if c.startswith(prefix) and pd.notna(p[c])
        }

    return {"run_id": p["run_id"], "status": p["status"], "start_time": int(p["start_time"]),
            "params": prefixed("params."), "tags": prefixed("tags.")}  # fmt: skip


_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def logged_spec(client: MlflowClient, run_id: str) -> dict | None:
    """The resolved spec a parent run logged (artifact study.yaml), or None when out of reach."""
    import os
    import tempfile
    from pathlib import Path

    import yaml

    saved = os.environ.get(_PROGRESS_BAR)
    os.environ[_PROGRESS_BAR] = "false"  # MLflow draws a bar for every download
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, N.SPEC_ARTIFACT, tmp)
            spec = yaml.safe_load(Path(local).read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - a missing artifact only means: versions by hash alone
        return None
    finally:
        if saved is None:
            os.environ.pop(_PROGRESS_BAR, None)
        else:
            os.environ[_PROGRESS_BAR] = saved
    return spec if isinstance(spec, dict) else None


def _current_version(
    client: MlflowClient, parents: pd.DataFrame, runs: pd.DataFrame
) -> tuple[pd.DataFrame, Version | None, LeftOut | None]:
    """Keep the trial runs of the study's current definition: the newest parent run's spec
    (its hash, and the keys of its logged spec re-planned); see `lrstudy.report.versions`."""
    hashes = _col(parents, f"tags.{N.TAG_SPEC_HASH}")
    if parents.empty or pd.isna(hashes.iloc[0]) or not hashes.iloc[0]:
        return runs, None, None
    current_hash = str(hashes.iloc[0])
    trial_hashes = set(_col(runs, f"tags.{N.TAG_SPEC_HASH}").dropna()) - {current_hash}
    if not trial_hashes:  # every trial run is of the current spec: nothing to decide
        return runs, Version.of(current_hash), None
    spec = logged_spec(client, parents.iloc[0]["run_id"])
    version = Version.of(current_hash, plan_keys(spec, current_hash))
    kept, left = current_trials(runs, version)
    if left is None:
        return kept, version, None
    differs = {}
    for h in left.counts:
        older = parents[hashes == h]
        if len(older):
            differs[h] = spec_difference(logged_spec(client, older.iloc[0]["run_id"]), spec)
    return kept, version, LeftOut(left.counts, differs)


def find_study(
    client: MlflowClient,
    *,
    study: str | None = None,
    experiment: str | None = None,
    parent_run_id: str | None = None,
) -> StudyRuns:
    """Locate a study (or an experiment of plugin runs) and read its runs.

    Raises:
        UserInputError: no such experiment/run, an ambiguous experiment, or no usable runs.
    """
    exp, study = _locate(client, study, experiment, parent_run_id)
    parents = runs_frame(
        _search(client, [exp.experiment_id], f"tags.`{N.TAG_KIND}` = '{N.KIND_STUDY}'")
    )
    if study is None:
        study = _only_study(parents, exp.name)
    if study is not None:
        parents = parents[_col(parents, f"tags.{N.TAG_STUDY}") == study]
    chosen, ignored = pick_trials(_candidate_runs(client, exp.experiment_id, study))
    version, left_out = None, None
    if study is not None and not chosen.empty:
        chosen, version, left_out = _current_version(client, parents, chosen)
    stopped = _col(chosen, f"tags.{N.TAG_OUTCOME}") == N.OUTCOME_PRUNED
    pruned, chosen = chosen[stopped].reset_index(drop=True), chosen[~stopped].reset_index(drop=True)
    if chosen.empty:
        what = f"study {study!r}" if study else f"experiment {exp.name!r}"
        if left_out is not None:
            raise UserInputError(
                f"{what} has no finished trial runs of its current version ({left_out.note()})"
            )
        raise UserInputError(f"{what} has no finished trial runs to report on")
    return StudyRuns(
        experiment_id=exp.experiment_id,
        experiment_name=exp.name,
        study=study,
        parent=_parent_summary(parents),
        n_parents=len(parents),
        runs=chosen,
        ignored=ignored,
        range_tests=_range_tests(client, exp.experiment_id, study),
        left_out=left_out,
        version=version,
        pruned=pruned,
    )
