"""A worker: claim the study's unfinished trials one by one and train them, until none is left.

The same loop runs in the study process itself, in local worker processes
(forked or started by `lrstudy.execute.local`) and in Ray tasks. It ends
only when every trial it was given is done by someone: a trial claimed by a live worker elsewhere
is looked at again every few seconds, and taken over once that worker's lease expires.

Events (plain dicts, so they cross pipes and Ray unchanged) go to `emit`:
`{"type": "trial", ...TrialDone}`, `{"type": "done_elsewhere", "key": k}`,
`{"type": "outage", "seconds": s}` and `{"type": "outage", "seconds": None}` when it ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lrstudy import names
from lrstudy.execute.population import Reserve, same_shape, take_population
from lrstudy.execute.shift import Shift, run_trial_run
from lrstudy.execute.tpe import batches, take_slot
from lrstudy.execute.tpe_population import take_slots
from lrstudy.execute.trial import trial_tags
from lrstudy.interrupts import check_interrupt
from lrstudy.plan import Trial
from lrstudy.spec import StudySpec
from lrstudy.track.claims import Claims
from lrstudy.track.heartbeat import Heartbeat
from lrstudy.track.leases import Lease

# Waiting on trials that other workers hold: first look again after FIRST_PAUSE_S, doubling.
FIRST_PAUSE_S = 0.25
MAX_PAUSE_S = 5.0

Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class WorkOrder:
    """Everything a worker needs, as plain data (it is sent to other processes and machines)."""

    spec: StudySpec
    source: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    keys: tuple[str, ...]  # the trials to see done, in the order to try them
    index: int = 0  # worker number, for display and to spread the first claims
    engine: str = "auto"  # "auto", "trial" or "population" (see execute/population.py)
    population_size: int | None = None  # members per population; None: from the model's size
    # Where the study's class paths were found (absolute: Ray workers run elsewhere), and the
    # classes/factories given to the Python API, cloudpickled (notebook classes travel by value).
    dirs: tuple[str, ...] = ()
    factories: bytes | None = None

    def replace(self, **changes: Any) -> WorkOrder:
        return dataclasses.replace(self, **changes)

    def preflight(self) -> tuple[list[Trial], Any]:
        """The trials and data this order's study trains on, as the study process found them."""
        from lrstudy.train.preflight import preflight

        factories = None
        if self.factories:
            import cloudpickle

            factories = cloudpickle.loads(self.factories)
        return preflight(self.spec, self.source, dirs=self.dirs or None, factories=factories)


def spread(keys: list[str], index: int, workers: int) -> tuple[str, ...]:
    """Rotate the key list so worker i starts i/N of the way in: fewer races for one key."""
    if not keys or workers <= 1:
        return tuple(keys)
    k = (len(keys) * index) // workers
    return tuple(keys[k:] + keys[:k])


def work(
    order: WorkOrder,
    trials: list[Trial],
    data: Any,
    client,
    emit: Emit,
    *,
    lease: Lease | None = None,
) -> None:
    """See every trial of `order.keys` done (by us or another worker); emit events on the way.

    Raises:
        KeyboardInterrupt: after closing the running trials as killed.
        TrackingUnavailable: the tracking server stayed down past the patience.
    """
    by_key = {t.key: t for t in trials}
    lease = lease or Lease.from_env()
    outage = getattr(client, "outage", None)
    heartbeat = Heartbeat(
        client,
        lease,
        on_error=lambda e: _report_outage(emit, outage),
        on_ok=lambda: emit({"type": "outage", "seconds": None}) if outage else None,
    )
    shift = Shift(order, data, client, Claims(client, order.experiment_id, order.spec.name,
                  lease=lease), heartbeat, emit)  # fmt: skip
    pending = [by_key[k] for k in order.keys if k in by_key]
    watching = threading.Event()
    if outage is not None:
        threading.Thread(
            target=_watch_outage, args=(outage, emit, watching), name="lrstudy-outage", daemon=True
        ).start()
    pause_s = FIRST_PAUSE_S
    try:
        while pending:
            waiting = []
            taken: set[str] = set()  # joined an earlier population's freed slot
            plan = batches(pending, order, data)
            for i, (batch, why) in enumerate(plan):
                check_interrupt()  # a Ctrl-C that a finalizer swallowed claims nothing more
                batch = [t for t in batch if t.key not in taken]
                if len(batch) == 1:
                    waiting += [] if take_trial(batch[0], shift, why) else batch
                elif batch:
                    reserve = Reserve(same_shape(batch[0], plan[i + 1 :]), taken)
                    take = take_slots if batch[0].tpe is not None else take_population
                    waiting += take(batch, shift, reserve)
            if waiting and len(waiting) == len(pending):
                # Everything left is claimed by live workers. Look again soon (their trials may
                # be seconds from done: a fixed 5 s wait cost a 24-trial study 4.5 s at its end),
                # then less and less often, never less often than their leases are renewed, so a
                # dead worker's trials are taken over in time.
                time.sleep(pause_s)
                pause_s = min(pause_s * 2, lease.interval_s, MAX_PAUSE_S)
            else:
                pause_s = FIRST_PAUSE_S
            pending = waiting
    finally:
        watching.set()
        heartbeat.stop()


def import_training_stack() -> None:
    """Lightning, torch and the tracking callback, which the first trial would import anyway."""
    import lrstudy.track.callback  # noqa: F401
    import lrstudy.train.module  # noqa: F401


def _watch_outage(outage, emit: Emit, stop: threading.Event, every_s: float = 1.0) -> None:
    """Emit an outage event when one starts and when it ends. The PatientClient retries every
    call through an outage, so no call (heartbeat, sink, claims) fails while it lasts."""
    reported = False
    while not stop.wait(every_s):
        seconds = outage.seconds()
        if seconds is not None and not reported:
            emit({"type": "outage", "seconds": seconds})
            reported = True
        elif seconds is None and reported:
            emit({"type": "outage", "seconds": None})
            reported = False


def take_trial(trial: Trial, shift: Shift, why: str = "") -> bool:
    """Try one trial alone: True when it is done (by us now, or found done), False for later.

    `why`: the reason it is not in a population (tagged on its run).
    """
    if trial.tpe is not None:  # a TPE slot: sampled once claimed (execute/tpe.py)
        return take_slot(trial, shift, why)
    if shift.settled(trial):
        return True
    tags = trial_tags(shift.spec, trial)
    if why:
        tags[names.TAG_ENGINE_REASON] = why[:500]
    run_id = shift.claims.claim(
        trial.key, name=trial.name, tags=tags, parent_id=shift.order.parent_run_id
    )
    if run_id is None:
        return False
    return run_trial_run(trial, run_id, shift)


def _report_outage(emit: Emit, outage) -> None:
    seconds = outage.seconds() if outage is not None else None
    emit({"type": "outage", "seconds": seconds})


# ---- worker processes (lrstudy.execute.local): events out on one pipe, a pickled WorkOrder in on another ----


def _die_with_parent() -> None:
    """Ask Linux to send us SIGINT when the study process dies (kill -9 included)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker notices when writing its next event fails
    if os.getppid() == 1:
        raise KeyboardInterrupt


def _serve(events_fd: int, order_fd: int, prepared: tuple[list[Trial], Any] | None) -> int:
    """A worker process's life: wait for the order, work it, report. Returns the exit code.

    `prepared`: the study process's (trials, data) when forked from it; None: a fresh interpreter
    imports the training stack and loads the data itself."""
    out = os.fdopen(events_fd, "w", buffering=1)

    def emit(event: dict[str, Any]) -> None:
        out.write(json.dumps(event) + "\n")

    try:
        from lrstudy.gc_tuning import fewer_full_collections
        from lrstudy.interrupts import watch_interrupts
        from lrstudy.quiet import quiet_libraries

        watch_interrupts(once=True)  # for the process's life; its `finally` ignores SIGINT
        fewer_full_collections()  # before the imports below (see lrstudy.gc_tuning)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # see local.WorkerProcess
        _die_with_parent()
        quiet_libraries()
        if prepared is None:
            # Import everything before the order arrives: the study process is setting up
            # meanwhile, and no claim ever waits on seconds of imports.
            import_training_stack()
        from lrstudy.track.store import open_client

        try:
            with os.fdopen(order_fd, "rb") as orders:
                order: WorkOrder = pickle.load(orders)
        except EOFError:
            return 0  # dismissed: nothing to do
        from lrstudy.track.sink import prestart_writer

        prestart_writer(order.tracking_uri)  # its MLflow import overlaps the preflight and claims
        trials, data = prepared or order.preflight()
        # The study process saw the store answer: failing to reach it now is an outage (ride it
        # out like any other call), not a wrong --tracking-uri.
        from lrstudy.track.outage import call_patiently, outage_for

        client = call_patiently(outage_for(order.tracking_uri), open_client, order.tracking_uri)
        work(order, trials, data, client, emit)
        emit({"type": "finished"})
        return 0
    except KeyboardInterrupt:
        _quietly(emit, {"type": "interrupted"})
        return 130
    except BrokenPipeError:
        return 130  # the study process is gone: nobody to tell
    except Exception as e:  # noqa: BLE001 - the study process prints it as one line
        from lrstudy.track.outage import TrackingUnavailable

        kind = "unavailable" if isinstance(e, TrackingUnavailable) else "error"
        _quietly(emit, {"type": kind, "message": f"{type(e).__name__}: {e}"})
        return 3 if kind == "unavailable" else 1
    finally:
        # Lightning restores SIGINT handlers after its own shutdown; from here on only exit
        # handlers run (flushing the metric writer), which no late Ctrl-C may cut short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def serve_forked(
    events_fd: int, order_fd: int, trials: list[Trial], data: Any, closing: tuple[int, ...]
) -> None:
    """The body of a worker forked from the study process (see lrstudy.execute.local)."""
    for fd in closing:  # the parent's ends of this worker's pipes and of earlier workers' orders
        with contextlib.suppress(OSError):
            os.close(fd)
    code = _serve(events_fd, order_fd, (trials, data))
    # A forked process ends with os._exit (multiprocessing), without atexit handlers: the
    # metric writer this worker started must hand off what it holds first.
    from lrstudy.track.writer import close_writers

    close_writers()
    sys.exit(code)


def _quietly(emit: Emit, event: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        emit(event)


if __name__ == "__main__":
    from lrstudy.gc_tuning import skip_final_collection

    code = _serve(int(sys.argv[1]), int(sys.argv[2]), None)
    skip_final_collection()  # the study process waits for this exit: keep it short
    raise SystemExit(code)
