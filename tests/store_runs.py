"""Reading a test's store back: the runs of one kind in one experiment (tests share it)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mlflow.tracking import MlflowClient

from lrstudy import names


def kind_runs(uri: str, experiment: str, kind: str = names.KIND_TRIAL) -> list:
    """Every active run of `kind` (trial runs by default) in `experiment`; [] if it is absent."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get(names.TAG_KIND) == kind]


def count_rows(db: Path, sql: str) -> int:
    """A count from a sqlite store read-only while others write to it; 0 before it exists."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0
