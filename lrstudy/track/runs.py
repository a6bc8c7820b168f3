"""Study and trial runs in MLflow: create, tag, finish, and find what is already done.

A study invocation is a parent run; each trial a child run (MLflow's `mlflow.parentRunId` tag).
Resume works on trial keys: a key with a FINISHED run (outcome ok, diverged or pruned) is done; anything
else is run again. Who may run a trial is decided by claims (`lrstudy.track.claims`): a run
RUNNING without a fresh heartbeat, or whose pid is gone in our own pid space (same boot of the
same machine and same pid namespace: `process_identity`), is closed as KILLED.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from lrstudy import __version__, names

_FINISHED = "FINISHED"


def _param_value(v: Any) -> str:
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, sort_keys=True, default=list)
    return str(v)


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    """Log params in one round trip per 100 (MLflow's per-call limit)."""
    from mlflow.entities import Param

    items = [Param(k, _param_value(v)[:6000]) for k, v in params.items()]
    step = names.MLFLOW_MAX_PARAMS_PER_BATCH
    for i in range(0, len(items), step):
        client.log_batch(run_id, params=items[i : i + step], synchronous=True)


def set_tags(client, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()], synchronous=True)


def host() -> str:
    return socket.gethostname()


# Where a pid means something: the machine's boot (random per boot, shared by the containers of
# a machine) and the pid namespace (containers with host networking share the hostname, not
# the pids). Both must match ours before a pid is checked. (Tag names beside names.TAG_PID.)
TAG_BOOT_ID = "lrstudy.boot_id"
TAG_PID_NS = "lrstudy.pid_ns"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
_PID_NS = "/proc/self/ns/pid"


def process_identity() -> dict[str, str]:
    """{boot id tag: this boot, pid namespace tag: 'pid:[inode]'} for this process; a value we
    cannot read (not Linux, no /proc) is left out, and then no one ever checks our pid."""
    ident = {}
    with contextlib.suppress(OSError):
        boot = _BOOT_ID.read_text().strip()
        if boot:
            ident[TAG_BOOT_ID] = boot
    with contextlib.suppress(OSError):
        ident[TAG_PID_NS] = os.readlink(_PID_NS)
    return ident


def _process_tags() -> dict[str, str]:
    return {names.TAG_PID: str(os.getpid()), names.TAG_HOST: host(), **process_identity()}


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
    client,
    run_id: str,
    *,
    outcome: str | None = None,
    extra_tags: dict | None = None,
    end_time_s: float | None = None,
) -> None:
    """Finish a run: MLflow status follows the outcome (ok/diverged FINISHED, failed, killed).

    `end_time_s` (epoch seconds) records when a run really stopped, for runs closed later by
    someone else (a killed worker's run ends at its last sign of life, not at the rerun)."""
    status = {
        names.OUTCOME_FAILED: "FAILED",
        names.OUTCOME_KILLED: "KILLED",
    }.get(outcome or names.OUTCOME_OK, _FINISHED)
    tags = dict(extra_tags or {})
    if outcome:
        tags[names.TAG_OUTCOME] = outcome
    if tags:
        set_tags(client, run_id, tags)
    end = time.time() if end_time_s is None else end_time_s
    client.set_terminated(run_id, status=status, end_time=int(end * 1000))


def search_all(
    client,
    experiment_ids: list[str],
    filter_string: str,
    order_by: str = "attributes.start_time ASC",
) -> list:
    """Every active run matching `filter_string`, all pages (MLflow returns 1000 at most per call).

    Shared by the writer's resume lookups and the report's reader, so paging lives in one place."""
    runs: list = []
    token = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=filter_string,
            max_results=names.MLFLOW_MAX_RESULTS,
            page_token=token,
            order_by=[order_by],
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def search_study_runs(client, experiment_id: str, kind: str, study: str | None = None) -> list:
    """All runs of one kind (trial, study, ...) in the experiment, optionally of one study."""
    runs = search_all(client, [experiment_id], f"tags.`{names.TAG_KIND}` = '{kind}'")
    return [r for r in runs if study is None or r.data.tags.get(names.TAG_STUDY) == study]


def pid_gone_here(run) -> bool:
    """True when `run` was started in our own pid space by a process that no longer exists.

    A pid is only checked when the run's boot id and pid namespace are both ours (recorded by
    `start_run`): a hostname is not enough, since containers sharing the host's network share its
    hostname but not its pids (a live rival would look dead and be reaped). Everything else
    (other machines, other pid namespaces, runs of older lrstudy versions without these tags,
    even on this host) expires by its lease instead: slower, never wrong."""
    tags = run.data.tags
    ours = process_identity()
    if len(ours) < 2 or any(tags.get(k) != v for k, v in ours.items()):
        return False
    pid = tags.get(names.TAG_PID)
    if not pid or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
