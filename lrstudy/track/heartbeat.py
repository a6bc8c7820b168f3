"""The heartbeat thread that keeps a worker's leases alive: one write per held run each interval.
Apart from the claims because a study's parent run is held by it too, with no claim at all."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from lrstudy import names
from lrstudy.track import runs as track_runs
from lrstudy.track.leases import Lease


class Heartbeat:
    """A daemon thread that refreshes `lrstudy.heartbeat` on the runs a worker holds.

    `on_error(exc)` / `on_ok()` let the caller show a tracking outage while it lasts.
    """

    def __init__(
        self,
        client,
        lease: Lease,
        *,
        on_error: Callable[[BaseException], None] | None = None,
        on_ok: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.lease = lease
        self._runs: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._on_error = on_error
        self._on_ok = on_ok
        self._thread = threading.Thread(target=self._loop, name="lrstudy-heartbeat", daemon=True)
        self._thread.start()

    def hold(self, run_id: str) -> None:
        with self._lock:
            self._runs.add(run_id)

    def release(self, run_id: str) -> None:
        with self._lock:
            self._runs.discard(run_id)

    def beat(self) -> None:
        """Renew every held run's lease, one write per run, one at a time: a worker never takes
        more than one connection of the store for its beats (parallel beats of 2 x 64 members
        under a 2 s lease saturated a one-worker server and slowed everything else). A run
        released meanwhile (a batch claim that lost it deletes it) is skipped, and its failed
        write is no error."""
        with self._lock:
            held = sorted(self._runs)
        for run_id in held:
            if not self.holds(run_id):
                continue
            try:
                track_runs.set_tags(
                    self.client, run_id, {names.TAG_HEARTBEAT: f"{time.time():.3f}"}
                )
            except Exception:
                if self.holds(run_id):
                    raise

    def holds(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._runs

    def _loop(self) -> None:
        # Rounds start every interval (not an interval after the last round ended): a round of
        # hundreds of runs through a server takes seconds, and each run must beat well within
        # its lease (a round must stay shorter than the lease: one write per held run).
        next_at = time.monotonic() + self.lease.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + self.lease.interval_s
            try:
                self.beat()
            except Exception as e:  # noqa: BLE001 - an outage is reported, never fatal here
                if self._on_error:
                    self._on_error(e)
            else:
                if self._on_ok:
                    self._on_ok()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
