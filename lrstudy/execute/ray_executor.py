"""`lrstudy run --executor ray`: the study's trials as Ray tasks, on a local runtime or a cluster.

Each task runs the very claim loop of a local worker (`lrstudy.execute.worker.work`) for one trial
key, in a Ray worker process that loads the study's trials and data set once (`preflight`, cached
per process) and logs straight to the tracking store. The driver only hands out keys, keeps at most
`--workers` tasks in flight and feeds the tasks' events (plain dicts, sent through a Ray queue as
they happen, e.g. a tracking outage while it lasts) to the study's progress display. The store
is the one source of truth: a task that Ray retries after a node died, a second invocation, or
local workers on another machine all meet in the claims (`lrstudy.track.claims`), so every
trial still finishes exactly once.

Why plain tasks and not Ray Tune: the claims already give exactly-once trials, resume and
takeover of a dead worker's trial after its lease; Tune's trial scheduler would be a second
planner over the trials `plan.py` made (its own trial ids, its own resume state, duplicate
trials when it restarts), and its per-trial actors, logger callbacks and checkpoints cost more
than the small trials they run.

Where the runs go: tasks write to the tracking URI themselves, so with a cluster given by
`--ray-address` / `$RAY_ADDRESS` (other machines) the URI must be a tracking server or a database
every node reaches; a sqlite file is refused before anything is written. Without an address a
private local Ray runtime is started (`ray.init(address="local")`, never an existing cluster found
by auto-detection) and shut down at the end; sqlite is fine there.

Stopping: Ctrl-C in the driver cancels every task in flight (Ray raises KeyboardInterrupt in it, the
trial's run is closed as killed), waits a grace period for them, and exits 130. A task that stops
on its own maps as for local worker processes: KeyboardInterrupt -> interrupted,
`TrackingUnavailable` -> the study stops with exit 3, anything else -> a worker error line.

Ray is imported only by this module and its two helpers, `ray_cluster` (checking an address
before joining) and `ray_task` (what runs inside a Ray worker), and only when this executor is
used (`import lrstudy` never loads it).
Worker output stays in Ray's session logs (`log_to_driver=False`); what the user needs comes back
as events.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from lrstudy.errors import UserInputError
from lrstudy.execute.ray_cluster import (
    absolute_sqlite,
    check_cluster,
    first_line,
    forwarded_env,
    is_local_file,
)
from lrstudy.execute.ray_task import prepared_data, run_task
from lrstudy.execute.worker import WorkOrder

Event = dict[str, Any]

INSTALL_HINT = "--executor ray needs the extra: pip install 'lrstudy[ray]'"
_CANCEL_GRACE_S = 30.0  # tasks closing their runs after Ctrl-C; then they are killed
_LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2  # events and work orders only: tiny objects


class RayContext:
    """A connected Ray runtime (ours or a cluster's) that runs work orders as tasks."""

    def __init__(self, address: str | None, *, owned: bool) -> None:
        self.address = address  # None: a local runtime started by us
        self.owned = owned

    def run(self, order: WorkOrder, on_event: Callable[[Event], None], workers: int) -> list[str]:
        """Run `order.keys` as Ray tasks (one trial, or one population of trials with the
        population engine, per task; at most `workers` tasks at once).

        Returns one line per task that failed outside a trial (the study's worker errors).

        Raises:
            KeyboardInterrupt: Ctrl-C (tasks cancelled and waited for), or a task was interrupted.
            TrackingUnavailable: a task found the tracking server gone for longer than the patience.
        """
        import ray

        from lrstudy.track.outage import TrackingUnavailable

        order = order.replace(tracking_uri=absolute_sqlite(order.tracking_uri))
        task = ray.remote(num_cpus=1)(run_task)
        base = ray.put(order)
        stream = _Stream(on_event)
        todo = deque(_groups(order))
        free = list(range(max(1, workers)))
        inflight: dict[Any, tuple[tuple[str, ...], int]] = {}  # ref -> (keys, slot)
        errors: list[str] = []
        stop: Event | None = None  # the first task's "unavailable" / "interrupted" status
        try:
            while todo or inflight:
                while todo and free and stop is None:
                    slot = free.pop(0)
                    keys = todo.popleft()
                    inflight[task.remote(base, keys, slot, stream.queue)] = (keys, slot)
                if not inflight:
                    break
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
                stream.drain()  # a task's events are queued before it returns
                for ref in ready:
                    keys, slot = inflight.pop(ref)
                    free.append(slot)
                    status = _deliver(ray, ref, keys, slot, stream, errors)
                    if status.get("type") in ("unavailable", "interrupted") and stop is None:
                        stop = status
                        if status["type"] == "interrupted":
                            _cancel(ray, inflight, stream, errors)
        except KeyboardInterrupt:
            _cancel(ray, inflight, stream, errors)
            raise
        finally:
            stream.close()
            if self.owned:
                self.close()
        if stop is not None and stop["type"] == "unavailable":
            raise TrackingUnavailable(stop.get("message") or "tracking server unavailable")
        if stop is not None:
            raise KeyboardInterrupt
        return _dedupe(errors)

    def close(self) -> None:
        """Shut down the local runtime we started (a cluster we joined is left alone)."""
        import ray

        if self.owned and ray.is_initialized():
            ray.shutdown()


def connect(
    ray_address: str | None, tracking_uri: str, *, workers: int | None = None
) -> RayContext:
    """Join the Ray cluster at `ray_address` (else $RAY_ADDRESS), or start a local runtime
    with `workers` CPUs (default: this machine's cores).

    Called before anything is written, so every mistake here is a one-line error.

    Raises:
        UserInputError: Ray is not installed; the address is malformed or no cluster answers
            there; a cluster on other machines with a sqlite (local file) tracking URI; Ray
            refuses to join (e.g. a version mismatch).
    """
    try:
        import ray
    except ImportError:
        raise UserInputError(INSTALL_HINT) from None
    flag = "--ray-address"
    address = ray_address
    if not address and os.environ.get("RAY_ADDRESS"):
        flag, address = "RAY_ADDRESS", os.environ["RAY_ADDRESS"]
    if address in (None, "", "local"):
        return _start_local(ray, workers or os.cpu_count() or 1)
    if is_local_file(tracking_uri):
        raise UserInputError(
            f"{flag} {address}: tracking URI {tracking_uri} is a file on this machine that the "
            "cluster's other machines cannot reach; start a tracking server (mlflow server "
            "--backend-store-uri ...) and pass --tracking-uri http://HOST:PORT, or drop "
            f"{flag} to run on a local Ray runtime"
        )
    if ray.is_initialized():
        return RayContext(address, owned=False)
    check_cluster(flag, address)
    env = forwarded_env()
    try:
        ray.init(
            address=address,
            logging_level=logging.ERROR,
            log_to_driver=False,
            runtime_env={"env_vars": env} if env else None,
        )
    except Exception as e:  # noqa: BLE001 - Ray raises many kinds; the user needs one line
        raise UserInputError(
            f"{flag} {address}: cannot join the Ray cluster ({first_line(e)})"
        ) from None
    return RayContext(address, owned=False)


def _start_local(ray, num_cpus: int) -> RayContext:
    """A private Ray runtime on this machine; its processes end with `RayContext.close`."""
    if ray.is_initialized():
        return RayContext(None, owned=False)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(
            address="local",  # never auto-join a cluster someone else started on this machine
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
            object_store_memory=_LOCAL_OBJECT_STORE_BYTES,
        )
    except Exception as e:  # noqa: BLE001
        raise UserInputError(
            f"--executor ray: cannot start a local Ray runtime ({first_line(e)})"
        ) from None
    return RayContext(None, owned=True)


class _Stream:
    """The tasks' events as they happen: tasks put `(slot, event)` into a Ray queue (an actor
    needing no CPU), the driver drains it about once a second into `on_event`. Where the queue
    cannot be used, a task returns its events instead (delivered when it ends)."""

    def __init__(self, on_event: Callable[[Event], None]) -> None:
        from ray.util.queue import Queue

        self.on_event = on_event
        self.queue: Any = None
        self._in_outage: dict[int, bool] = {}  # slot -> its last outage event was a start
        with contextlib.suppress(Exception):
            self.queue = Queue(actor_options={"num_cpus": 0})

    def feed(self, slot: int, event: Event) -> None:
        if event.get("type") == "outage":
            self._in_outage[slot] = event.get("seconds") is not None
        self.on_event(event)

    def drain(self) -> None:
        if self.queue is None:
            return
        try:
            n = self.queue.qsize()
            items = self.queue.get_nowait_batch(n) if n else []
        except Exception:  # noqa: BLE001 - the queue's actor is gone: tasks fall back to returns
            self.queue = None
            return
        for slot, event in items:
            self.feed(slot, event)

    def ended(self, slot: int, ok: bool) -> None:
        """A task ended; one that ended its run saw the server answer, whatever it last said."""
        if self._in_outage.pop(slot, False) and ok:
            self.on_event({"type": "outage", "seconds": None})

    def close(self) -> None:
        if self.queue is not None:
            with contextlib.suppress(Exception):
                self.drain()
                self.queue.shutdown(force=True)
            self.queue = None


def _deliver(
    ray, ref, keys: tuple[str, ...], slot: int, stream: _Stream, errors: list[str]
) -> Event:
    """Feed what a finished task returned (its status, and events the queue did not carry)."""
    try:
        out = ray.get(ref)
    except Exception as e:  # noqa: BLE001 - Ray's own failures (worker or node died, cancelled)
        stream.ended(slot, ok=False)
        if type(e).__name__ == "TaskCancelledError":
            return {"type": "interrupted"}
        errors.append(f"Ray task for {_label(keys)} failed: {first_line(e)}")
        return {"type": "error"}
    for event in out["events"]:
        stream.feed(slot, event)
    status = out["status"]
    stream.ended(slot, ok=status.get("type") == "finished")
    if status.get("type") == "error":
        errors.append(f"Ray task for {_label(keys)}: {status.get('message', '')}")
    return status


def _cancel(ray, inflight: dict, stream: _Stream, errors: list[str]) -> None:
    """Cancel the tasks in flight, let them close their runs, then kill what is left."""
    refs = list(inflight)
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref)
    deadline = time.monotonic() + _CANCEL_GRACE_S
    pending = refs
    while pending and time.monotonic() < deadline:
        try:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            stream.drain()
        except KeyboardInterrupt:
            break  # a second Ctrl-C: stop waiting
        for ref in ready:
            keys, slot = inflight.pop(ref)
            _deliver(ray, ref, keys, slot, stream, errors)
    for ref in pending:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)


def _groups(order: WorkOrder) -> list[tuple[str, ...]]:
    """The tasks' key sets: one trial each, or, with the population engine, the populations the
    workers themselves would form (the same grouping of the same trials and data)."""
    singles = [(k,) for k in order.keys]
    if getattr(order, "engine", "trial") == "trial" or len(order.keys) < 2:
        return singles
    try:
        from lrstudy.execute.population import batches
    except ImportError:
        return singles
    trials, data = prepared_data(order)
    by_key = {t.key: t for t in trials}
    pending = [by_key[k] for k in order.keys if k in by_key]
    return [tuple(t.key for t in batch) for batch, _ in batches(pending, order, data)]


def _label(keys: tuple[str, ...]) -> str:
    return f"trial {keys[0]}" if len(keys) == 1 else f"{len(keys)} trials ({keys[0]}, ...)"


def _dedupe(errors: list[str]) -> list[str]:
    return list(dict.fromkeys(errors))
