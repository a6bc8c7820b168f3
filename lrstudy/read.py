"""The only MLflow reader: a study's runs and metric histories, as tidy pandas frames.

Reading speed, measured on the shared 2-core box (sqlite store of 100 runs x 2000 steps x 3
per-step keys + epoch metrics = 467k points, mlflow 3.17.2, load ~2):

  MlflowClient.get_metric_history, one call per run per key ............. 19.6 s
  the same through a pool of 8 threads .................................... 20.7 s (sqlite serialises)
  SqlAlchemyStore.get_metric_history_bulk, one query per key .............. 13.9 s (an ORM object per row)
  SqlAlchemyStore.get_metric_history_bulk_interval, 500 points per run .... 14.8 s (SQLite plans each
      per-run query on the (key, ...) primary key, so every run scans all rows of that key)
  one SQLAlchemy Core SELECT over MLflow's `metrics` table, all points ...  2.5 s (1.7 fetch + 0.8 frame)
  the same keeping every k-th step (k = total_steps // 500) ..............  see bench/bench_report.py

So for SQL stores we issue one Core SELECT per chunk of runs against MLflow's own table model
(`mlflow.store.tracking.dbmodels.models.SqlMetric`) through the store's session, and downsample
there: per-step keys keep every k-th step (all duplicates of a kept step come along, so the
"last logged value per step" rule stays exact); epoch keys and diverged runs (short) are read in
full. Tracking servers get the REST `get-history-bulk-interval` endpoint (server-side sampling);
any other store, or a failure of the fast path, falls back to get_metric_history in a thread pool.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from lrstudy import names as N
from lrstudy.errors import UserInputError

MAX_POINTS = 500  # per curve: enough for a 1000-px-wide figure; SVG size grows with points
RUN_CHUNK = 100  # run ids per SQL IN (...) / per REST request (the server's own cap is 100)
MLFLOW_MAX_FLOAT = 1.7976931348623157e308  # MLflow stores +-Inf as +-this
HISTORY_COLUMNS = ["run_id", "key", "step", "timestamp", "value"]


@dataclass
class StudyRuns:
    """What the report needs to know about one study, as read from MLflow."""

    experiment_id: str
    experiment_name: str
    study: str | None  # None for an experiment of plugin runs
    parent: dict | None  # newest parent run: run_id, status, start_time, params, tags
    n_parents: int
    runs: (
        pd.DataFrame
    )  # chosen runs: run_id, run_name, status, start_time, end_time, tags.*, params.*, metrics.*
    ignored: dict[str, int]  # why runs were left out -> count
    range_tests: pd.DataFrame  # optimizer, rule, lr, recommended


def clamp_to_inf(values: np.ndarray) -> np.ndarray:
    """Undo MLflow's clamping: +-1.797e308 back to +-inf (NaN stays NaN)."""
    values = np.asarray(values, dtype=float).copy()
    values[values >= MLFLOW_MAX_FLOAT] = np.inf
    values[values <= -MLFLOW_MAX_FLOAT] = -np.inf
    return values


def clean_history(raw: pd.DataFrame) -> pd.DataFrame:
    """Raw points → one value per (run, key, step): the last logged one (a resumed run re-logs
    steps), clamped Inf restored. Returns columns run_id, key, step, value, sorted."""
    if raw.empty:
        return pd.DataFrame({"run_id": [], "key": [], "step": [], "value": []}).astype(
            {"run_id": str, "key": str, "step": "int64", "value": float}
        )
    df = raw.sort_values(["run_id", "key", "step", "timestamp"], kind="stable")
    df = df.drop_duplicates(["run_id", "key", "step"], keep="last")
    out = pd.DataFrame(
        {
            "run_id": df["run_id"].astype(str).to_numpy(),
            "key": df["key"].astype(str).to_numpy(),
            "step": df["step"].to_numpy(dtype="int64"),
            "value": clamp_to_inf(df["value"].to_numpy(dtype=float)),
        }
    )
    return out.reset_index(drop=True)


def _search(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def runs_frame(runs: Iterable) -> pd.DataFrame:
    """MLflow Run objects → one row each; metric values with clamped Inf restored."""
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
        row.update(
            {
                f"metrics.{k}": float(clamp_to_inf(np.array([v]))[0])
                for k, v in r.data.metrics.items()
            }
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
    """Per trial key the newest FINISHED run with outcome ok/diverged (or no outcome tag: plugin
    runs); returns (chosen, {reason: count} of the runs left out)."""
    if df.empty:
        return df, {}
    outcome = _col(df, f"tags.{N.TAG_OUTCOME}")
    usable = (df["status"] == "FINISHED") & (
        outcome.isna() | outcome.isin([N.OUTCOME_OK, N.OUTCOME_DIVERGED])
    )
    key = _col(df, f"tags.{N.TAG_TRIAL_KEY}").fillna(df["run_id"])
    ordered = (
        df[usable]
        .assign(_key=key[usable])
        .sort_values("start_time", ascending=False, kind="stable")
    )
    chosen = ordered.drop_duplicates("_key", keep="first").drop(columns="_key")
    ignored: dict[str, int] = {}
    for _, row in df[~df["run_id"].isin(chosen["run_id"])].iterrows():
        why = (
            "superseded by a newer run of the same trial"
            if usable[_]
            else f"status {row['status']}"
        )
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
    if parent_run_id is not None:
        try:
            run = client.get_run(parent_run_id)
        except Exception as exc:  # MlflowException(RESOURCE_DOES_NOT_EXIST) and friends
            raise UserInputError(f"no MLflow run with id {parent_run_id!r}") from exc
        if run.data.tags.get(N.TAG_KIND) != N.KIND_STUDY:
            raise UserInputError(f"run {parent_run_id} is not an lrstudy parent (study) run")
        study = run.data.tags.get(N.TAG_STUDY)
        exp = client.get_experiment(run.info.experiment_id)
    elif experiment is not None:
        exp = _experiment(client, experiment)
    elif study is not None:
        exp = client.get_experiment_by_name(study)
        if exp is None:  # the study may log into an experiment with another name
            exps = client.search_experiments()
            parents = _search(
                client, [e.experiment_id for e in exps], f"tags.`{N.TAG_KIND}` = '{N.KIND_STUDY}'"
            )
            hits = [p for p in parents if p.data.tags.get(N.TAG_STUDY) == study]
            if not hits:
                raise UserInputError(f"no study named {study!r} in this tracking store")
            exp = client.get_experiment(hits[0].info.experiment_id)
    else:
        raise UserInputError("name a study, an experiment or a parent run id to report on")

    parents = runs_frame(
        _search(client, [exp.experiment_id], f"tags.`{N.TAG_KIND}` = '{N.KIND_STUDY}'")
    )
    if study is None and not parents.empty:
        studies = sorted(set(_col(parents, f"tags.{N.TAG_STUDY}").dropna()))
        if len(studies) > 1:
            raise UserInputError(
                f"experiment {exp.name!r} holds several studies ({', '.join(studies)}): pass a study name"
            )
        study = studies[0] if studies else None
    if study is not None:
        parents = parents[_col(parents, f"tags.{N.TAG_STUDY}") == study]
        runs = runs_frame(
            _search(client, [exp.experiment_id], f"tags.`{N.TAG_KIND}` = '{N.KIND_TRIAL}'")
        )
        runs = runs[_col(runs, f"tags.{N.TAG_STUDY}") == study] if not runs.empty else runs
    else:  # plugin runs, or plain runs of someone's own loop: everything but our other kinds
        runs = runs_frame(_search(client, [exp.experiment_id], ""))
        if not runs.empty:
            kind = _col(runs, f"tags.{N.TAG_KIND}")
            runs = runs[kind.isna() | (kind == N.KIND_PLUGIN)]
    chosen, ignored = pick_trials(runs)
    if chosen.empty:
        what = f"study {study!r}" if study else f"experiment {exp.name!r}"
        raise UserInputError(f"{what} has no finished trial runs to report on")
    parent = None
    if not parents.empty:
        p = parents.iloc[0]
        parent = {
            "run_id": p["run_id"],
            "status": p["status"],
            "start_time": int(p["start_time"]),
            "params": {
                c[7:]: p[c] for c in parents.columns if c.startswith("params.") and pd.notna(p[c])
            },
            "tags": {
                c[5:]: p[c] for c in parents.columns if c.startswith("tags.") and pd.notna(p[c])
            },
        }
    return StudyRuns(
        experiment_id=exp.experiment_id,
        experiment_name=exp.name,
        study=study,
        parent=parent,
        n_parents=len(parents),
        runs=chosen,
        ignored=ignored,
        range_tests=_range_tests(client, exp.experiment_id, study),
    )


# --- metric histories ----------------------------------------------------------------------------


def _sql_points(store, run_ids: list[str], keys: list[str], stride: int) -> pd.DataFrame:
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    m = SqlMetric
    frames = []
    with store.ManagedSessionMaker() as session:
        for i in range(0, len(run_ids), RUN_CHUNK):
            q = sa.select(m.run_uuid, m.key, m.step, m.timestamp, m.value, m.is_nan).where(
                m.run_uuid.in_(run_ids[i : i + RUN_CHUNK]), m.key.in_(keys)
            )
            if stride > 1:
                q = q.where((m.step % stride) == 0)
            rows = session.execute(q).all()
            if rows:
                cols = list(zip(*rows, strict=True))
                value = np.fromiter(cols[4], float, len(rows))
                value[np.fromiter(cols[5], bool, len(rows))] = np.nan
                frames.append(
                    pd.DataFrame(
                        {
                            "run_id": cols[0],
                            "key": cols[1],
                            "step": np.fromiter(cols[2], "int64"),
                            "timestamp": np.fromiter(cols[3], "int64"),
                            "value": value,
                        }
                    )  # fmt: skip
                )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=HISTORY_COLUMNS)


def _rest_points(store, run_ids: list[str], keys: list[str], max_points: int) -> pd.DataFrame:
    from mlflow.utils.rest_utils import http_request

    rows = []
    for key in keys:
        for i in range(0, len(run_ids), RUN_CHUNK):
            resp = http_request(
                store.get_host_creds(),
                "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval",
                "GET",
                params={
                    "run_ids": run_ids[i : i + RUN_CHUNK],
                    "metric_key": key,
                    "max_results": max_points,
                },
            )
            resp.raise_for_status()
            for m in resp.json().get("metrics", []):
                rows.append(
                    (
                        m["run_id"],
                        m["key"],
                        int(m.get("step", 0)),
                        int(m.get("timestamp", 0)),
                        float(m["value"]),
                    )
                )
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def _client_points(client: MlflowClient, run_ids: list[str], keys: list[str]) -> pd.DataFrame:
    def one(arg):
        rid, key = arg
        return [
            (rid, key, m.step, m.timestamp, m.value) for m in client.get_metric_history(rid, key)
        ]

    with ThreadPoolExecutor(8) as pool:
        rows = [
            r for chunk in pool.map(one, [(r, k) for r in run_ids for k in keys]) for r in chunk
        ]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def read_histories(
    client: MlflowClient,
    plan: dict[str, tuple[list[str], int]],
    keys_per_step: list[str],
    keys_per_epoch: list[str],
    max_points: int = MAX_POINTS,
) -> tuple[pd.DataFrame, int]:
    """Read metric histories in bulk.

    Args:
        plan: group name → (run ids, step stride); per-step keys of a group keep steps that are
            multiples of its stride (1 = all).
        keys_per_step / keys_per_epoch: metric keys to read (absent keys are simply empty).
    Returns:
        (clean long frame run_id/key/step/value, number of raw points read).
    """
    from mlflow.store.tracking.rest_store import RestStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = client._tracking_client.store  # the documented store methods are too slow; see above
    all_ids = sorted({r for ids, _ in plan.values() for r in ids})
    parts: list[pd.DataFrame] = []
    try:
        if isinstance(store, SqlAlchemyStore):
            for ids, stride in plan.values():
                parts.append(_sql_points(store, sorted(ids), keys_per_step, stride))
            parts.append(_sql_points(store, all_ids, keys_per_epoch, 1))
        elif isinstance(store, RestStore):
            parts.append(_rest_points(store, all_ids, keys_per_step + keys_per_epoch, max_points))
        else:
            raise TypeError(type(store).__name__)
    except Exception:  # unknown store, or an MLflow schema we don't know: the slow public path
        parts = [_client_points(client, all_ids, keys_per_step + keys_per_epoch)]
    raw = pd.concat(
        [p for p in parts if not p.empty] or [pd.DataFrame(columns=HISTORY_COLUMNS)],
        ignore_index=True,
    )
    return clean_history(raw), len(raw)
