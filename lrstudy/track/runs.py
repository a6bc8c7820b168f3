"""Study and trial runs in MLflow: create, tag, finish, and find what is already done.

A study invocation is a parent run; each trial a child run (MLflow's `mlflow.parentRunId` tag).
Resume works on trial keys: a key with a FINISHED run (outcome ok or diverged) is done; anything
else is run again. A process killed with SIGKILL leaves its run RUNNING forever (MLflow has no
heartbeat), so runs whose recorded pid is gone on this host are closed as KILLED first.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from typing import Any

from lrstudy import __version__, names

_FINISHED = "FINISHED"
_PAGE = 1000


def _param_value(v: Any) -> str:
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, sort_keys=True, default=list)
    return str(v)


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    """Log params in one round trip per 100 (MLflow's per-call limit)."""
    from mlflow.entities import Param

    items = [Param(k, _param_value(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100], synchronous=True)


def set_tags(client, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)


def _process_tags() -> dict[str, str]:
    return {names.TAG_PID: str(os.getpid()), names.TAG_HOST: socket.gethostname()}


def start_run(
    client, experiment_id: str, *, name: str, tags: dict[str, Any], parent_id: str | None = None
) -> str:
    """Create a RUNNING run tagged with the lrstudy version and this process (for orphan checks)."""
    all_tags = {names.TAG_VERSION: __version__, **_process_tags(), **tags}
    if parent_id:
        all_tags[names.PARENT_RUN_ID] = parent_id
    run = client.create_run(
        experiment_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()}
    )
    return run.info.run_id


def end_run(
    client, run_id: str, *, outcome: str | None = None, extra_tags: dict | None = None
) -> None:
    """Finish a run: MLflow status follows the outcome (ok/diverged FINISHED, failed, killed)."""
    status = {
        names.OUTCOME_FAILED: "FAILED",
        names.OUTCOME_KILLED: "KILLED",
    }.get(outcome or names.OUTCOME_OK, _FINISHED)
    tags = dict(extra_tags or {})
    if outcome:
        tags[names.TAG_OUTCOME] = outcome
    if tags:
        set_tags(client, run_id, tags)
    client.set_terminated(run_id, status=status, end_time=int(time.time() * 1000))


def search_study_runs(client, experiment_id: str, kind: str, study: str | None = None) -> list:
    """All runs of one kind (trial, study, ...) in the experiment, optionally of one study."""
    runs: list = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{names.TAG_KIND}` = '{kind}'",
            max_results=_PAGE,
            page_token=token,
            order_by=["attributes.start_time ASC"],
        )
        runs.extend(r for r in page if study is None or r.data.tags.get(names.TAG_STUDY) == study)
        token = page.token
        if not token:
            return runs


def finished_trials(runs: Iterable) -> dict[str, Any]:
    """trial key -> its finished run (outcome ok or diverged): these are skipped on resume."""
    done: dict[str, Any] = {}
    for r in runs:
        tags = r.data.tags
        if r.info.status == _FINISHED and tags.get(names.TAG_OUTCOME) in (
            names.OUTCOME_OK,
            names.OUTCOME_DIVERGED,
        ):
            done[tags.get(names.TAG_TRIAL_KEY, "")] = r
    return done


def close_orphans(client, runs: Iterable) -> list[str]:
    """Mark RUNNING runs whose process is gone as KILLED (outcome killed); return their ids.

    Only runs started on this host are judged (we cannot see another machine's processes); a
    run whose pid is still alive belongs to a concurrent invocation and is left alone.
    """
    host = socket.gethostname()
    closed = []
    for r in runs:
        if r.info.status != "RUNNING":
            continue
        tags = r.data.tags
        if tags.get(names.TAG_HOST) != host or _alive(tags.get(names.TAG_PID)):
            continue
        end_run(client, r.info.run_id, outcome=names.OUTCOME_KILLED)
        closed.append(r.info.run_id)
    return closed


def _alive(pid: str | None) -> bool:
    if not pid or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
