"""The bulk metric path (lrstudy.track.bulk_metrics) stores exactly what `log_batch` stores.

Real stores only: sqlite in tmp_path, and PostgreSQL in a private cluster when one can be started
(tests/servers.py; skipped otherwise). The same rows go to run A through MlflowClient.log_batch and
to runs B* through the bulk path; everything is then compared through MLflow's public reads
(get_metric_history, get_run, search_runs) and the report's bulk history reader.
"""

from __future__ import annotations

import math
import os
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lrstudy import names
from lrstudy.report.history import read_histories
from lrstudy.track.bulk_metrics import (
    MLFLOW_MAX_FLOAT,
    PROVEN_SCHEMA,
    bulk_capable,
    not_proven,
    store_for,
    write_metrics,
)
from lrstudy.track.writer import WriterError, WriterProcess, bulk_enabled
from tests.servers import postgres_cluster, why_no_postgres

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["loss", "acc", "lr", "train/grad_norm"]
T0 = 1_700_000_000_000
Row = tuple[str, float, int, int]
_DB_NUMBERS = count()


def make_rows() -> list[Row]:
    """Rows with every case log_batch treats specially; > 1000 so log_batch needs several calls."""
    rng = random.Random(0)
    rows: list[Row] = []
    for i in range(2400):
        # Steps out of order and repeated, timestamps colliding: several values per step, some
        # with equal (step, timestamp), so the latest-row rule is exercised on its tie-breakers.
        key, step, ts = KEYS[i % 4], rng.randrange(400), T0 + rng.randrange(40)
        value = rng.choice([math.nan, math.inf, -math.inf]) if i % 97 == 0 else rng.random()
        rows.append((key, value, step, ts))
    rows += [
        ("lr", math.nan, 500, T0 + 99),  # the latest lr is NaN (the largest step) ...
        ("lr", math.nan, 500, T0 + 99),  # ... logged twice: one stored row
        ("loss", math.inf, 450, T0 + 5),
        ("loss", MLFLOW_MAX_FLOAT, 450, T0 + 5),  # +inf as stored: the same row
        ("tie", math.nan, 7, T0),  # NaN is stored as 0: a tie with the next row; first wins
        ("tie", 0.0, 7, T0),
        ("neg", -math.inf, 3, T0),
        ("neg", -1.0, 3, T0),
        ("loss", 0.25, 10_000, T0 + 100),  # latest loss < 0.5, acc >= 0.5: search filters hit
        ("acc", 0.75, 10_000, T0 + 100),
        ("acc", 0.5, 10_000, T0 + 100),  # same step and time, smaller value: not the latest
    ]
    rows += rows[100:130]  # exact duplicates arriving later, in another call
    return rows


ALL_KEYS = sorted({r[0] for r in make_rows()})


def _norm(v: float) -> float | str:
    return "nan" if math.isnan(v) else v


def snapshot(client: MlflowClient, run_id: str) -> dict:
    """Everything MLflow's reads say about a run's metrics, NaN made comparable."""
    history = {}
    for key in ALL_KEYS:
        points = [
            (m.timestamp, m.step, _norm(m.value)) for m in client.get_metric_history(run_id, key)
        ]
        # MLflow orders history by (timestamp, step, value) and leaves full ties unordered.
        history[key] = sorted(points, key=lambda p: (p[0], p[1], str(p[2])))
    run = client.get_run(run_id)
    latest = {m.key: (_norm(m.value), m.step, m.timestamp) for m in run.data._metric_objs}
    return {"history": history, "latest": latest}


def _log_batch(client: MlflowClient, run_id: str, rows: list[Row]) -> None:
    for i in range(0, len(rows), names.MLFLOW_MAX_METRICS_PER_BATCH):
        chunk = rows[i : i + names.MLFLOW_MAX_METRICS_PER_BATCH]
        client.log_batch(run_id, [Metric(k, v, ts, s) for k, v, s, ts in chunk], synchronous=True)


def _bulk(target, run_id: str, rows: list[Row], chunk: int) -> None:
    for i in range(0, len(rows), chunk):
        write_metrics(target, run_id, rows[i : i + chunk])


@pytest.fixture(scope="module")
def postgres() -> Iterator:
    reason = why_no_postgres()
    if reason is not None:
        pytest.skip(reason)
    with postgres_cluster() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store_uri(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/mlflow.db"
    pg = request.getfixturevalue("postgres")
    return pg.create_database(f"bulk_{next(_DB_NUMBERS)}")


def test_bulk_store_reads_back_like_log_batch(any_store_uri: str) -> None:
    client = MlflowClient(any_store_uri)
    exp = client.create_experiment("equivalence")
    rows = make_rows()
    store = store_for(any_store_uri)
    run = {name: client.create_run(exp, run_name=name).info.run_id for name in "ABCD"}
    other = client.create_run(exp, run_name="other").info.run_id
    _log_batch(client, run["A"], rows)
    _bulk(store, run["B"], rows, chunk=len(rows))  # one call, one transaction
    _bulk(store, run["C"], rows, chunk=333)  # many calls: latest rows compared in the database
    _bulk(store.engine, run["D"], rows, chunk=1000)  # a bare engine instead of the store
    _log_batch(client, other, [("loss", 0.9, 1, T0), ("acc", 0.1, 1, T0)])

    want = snapshot(client, run["A"])
    assert want["latest"]["lr"] == ("nan", 500, T0 + 99)
    assert want["latest"]["tie"] == ("nan", 7, T0)
    assert want["latest"]["acc"] == (0.75, 10_000, T0 + 100)
    assert sum(len(h) for h in want["history"].values()) > 2000
    for name in "BCD":
        assert snapshot(client, run[name]) == want, name

    # Search filters and ordering read latest_metrics: every bulk run must sit where A sits.
    label = {v: k for k, v in run.items()} | {other: "other"}
    for query, order in [
        ("metrics.loss < 0.5", ["metrics.loss ASC"]),
        ("metrics.acc >= 0.5", ["metrics.acc DESC"]),
        ("metrics.neg < 0", []),
        ("metrics.`train/grad_norm` > 0.5", ["metrics.`train/grad_norm` ASC"]),
        ("metrics.`train/grad_norm` <= 0.5", []),
        ("", ["metrics.loss DESC", "attributes.run_name ASC"]),
    ]:
        found = [label[r.info.run_id] for r in client.search_runs([exp], query, order_by=order)]
        assert set(found) & set("ABCD") in (set(), set("ABCD")), (query, found)
        if not query:
            assert found == ["other", "A", "B", "C", "D"], found  # loss 0.9, then 0.25 x 4
        elif "grad_norm" not in query:
            assert "A" in found and "other" not in found, (query, found)
        latest = {
            label[r.info.run_id]: {k: _norm(v) for k, v in r.data.metrics.items()}
            for r in client.search_runs([exp], query)
        }
        assert all(latest[n] == latest["A"] for n in "BCD" if n in latest)
    grad = [client.search_runs([exp], f"metrics.`train/grad_norm` {op} 0.5") for op in (">", "<=")]
    assert len(grad[0]) + len(grad[1]) == 4  # one of the two holds A..D (NaN matches neither)

    # The report's bulk reader (one SQL SELECT over `metrics`) reads the same points and curves.
    # Its "last logged value per step" is the row order of an unordered SELECT when two values of
    # a step share a timestamp; MLflow leaves that order open (PostgreSQL varies it), so those
    # steps are left out of the curve comparison.
    ambiguous = _steps_with_tied_last_values(rows)
    assert ambiguous  # make_rows has them on purpose
    points = {}
    curves = {}
    for name, rid in run.items():
        frame, points[name] = read_histories(client, {"g": ([rid], 1)}, ALL_KEYS, [])
        curves[name] = [
            (k, s, _norm(v))
            for k, s, v in frame[["key", "step", "value"]].itertuples(index=False)
            if (k, s) not in ambiguous
        ]
    assert points["A"] > 2000 and len(curves["A"]) > 1000
    for name in "BCD":
        assert points[name] == points["A"] and curves[name] == curves["A"], name


def _steps_with_tied_last_values(rows: list[Row]) -> set[tuple[str, int]]:
    """(key, step) whose latest timestamp carries more than one distinct value."""
    last: dict[tuple[str, int], tuple[int, set]] = {}
    for key, value, step, ts in rows:
        t, values = last.get((key, step), (ts, set()))
        if ts > t:
            t, values = ts, set()
        if ts == t:
            values.add(str(min(max(value, -MLFLOW_MAX_FLOAT), MLFLOW_MAX_FLOAT)))
        last[(key, step)] = (t, values)
    return {ks for ks, (_, values) in last.items() if len(values) > 1}


def test_errors_match_log_batch(store_uri: str) -> None:
    client = MlflowClient(store_uri)
    exp = client.create_experiment("errors")
    store = store_for(store_uri)
    live = client.create_run(exp).info.run_id
    deleted = client.create_run(exp).info.run_id
    client.delete_run(deleted)
    finished = client.create_run(exp).info.run_id
    client.set_terminated(finished)
    good = [("loss", 0.5, 1, T0)]

    def outcome(fn, run_id: str, rows: list[Row]) -> str | None:
        try:
            fn(run_id, rows)
        except MlflowException as e:
            return e.error_code
        return None

    via_batch = lambda r, rows: _log_batch(client, r, rows)  # noqa: E731
    via_bulk = lambda r, rows: write_metrics(store, r, rows)  # noqa: E731
    cases = [
        (deleted, good),  # lifecycle stage must be active
        ("0" * 32, good),  # no such run
        (finished, good),  # a FINISHED run is still active: accepted
        (live, [("loss", True, 1, T0)]),  # the client turns a bool into 1.0
        (live, [("loss", 0.5, 1, -5)]),  # negative timestamp
        (live, [("loss", "x", 1, T0)]),  # not a number
        (live, [("../up", 0.5, 1, T0)]),  # not a valid metric name
    ]
    for run_id, rows in cases:
        assert outcome(via_batch, run_id, rows) == outcome(via_bulk, run_id, rows), rows
    assert outcome(via_bulk, deleted, good) == "INVALID_PARAMETER_VALUE"
    assert outcome(via_bulk, "0" * 32, good) == "RESOURCE_DOES_NOT_EXIST"
    # One transaction per call: a bad row anywhere stores nothing of the call.
    with pytest.raises(MlflowException):
        write_metrics(store, live, [("acc", 0.1, i, T0) for i in range(1500)] + [("acc", 1, 0, -1)])
    assert client.get_metric_history(live, "acc") == []
    assert write_metrics(store, live, []) == 0


def test_writer_process_uses_the_bulk_path_unless_turned_off(store_uri: str, monkeypatch) -> None:
    client = MlflowClient(store_uri)
    exp = client.create_experiment("writer")
    # A frame of 1500 rows with a bad last row tells the paths apart: the bulk path stores the
    # frame in one transaction (nothing), log_batch stores its first 1000-row chunk.
    frame = [("loss", 0.5, i, T0) for i in range(1499)] + [("loss", 0.5, 1499, -1)]
    stored = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("LRSTUDY_BULK_METRICS", flag)
        run_id = client.create_run(exp).info.run_id
        w = WriterProcess(store_uri)
        try:
            w.wait_ready()
            with pytest.raises(WriterError, match="INVALID_PARAMETER_VALUE|Invalid value"):
                w.write(run_id, frame)
            w.write(run_id, [("acc", 0.9, 0, T0)])  # the writer carries on after an error
        finally:
            w.close()
        stored[flag] = len(client.get_metric_history(run_id, "loss"))
        assert client.get_run(run_id).data.metrics["acc"] == 0.9
    assert stored == {"1": 0, "0": 1000}


def test_bulk_path_is_chosen_for_sql_stores_only(monkeypatch) -> None:
    monkeypatch.delenv("LRSTUDY_BULK_METRICS", raising=False)
    monkeypatch.delenv("MLFLOW_ACTIVE_MODEL_ID", raising=False)
    for uri in ("sqlite:///x.db", "postgresql://u@h/db", "postgresql+psycopg2://u@h/db"):
        assert bulk_capable(uri) and bulk_enabled(uri), uri
    for uri in ("http://127.0.0.1:5000", "https://host", "mysql://u@h/db", "databricks", "file:x"):
        assert not bulk_capable(uri) and not bulk_enabled(uri), uri
    monkeypatch.setenv("LRSTUDY_BULK_METRICS", "0")
    assert not bulk_enabled("sqlite:///x.db")
    monkeypatch.setenv("LRSTUDY_BULK_METRICS", "1")
    monkeypatch.setenv("MLFLOW_ACTIVE_MODEL_ID", "m-123")  # log_batch would also log model metrics
    assert not bulk_enabled("sqlite:///x.db")


def test_concurrent_writer_processes_share_one_sqlite_store(store_uri: str) -> None:
    client = MlflowClient(store_uri)
    exp = client.create_experiment("concurrent")
    runs = [client.create_run(exp).info.run_id for _ in range(4)]
    n = 6000
    errors: list[BaseException] = []

    def feed(run_id: str) -> None:
        w = WriterProcess(store_uri)
        try:
            rows = [(KEYS[i % 3], float(i), i // 3, T0 + i) for i in range(n)]
            for i in range(0, n, 500):
                w.write(run_id, rows[i : i + 500])
        except BaseException as e:  # noqa: BLE001 - re-raised below in the test thread
            errors.append(e)
        finally:
            w.close()

    threads = [threading.Thread(target=feed, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for run_id in runs:
        assert len(client.get_metric_history(run_id, "loss")) == n // 3
        assert client.get_run(run_id).data.metrics == {
            "loss": float(n - 3),
            "acc": float(n - 2),
            "lr": float(n - 1),
        }


def _trial_curves(uri: str) -> dict[str, dict[str, list]]:
    """trial key → metric key → sorted (step, value), plus the latest values; wall-clock metrics
    (`*seconds*`) left out, timestamps too (they differ between two runs of a study)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke")
    out = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        if run.data.tags.get(names.TAG_KIND) != names.KIND_TRIAL:
            continue
        curves = {}
        for key in run.data.metrics:
            if "seconds" in key:
                continue
            hist = client.get_metric_history(run.info.run_id, key)
            curves[key] = sorted((m.step, str(m.value)) for m in hist)
        latest = {m.key: (m.step, str(m.value)) for m in run.data._metric_objs}
        curves["(latest)"] = sorted(v for k, v in latest.items() if "seconds" not in k)
        out[run.data.tags[names.TAG_TRIAL_KEY]] = curves
    return out


def test_smoke_study_stores_the_same_curves_with_and_without_bulk(tmp_path: Path) -> None:
    procs = {}
    for flag in ("1", "0"):
        uri = f"sqlite:///{tmp_path}/bulk{flag}/mlflow.db"
        (tmp_path / f"bulk{flag}").mkdir()
        cmd = [sys.executable, "-m", "lrstudy", "run", str(ROOT / "studies" / "smoke.yaml")]
        cmd += ["--tracking-uri", uri, "--no-report", "--workers", "1"]
        env = {**os.environ, "LRSTUDY_BULK_METRICS": flag}
        procs[uri] = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
    for p in procs.values():
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out.decode(errors="replace")[-3000:]
    with_bulk, without = (_trial_curves(uri) for uri in procs)
    assert len(with_bulk) == 12 and with_bulk.keys() == without.keys()
    assert sum(len(c) for t in with_bulk.values() for c in t.values()) > 500
    for key in with_bulk:
        assert with_bulk[key] == without[key], key


def test_a_store_of_another_schema_falls_back_to_log_batch(store_uri: str) -> None:
    # The bulk path copies mlflow 3.17.2's table semantics; pyproject allows mlflow 3.0-3.17. A
    # store whose alembic revision says another schema gets log_batch, and reads back the same.
    client = MlflowClient(store_uri)
    exp = client.create_experiment("fallback")
    rows = make_rows()
    store = store_for(store_uri)
    assert not_proven(store.engine) is None  # this MLflow's own fresh store: proven
    want, got = (client.create_run(exp, run_name=n).info.run_id for n in ("log_batch", "bulk"))
    _log_batch(client, want, rows)
    db = store_uri.removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = 'a1b2c3d4e5f6'")
    assert not_proven(store.engine) == (
        f"proven on schema revision {PROVEN_SCHEMA}, this store has a1b2c3d4e5f6"
    )
    distinct = len({(k, "nan" if math.isnan(v) else v, s, t) for k, v, s, t in rows})
    assert distinct < len(rows)  # the bulk path would count the distinct rows it sent ...
    assert write_metrics(store, got, rows) == len(rows)  # ... log_batch is handed every row
    assert snapshot(client, got) == snapshot(client, want)
    with pytest.raises(ValueError, match="this store has a1b2c3d4e5f6"):
        write_metrics(store.engine, got, rows)  # a bare engine has no log_batch to fall back to
