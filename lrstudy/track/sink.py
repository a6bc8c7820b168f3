"""A buffered metric writer: the training thread appends, a background thread ships batches.

MLflow's per-call cost (3-12 ms for `log_metric` on sqlite, ~52 ms through a server) dwarfs a
small model's ~0.5 ms step, while `log_batch` costs ~0.1 ms per metric in batches of up to 1000
(design.md). So the training thread only appends to a list; a daemon thread drains it, handing
batches to a writer process (lrstudy.track.writer) so the store's Python work does not compete
with training for the GIL. `LRSTUDY_WRITER=thread` writes from the thread instead.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable

from lrstudy.names import MLFLOW_MAX_METRICS_PER_BATCH
from lrstudy.track.outage import call_patiently, outage_for
from lrstudy.track.writer import writer_for

_FRAME_ROWS = 20_000  # rows per frame to the writer process (~1 MB pickled)


def writes_from_process() -> bool:
    """Metrics go through a writer process unless LRSTUDY_WRITER=thread."""
    return os.environ.get("LRSTUDY_WRITER", "process") == "process"


def prestart_writer(uri: str) -> None:
    """Start the writer process for `uri` now: it imports MLflow while the study sets up."""
    if writes_from_process():
        writer_for(uri)


class MetricSink:
    """Buffers (key, value, step) triples for one run and writes them with `log_batch`.

    `flush()` blocks until everything logged so far is stored; `close()` flushes and stops the
    thread. Call `close()` on every exit path (the callers do it in `finally`). A write error in
    the background is re-raised by the next `flush()`/`close()`.
    """

    def __init__(
        self, client, run_id: str, *, interval_s: float = 2.0, process: bool | None = None
    ) -> None:
        self.client = client
        self.run_id = run_id
        uri = getattr(client, "tracking_uri", None)
        if process is None:
            process = writes_from_process()
        self._writer = writer_for(uri) if process and isinstance(uri, str) else None
        self.interval_s = interval_s
        self._buf: list[tuple[str, float, int, int]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0  # items handed to the thread and not yet written
        self._error: BaseException | None = None
        self._closed = False
        self.written = 0
        self._thread = threading.Thread(
            target=self._loop, name=f"lrstudy-sink-{run_id[:8]}", daemon=True
        )
        self._thread.start()

    def log_many(self, items: Iterable[tuple[str, float, int]]) -> None:
        ts = int(time.time() * 1000)
        rows = [(k, float(v), int(s), ts) for k, v, s in items]
        with self._lock:
            self._buf.extend(rows)
            self._pending += len(rows)

    def flush(self, timeout: float | None = 120.0) -> None:
        """Block until every metric logged so far is written (or raise the writer's error)."""
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending and self._error is None and self._thread.is_alive():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(
                        f"metrics for run {self.run_id} not written after {timeout} s"
                    )
                self._idle.wait(timeout=0.05 if left is None else min(0.05, left))
                self._wake.set()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._wake.set()
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(timeout=self.interval_s)
            self._wake.clear()
            try:
                self._drain()
            except BaseException as e:  # noqa: BLE001 - surfaced to the training thread by flush()
                self._error = e
                with self._idle:
                    self._idle.notify_all()
                return

    def _drain(self) -> None:
        from mlflow.entities import Metric

        with self._lock:
            rows, self._buf = self._buf, []
        # A chunk that fails because the tracking server is down is retried (not dropped) until
        # the outage outlasts the patience; training keeps appending to the buffer meanwhile.
        outage = outage_for(getattr(self.client, "tracking_uri", "") or "")
        # The writer process splits a frame as its store needs (bulk insert, or log_batch's 1000);
        # bigger frames mean fewer sqlite commits, which dominate the bulk path's cost.
        step = _FRAME_ROWS if self._writer is not None else MLFLOW_MAX_METRICS_PER_BATCH
        for i in range(0, len(rows), step):
            chunk = rows[i : i + step]
            if self._writer is not None:
                call_patiently(outage, self._writer.write, self.run_id, chunk)
            else:
                metrics = [Metric(k, v, ts, s) for k, v, s, ts in chunk]
                call_patiently(
                    outage, self.client.log_batch, self.run_id, metrics=metrics, synchronous=True
                )
            self.written += len(chunk)
            with self._idle:
                self._pending -= len(chunk)
                self._idle.notify_all()
