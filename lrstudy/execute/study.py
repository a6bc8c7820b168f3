"""Execute stage: run a study's unfinished trials, exactly once, on one or more workers.

Order of business, so that bad input never leaves anything half-written in MLflow:
1. plan the trials and load the data set (user mistakes surface here, before MLflow is touched);
2. open the store (the first open of a sqlite store is locked against other processes) and
   close runs whose owner is gone (stale lease, or dead pid on this host);
3. skip trials whose key already has a finished run; run the rest under a new parent run, each
   claimed by whichever worker gets it first (`lrstudy.track.claims`), so several invocations,
   local workers and Ray tasks may all work on one study at once.
Every exit path (end, exception, Ctrl-C, a dead tracking server) leaves each run either honestly
ended or RUNNING with a lease that expires, so running the same command again finishes the job.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from lrstudy import names
from lrstudy.execute.finished_trials import finished_accs, finished_outcomes
from lrstudy.execute.local import can_fork
from lrstudy.execute.params import study_params
from lrstudy.execute.progress import StudyProgress
from lrstudy.execute.run_options import check_engine, check_workers
from lrstudy.execute.worker import WorkOrder, import_training_stack, spread, work
from lrstudy.execute.worker_startup import (
    Relay,
    fork_workers,
    one_torch_thread,
    spawn_fresh_workers,
)
from lrstudy.interrupts import watch_interrupts
from lrstudy.plan import Trial
from lrstudy.report.best import BestConfig
from lrstudy.spec import StudySpec
from lrstudy.track import runs as track_runs
from lrstudy.track.done_or_stale import is_done, reap_stale
from lrstudy.track.heartbeat import Heartbeat
from lrstudy.track.leases import Lease, clock_warning
from lrstudy.track.outage import TrackingUnavailable
from lrstudy.track.sink import prestart_writer
from lrstudy.track.store import experiment_id, open_client

# The option checks live in run_options.py; they are named here too so that code importing them
# from the study (cli.py, notebooks, scripts) keeps working.
__all__ = ["StudyRun", "run_study"]


@dataclass
class StudyRun:
    """What one invocation did (for the CLI's summary and exit code)."""

    total: int
    skipped: int
    experiment_id: str
    parent_run_id: str | None
    outcomes: dict[str, int] = field(default_factory=dict)
    closed_orphans: int = 0
    interrupted: bool = False
    unavailable: str | None = None  # why the tracking server made the study stop
    worker_errors: list[str] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)  # one event per trial run here
    done_elsewhere: int = 0  # trials another worker or invocation finished meanwhile
    best: BestConfig | None = None  # by the report's rule, over every finished trial
    tracking_uri: str | None = None
    report_path: Path | None = None
    metric: tuple[str, str] | None = None  # what ranks configurations (`StudySpec.rank_metric`)


def run_study(
    spec: StudySpec,
    source: str,
    tracking_uri: str,
    *,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    engine: str = "auto",
    population_size: int | None = None,
    console: Console | None = None,
    factories: dict[str, Any] | None = None,
) -> StudyRun:
    """Run every unfinished trial of `spec`; see the module docstring for the order of business.

    Args:
        factories: classes or factories for the task's user classes (Python API), by field.
    Raises:
        UserInputError: bad spec, data, model, workers, executor or Ray address, or API classes
            that other processes cannot receive (nothing written).
    """

    check_workers(workers, executor)
    check_engine(engine, population_size)
    Lease.from_env()  # LRSTUDY_LEASE_SECONDS <= 0 or not a number: one line, exit 2, nothing run
    console = console or Console(stderr=True)
    packed = None
    if factories and (workers > 1 or executor == "ray"):
        from lrstudy.train.user_classes import ensure_picklable

        packed = ensure_picklable(factories)  # before any process starts or anything is written
    relay = Relay()
    # Local workers are forked once this process holds the training stack and the data, when
    # that is safe (execute/local.py); otherwise they start now as fresh interpreters.
    forking = executor == "local" and workers > 1 and "torch" not in sys.modules and can_fork()
    spawned = [] if forking else spawn_fresh_workers(workers, executor, relay)
    try:
        return _run(spec, source, tracking_uri, spawned, relay, workers, executor, ray_address,
                    engine, population_size, console, factories, packed, forking)  # fmt: skip
    finally:
        for p in spawned:
            p.dismiss()  # a no-op for workers that got their order


def _run(spec, source, tracking_uri, spawned, relay, workers, executor, ray_address, engine,
         population_size, console, factories, packed, forking) -> StudyRun:  # fmt: skip
    from lrstudy.train.preflight import preflight
    from lrstudy.train.user_classes import search_dirs

    threads = one_torch_thread() if forking else None
    dirs = search_dirs(source)
    trials, data = preflight(spec, source, dirs=dirs, factories=factories)
    ray_ctx = None
    if executor == "ray":
        from lrstudy.execute.ray_executor import connect

        ray_ctx = connect(ray_address, tracking_uri, workers=workers)
    # The input is sound: the writer process may create or migrate the store now, on the other
    # core, while this process imports the training stack (~3 s); then opening it is quick.
    prestart_writer(tracking_uri)
    if ray_ctx is None:
        import_training_stack()
    if forking:
        spawned.extend(fork_workers(workers, relay, trials, data, threads))
    client = open_client(tracking_uri)
    exp = experiment_id(client, spec.experiment)
    existing = track_runs.search_study_runs(client, exp, names.KIND_TRIAL, spec.name)
    parents = track_runs.search_study_runs(client, exp, names.KIND_STUDY, spec.name)
    lease = Lease.from_env()
    if warning := clock_warning(client, tracking_uri, lease):
        console.print(warning, soft_wrap=True)
    # Closes runs whose pid is gone here at once; every other run is watched from now on and
    # closed once its heartbeat stayed unchanged for its lease (by a worker, or at the end).
    closed = reap_stale(client, existing + parents, lease)
    done = {r.data.tags.get(names.TAG_TRIAL_KEY) for r in existing if is_done(r)}
    todo = [t for t in trials if t.key not in done]
    result = StudyRun(len(trials), len(trials) - len(todo), exp, None, closed_orphans=len(closed))
    result.metric = spec.rank_metric
    current = {t.key for t in trials}
    if not todo:
        finished = StudyProgress(console, spec.name, len(trials), done, spec.rank_metric)
        finished.seed_best(finished_accs(existing, current, spec.rank_metric))
        result.best = finished.best()
        result.outcomes = finished_outcomes(existing, current)
        return result
    parent = _start_parent(client, exp, spec, trials, data)
    result.parent_run_id = parent
    progress = StudyProgress(console, spec.name, len(trials), current & done, spec.rank_metric)
    relay.connect(progress.on_event)
    progress.seed_best(finished_accs(existing, current, spec.rank_metric))
    order = WorkOrder(
        spec=spec,
        source=source,
        tracking_uri=tracking_uri,
        experiment_id=exp,
        parent_run_id=parent,
        keys=tuple(t.key for t in todo),
        engine=engine,
        population_size=population_size,
        dirs=dirs,
        factories=packed,
    )
    _print_engine_notes(console, trials, todo, data, order, existing)
    beat = Heartbeat(client, lease)
    beat.hold(parent)
    outcome = names.OUTCOME_OK
    try:
        with progress:
            if ray_ctx is not None:
                result.worker_errors.extend(ray_ctx.run(order, progress.on_event, workers) or [])
            else:
                _run_local(order, trials, data, client, progress, spawned, result)
    except (KeyboardInterrupt, SystemExit):
        outcome, result.interrupted = names.OUTCOME_KILLED, True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores it after ^C
    except TrackingUnavailable as e:
        outcome, result.unavailable = names.OUTCOME_KILLED, str(e)
    except BaseException:
        outcome = names.OUTCOME_FAILED
        raise
    finally:
        beat.stop()
        _summarise(result, progress, todo)
        if outcome == names.OUTCOME_OK:
            result.closed_orphans += _reap_leftovers(client, exp, spec.name, lease)
        if outcome == names.OUTCOME_OK and result.outcomes.get(names.OUTCOME_FAILED):
            outcome = names.OUTCOME_FAILED
        # If the server is still gone the parent stays RUNNING; its lease expires and the next
        # invocation closes it.
        with contextlib.suppress(TrackingUnavailable):
            track_runs.end_run(client, parent, outcome=outcome)
    _save_ui_view(client, exp, spec.name, spec.rank_metric)
    return result


def _reap_leftovers(client, exp: str, study: str, lease: Lease) -> int:
    """Close the study's runs left RUNNING by dead invocations (parents, and trial runs of keys
    done meanwhile, which no worker looks at again) once this process has watched them for their
    lease; the runs first seen at start-up have been watched for the whole study."""
    with contextlib.suppress(TrackingUnavailable):
        runs = track_runs.search_study_runs(client, exp, names.KIND_TRIAL, study)
        runs += track_runs.search_study_runs(client, exp, names.KIND_STUDY, study)
        return len(reap_stale(client, [r for r in runs if r.info.status == "RUNNING"], lease))
    return 0


def _print_engine_notes(
    console, trials: list[Trial], todo: list[Trial], data: Any, order, existing: list
) -> None:
    """Say once why trials run on the trial engine when populations were asked for (auto or
    population), that a user's module has its optimizer replaced by the study's, and when
    finished trials came from other code of the user's classes."""
    from lrstudy.execute.notes import user_class_notes

    for line in user_class_notes(order.spec, trials, data, existing):
        console.print(line, soft_wrap=True)  # one line, also in a log file
    if order.engine == "trial" or len(todo) < 2:
        return
    from lrstudy.execute.tpe import batches  # population.batches, TPE slots alone

    reasons: dict[str, int] = {}
    for batch, why in batches(todo, order, data):
        if why:
            reasons[why] = reasons.get(why, 0) + len(batch)
    for why, n in reasons.items():
        console.print(f"trial engine for {n} trial{'s' if n > 1 else ''}: {why}", soft_wrap=True)


def _save_ui_view(client, exp: str, study: str, metric: tuple[str, str]) -> None:
    """The study's saved view in MLflow's UI (Views menu): a convenience, never worth failing a
    finished study over (a read-only or unreachable server just keeps its default columns)."""
    from lrstudy.track import ui_view

    try:
        trials = track_runs.search_study_runs(client, exp, names.KIND_TRIAL, study)
        names_ = [r.info.run_name or "" for r in trials]
        ui_view.ensure_study_view(client, exp, study, names_, metric)
    except Exception:  # noqa: BLE001, S110 - see the docstring
        pass


def _run_local(order, trials, data, client, progress, spawned, result) -> None:
    """Worker 0 in this process, workers 1..N-1 as processes; all events into `progress`."""
    from lrstudy.execute.local import send_orders, stop_workers

    procs = send_orders(spawned, order)
    interrupted = False
    restore = watch_interrupts(once=False)
    try:
        own = order.replace(keys=spread(list(order.keys), 0, len(procs) + 1))
        work(own, trials, data, client, progress.on_event)
    except BaseException:
        interrupted = True
        raise
    finally:
        restore()
        codes = stop_workers(procs, interrupted=interrupted)
        for p, code in zip(procs, codes, strict=True):
            last = p.last_event or {}
            if last.get("type") == "unavailable" and not interrupted:
                raise TrackingUnavailable(last.get("message", "tracking server unavailable"))
            if last.get("type") == "interrupted" and not interrupted:
                raise KeyboardInterrupt
            if code not in (0, 130) or last.get("type") == "error":
                result.worker_errors.append(
                    f"worker {p.index} exited with code {code}"
                    + (f": {last['message']}" if last.get("message") else "")
                )


def _start_parent(client, exp: str, spec: StudySpec, trials: list[Trial], data: Any) -> str:
    metric, mode = spec.rank_metric
    tags = {
        names.TAG_KIND: names.KIND_STUDY,
        names.TAG_STUDY: spec.name,
        names.TAG_SPEC_HASH: spec.spec_hash(),
        names.TAG_OUTCOME: names.OUTCOME_RUNNING,
        names.TAG_HEARTBEAT: f"{time.time():.3f}",
        **Lease.from_env().tag(),
        names.TAG_METRIC: metric,
        names.TAG_METRIC_MODE: mode,
        names.TAG_TASK_KIND: spec.task.kind,
    }
    if spec.task.kind != "reference":
        from lrstudy.train.user_classes import task_code_hash

        tags[names.TAG_CODE_HASH] = task_code_hash(spec)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    parent = track_runs.start_run(client, exp, name=f"{spec.name} {stamp}", tags=tags)
    track_runs.log_params(client, parent, study_params(spec, trials, data))
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / names.SPEC_ARTIFACT
        p.write_text(spec.resolved_yaml(), encoding="utf-8")
        client.log_artifact(parent, str(p))
    return parent


def _summarise(result: StudyRun, progress: StudyProgress, todo: list[Trial]) -> None:
    ran = [e for e in progress.ran if e.get("type") == "trial"]
    result.trials = ran
    for e in ran:
        result.outcomes[e["outcome"]] = result.outcomes.get(e["outcome"], 0) + 1
    ran_keys = {e["key"] for e in ran}
    result.best = progress.best()
    result.done_elsewhere = sum(
        1 for t in todo if t.key in progress.done_keys and t.key not in ran_keys
    )
