"""Metric rows written in bulk into MLflow's own SQL tables, with `log_batch`'s exact semantics.

Why: `log_batch` builds an ORM object per row, runs a unit of work and takes at most 1000 rows per
call: 74-100 us per value on sqlite (design.md, "MLflow write cost"), against ~5 us per row for one
Core `INSERT` through the store's engine. bench/bench_metric_writes.py measures both side by side
(2026-11-30, shared 2-core box under load: 5-8x the values per second). A study writes ~100k
per-step values, so the writer process (lrstudy.track.writer) uses this for `sqlite:` and
`postgresql:` stores; tracking servers keep the REST path.

What is matched, read from mlflow 3.17.2's `mlflow/store/tracking/sqlalchemy_store.py`
(tests/test_bulk_metrics.py proves a store written either way reads back identically):
- validation: `log_batch` → `_validate_batch_log_data` → `_validate_metric` per row (name,
  numeric non-bool value, timestamp >= 0, numeric step) and `_validate_run_id`; values go
  through the client's `convert_metric_value_to_float_if_possible` first
  (`TrackingServiceClient.log_batch`, which also turns a bool into 1.0).
- the run must exist and be *active* (lifecycle stage, not status): `_get_run` +
  `_check_run_is_active`, same exceptions and messages.
- values: `sanitize_metric_value`: NaN is stored as value 0 with `is_nan` true, ±inf as
  ±1.7976931348623157e308.
- duplicates: rows equal in the `metrics` primary key (key, timestamp, step, run_uuid, value,
  is_nan) are stored once, whether repeated inside a batch (`seen`/`metrics_by_id`) or already in
  the table (the IntegrityError recovery in `_log_metrics_once`): here `ON CONFLICT DO NOTHING`.
- latest: `_update_latest_metrics_if_necessary` keeps, per key, the row whose sanitized
  (step, timestamp, value) is strictly greater, scanning in logging order (first wins a tie).
  Here: the same scan over the batch, then an upsert whose `WHERE` is that strict comparison
  against the stored row, so it is also atomic between concurrent writers.
- `metrics` in 3.17 has no model_id/dataset columns; metrics with a model id go to
  `logged_model_metrics` (`_log_model_metrics`), which this module does not write: the writer
  keeps `log_batch` when an active model id is set in the environment.
One transaction per call; on sqlite MLflow's session pragmas (20 s busy timeout, foreign keys)
apply, so concurrent writer processes wait for each other instead of failing.

Proven on one schema only: pyproject allows mlflow 3.0-3.17, and another MLflow may have other
tables or rules. So `write_metrics` first reads the store's alembic revision and MLflow's
version; unless they are the ones above (`PROVEN_SCHEMA`, `PROVEN_MLFLOW`) it hands the rows to
the store's own `log_batch` (in 1000-row calls, values converted as the client does): slower,
never different.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

Row = tuple[str, float, int, int]  # (key, value, step, timestamp_ms), as MetricSink ships them
MLFLOW_MAX_FLOAT = 1.7976931348623157e308  # what sanitize_metric_value stores for +-inf
BULK_DIALECTS = ("sqlite", "postgresql")
# What this module's semantics were read from and tested against (mlflow 3.17.2): the store's
# `alembic_version` row (3.17's head migration) and MLflow's major.minor version.
PROVEN_SCHEMA = "dc11669786a5"
PROVEN_MLFLOW = "3.17"


def bulk_capable(uri: str) -> bool:
    """True for store URIs this module can write (`sqlite:`, `postgresql[+driver]:`)."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    return scheme in BULK_DIALECTS


def _prepare(run_id: str, rows: Iterable[Row]) -> tuple[list[dict], list[dict]]:
    """Validated, sanitized, de-duplicated metric rows and the batch's latest row per key."""
    from mlflow.tracking.metric_value_conversion_utils import (
        convert_metric_value_to_float_if_possible,
    )
    from mlflow.utils.validation import _validate_metric

    metrics: dict[tuple, dict] = {}  # PK identity → row; insertion order = logging order
    latest: dict[str, dict] = {}
    checked_keys: set[str] = set()
    for i, (key, value, step, ts) in enumerate(rows):
        if type(value) is not float:  # the client converts numpy/torch scalars and ints
            value = convert_metric_value_to_float_if_possible(value)
        # MLflow validates every row (~5 us each); rows with exactly-typed fields and a key already
        # validated cannot fail it, so only the others pay for the full check.
        if (
            type(value) is not float
            or type(step) is not int
            or type(ts) is not int
            or ts < 0
            or key not in checked_keys
        ):
            _validate_metric(key, value, ts, step, path=f"metrics[{i}]")
            checked_keys.add(key)
        is_nan = math.isnan(value)
        if is_nan:
            value = 0
        elif math.isinf(value):
            value = MLFLOW_MAX_FLOAT if value > 0 else -MLFLOW_MAX_FLOAT
        ident = (key, ts, step, value, is_nan)
        if ident in metrics:
            continue  # an exact duplicate cannot change the latest row either (strict compare)
        row = {"run_uuid": run_id, "key": key, "value": value, "timestamp": ts, "step": step}
        row["is_nan"] = is_nan
        metrics[ident] = row
        best = latest.get(key)
        if best is None or (step, ts, value) > (best["step"], best["timestamp"], best["value"]):
            latest[key] = row
    # Sorted by key: every transaction locks latest_metrics rows in the same order (PostgreSQL),
    # as MLflow sorts its keys to avoid deadlocks between concurrent batches.
    return list(metrics.values()), [latest[k] for k in sorted(latest)]


def _newer(new: Any, old: Any) -> Any:
    """SQL for `(new.step, new.timestamp, new.value) > (old.step, old.timestamp, old.value)`,
    spelled out rather than as a row-value comparison so every dialect reads it the same."""
    from sqlalchemy import and_, or_

    return or_(
        new.step > old.step,
        and_(
            new.step == old.step,
            or_(
                new.timestamp > old.timestamp,
                and_(new.timestamp == old.timestamp, new.value > old.value),
            ),
        ),
    )


def _statements(dialect: str) -> tuple[Any, Any]:
    """(INSERT into metrics ignoring PK duplicates, upsert into latest_metrics if newer)."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise ValueError(f"bulk metric writes support {BULK_DIALECTS}, not {dialect!r}")
    lm = SqlLatestMetric.__table__
    up = insert(lm)
    columns = ("value", "timestamp", "step", "is_nan")
    upsert = up.on_conflict_do_update(
        index_elements=[lm.c.key, lm.c.run_uuid],
        set_={c: up.excluded[c] for c in columns},
        where=_newer(up.excluded, lm.c),
    )
    return insert(SqlMetric.__table__).on_conflict_do_nothing(), upsert


@contextlib.contextmanager
def _engine_transaction(engine: Any) -> Iterator[Any]:
    """A connection in one transaction, with the pragmas MLflow's sessions set on sqlite."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # Before the first DML statement pysqlite has not begun a transaction yet, so these
            # take effect (foreign_keys is a no-op inside one).
            conn.exec_driver_sql("PRAGMA foreign_keys = ON")
            conn.exec_driver_sql("PRAGMA busy_timeout = 20000")
        yield conn
        conn.commit()


def _check_run_core(conn: Any, run_id: str) -> None:
    """`_get_run` + `_check_run_is_active` for a bare engine (same errors and messages)."""
    import sqlalchemy as sa
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
    from mlflow.store.tracking.dbmodels.models import SqlRun

    runs = SqlRun.__table__
    found = conn.execute(sa.select(runs.c.lifecycle_stage).where(runs.c.run_uuid == run_id)).all()
    if not found:
        raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
    if found[0][0] != LifecycleStage.ACTIVE:
        raise MlflowException(
            f"The run {run_id} must be in the 'active' state. Current state is {found[0][0]}.",
            INVALID_PARAMETER_VALUE,
        )


def write_metrics(store_or_engine: Any, run_id: str, rows: Iterable[Row]) -> int:
    """Store `rows` (key, value, step, timestamp_ms) for `run_id` as `log_batch` would.

    `store_or_engine` is an MLflow `SqlAlchemyStore` (preferred: its session maker maps database
    errors to MlflowException as `log_batch` does, and deadlocks are retried the same way) or a
    SQLAlchemy engine on an MLflow schema. Unlike `log_batch` there is no 1000-row cap: all rows
    go in one transaction. Returns how many distinct rows were sent (the database skips those it
    already holds, as `log_batch` does). On a store this module was not proven on (`not_proven`)
    the rows go through the store's `log_batch` instead, and all of them are counted; a bare
    engine there raises ValueError.
    """
    from mlflow.utils.validation import _validate_run_id

    rows = list(rows)
    if not rows:
        return 0  # log_batch with nothing to log returns before touching the store
    store = store_or_engine if hasattr(store_or_engine, "ManagedSessionMaker") else None
    engine = store.engine if store is not None else store_or_engine
    why_not = not_proven(engine)
    if why_not is not None:
        if store is None:
            raise ValueError(f"bulk metric writes: {why_not}; pass the store to use log_batch")
        return _log_batch(store, run_id, rows)
    _validate_run_id(run_id)
    metric_rows, latest_rows = _prepare(run_id, rows)
    insert_metrics, upsert_latest = _statements(engine.dialect.name)

    def once() -> int:
        if store is not None:
            with store.ManagedSessionMaker(read_only=False) as session:
                store._check_run_is_active(store._get_run(run_uuid=run_id, session=session))
                session.execute(insert_metrics, metric_rows)
                session.execute(upsert_latest, latest_rows)
        else:
            with _engine_transaction(engine) as conn:
                _check_run_core(conn, run_id)
                conn.execute(insert_metrics, metric_rows)
                conn.execute(upsert_latest, latest_rows)
        return len(metric_rows)

    retry = getattr(store, "_run_with_deadlock_retry", None)
    return retry(once) if retry is not None else once()


def schema_revision(engine: Any) -> str | None:
    """The store's alembic revision (MLflow's schema version), or None when it has none."""
    import sqlalchemy as sa

    try:
        with engine.connect() as conn:
            found = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    except sa.exc.SQLAlchemyError:
        return None
    return found[0][0] if len(found) == 1 else None


def not_proven(engine: Any) -> str | None:
    """None when the bulk path was proven on this store's schema and this MLflow, else why not."""
    import mlflow

    version = ".".join(mlflow.__version__.split(".")[:2])
    if version != PROVEN_MLFLOW:
        return f"proven on mlflow {PROVEN_MLFLOW}, this is {mlflow.__version__}"
    revision = schema_revision(engine)
    if revision != PROVEN_SCHEMA:
        return f"proven on schema revision {PROVEN_SCHEMA}, this store has {revision}"
    return None


def _log_batch(store: Any, run_id: str, rows: list[Row]) -> int:
    """The rows through the store's own `log_batch`, as `MlflowClient.log_batch` sends them."""
    from mlflow.entities import Metric
    from mlflow.tracking.metric_value_conversion_utils import (
        convert_metric_value_to_float_if_possible,
    )

    from lrstudy.names import MLFLOW_MAX_METRICS_PER_BATCH as step

    metrics = [
        Metric(key, convert_metric_value_to_float_if_possible(value), ts, s)
        for key, value, s, ts in rows
    ]
    for i in range(0, len(metrics), step):
        store.log_batch(run_id, metrics=metrics[i : i + step], params=[], tags=[])
    return len(metrics)


def store_for(uri: str) -> Any:
    """The SqlAlchemyStore behind an `sqlite:`/`postgresql:` URI (MLflow caches one per URI)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking import MlflowClient

    store = MlflowClient(tracking_uri=uri)._tracking_client.store
    if not isinstance(store, SqlAlchemyStore):
        raise ValueError(f"{uri!r} is not served by MLflow's SQLAlchemy store")
    return store
