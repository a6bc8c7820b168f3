"""Inside a Ray worker process: one task = one trial, or one population, through the claim loop
of a local worker (`lrstudy.execute.worker.work`). The study's trials, data set and tracking
client are made on a process's first task and kept for the next ones.
"""

from __future__ import annotations

from typing import Any

from lrstudy.errors import UserInputError
from lrstudy.execute.ray_cluster import first_line
from lrstudy.execute.worker import WorkOrder

Event = dict[str, Any]

_PREPARED: dict[tuple[str, str], tuple[Any, Any]] = {}  # (spec hash, source) -> (trials, data)
_CLIENTS: dict[str, Any] = {}  # tracking URI -> client (its outage record is per process)


def run_task(
    order: WorkOrder, keys: tuple[str, ...], slot: int, queue: Any = None
) -> dict[str, Any]:
    """Trial `keys` (one, or a population) through the claim loop; returns how the task ended
    (and any events the driver's queue did not take)."""
    kept: list[Event] = []

    def emit(event: Event) -> None:
        nonlocal queue
        if queue is not None:
            try:
                queue.put_nowait((slot, event))
                return
            except Exception:  # noqa: BLE001 - the queue is gone: return the events instead
                queue = None
        kept.append(event)

    try:
        trials, data, client = _prepared(order)
        from lrstudy.execute.worker import work

        work(order.replace(keys=tuple(keys), index=slot), trials, data, client, emit)
        status: Event = {"type": "finished"}
    except KeyboardInterrupt:
        status = {"type": "interrupted"}
    except Exception as e:  # noqa: BLE001 - the driver prints it as one line
        from lrstudy.track.outage import TrackingUnavailable

        if isinstance(e, TrackingUnavailable):
            status = {"type": "unavailable", "message": str(e)}
        elif isinstance(e, UserInputError):
            status = {"type": "error", "message": str(e)}
        else:
            status = {"type": "error", "message": f"{type(e).__name__}: {first_line(e)}"}
    return {"events": kept, "status": status}


def _prepared(order: WorkOrder) -> tuple[Any, Any, Any]:
    """Trials, data set and tracking client of this worker process, made on its first task."""
    trials, data = prepared_data(order)
    if order.tracking_uri not in _CLIENTS:
        from lrstudy.track.outage import call_patiently, outage_for
        from lrstudy.track.store import open_client

        # The driver saw the store answer: failing to reach it now is an outage, ridden out (up
        # to the patience) like any other call, not a wrong --tracking-uri.
        uri = order.tracking_uri
        _CLIENTS[uri] = call_patiently(outage_for(uri), open_client, uri)
    return trials, data, _CLIENTS[order.tracking_uri]


def prepared_data(order: WorkOrder) -> tuple[Any, Any]:
    cache_key = (order.spec.spec_hash(), order.source)
    if cache_key not in _PREPARED:
        from lrstudy.quiet import quiet_libraries

        quiet_libraries()
        import torch

        torch.set_num_threads(1)
        # The training stack before any claim: no claimed trial waits on seconds of imports.
        import lrstudy.track.callback  # noqa: F401
        import lrstudy.train.module  # noqa: F401

        _PREPARED[cache_key] = order.preflight()
    return _PREPARED[cache_key]
