"""A separate process that writes metric batches to MLflow, so training never pays for the store.

Why a process and not only a thread: MLflow's `log_batch` spends ~80-200 us of pure Python
(SQLAlchemy) per metric on sqlite. With ~5 metrics per optimizer step that is 0.4-1 ms of
GIL-holding work per step in a writer thread, as much as the small model's whole step
(measured: bench/bench_overhead.py). In another process it runs on another core instead.

It is started with `python -m lrstudy.track.writer URI` rather than `multiprocessing`, which
would re-import the user's `__main__` (a plugin user's unguarded training script would run
twice). Frames on stdin are length-prefixed pickles of `(seq, run_id, rows)`; the child
answers each with a line `seq ok` or `seq err <message>` on stdout. It ignores SIGINT (Ctrl-C
reaches the whole process group; the parent decides when writing stops) and exits when stdin
closes, i.e. also when the parent dies.

For `sqlite:` and `postgresql:` stores the child writes each frame with one bulk INSERT through
MLflow's own table models (lrstudy.track.bulk_metrics: same stored result, 5-8x the values per
second of `log_batch` on the shared 2-core box, bench/bench_metric_writes.py);
`LRSTUDY_BULK_METRICS=0` turns that off. Tracking servers (http/https) and any other store keep
`log_batch`, the only path their API offers.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable

_HEADER = struct.Struct("!I")
_WRITERS: dict[str, WriterProcess] = {}
_LOCK = threading.Lock()


class WriterError(RuntimeError):
    """The writer process failed to store a batch (the message is MLflow's)."""


class WriterProcess:
    """Client side: send one batch, wait for its acknowledgement. Thread-safe."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "lrstudy.track.writer", uri],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            # Its own session: a terminal's Ctrl-C must not reach it (one arriving during its
            # interpreter start-up would kill it with a fatal error). It stops when its stdin
            # closes, i.e. when the parent is done with it or dies.
            start_new_session=True,
        )
        self._lock = threading.Lock()
        self._seq = 0

    def alive(self) -> bool:
        return self._proc.poll() is None

    def write(self, run_id: str, rows: list[tuple[str, float, int, int]]) -> None:
        """Store `rows` (key, value, step, timestamp_ms) for `run_id`; blocks until stored."""
        with self._lock:
            self._seq += 1
            payload = pickle.dumps((self._seq, run_id, rows), protocol=pickle.HIGHEST_PROTOCOL)
            try:
                self._proc.stdin.write(_HEADER.pack(len(payload)) + payload)
                self._proc.stdin.flush()
                answer = self._proc.stdout.readline().decode()
            except (BrokenPipeError, OSError) as e:
                raise WriterError(f"metric writer process for {self.uri} is gone ({e})") from None
            if not answer:
                raise WriterError(
                    f"metric writer process for {self.uri} exited ({self._proc.poll()})"
                )
            seq, status, *msg = answer.rstrip("\n").split(" ", 2)
            if status != "ok":
                raise WriterError(msg[0] if msg else answer)

    def wait_ready(self) -> None:
        """Block until the child has imported MLflow and opened the store (an empty batch)."""
        self.write("", [])

    def disown(self) -> None:
        """In a forked child: drop this process's copies of the parent's pipe ends (the child
        must not read the parent's acknowledgements), leaving the writer to the parent."""
        for stream in (self._proc.stdin, self._proc.stdout):
            with contextlib.suppress(OSError, ValueError):
                stream.close()  # this process's copy of the fd; the parent keeps its own

    def close(self) -> None:
        with self._lock:
            if self._proc.stdin and not self._proc.stdin.closed:
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()


def writer_for(uri: str) -> WriterProcess:
    """The shared writer process for `uri` (started on first use, reused by later trials)."""
    with _LOCK:
        w = _WRITERS.get(uri)
        if w is None or not w.alive():
            w = _WRITERS[uri] = WriterProcess(uri)
        return w


def _forget_inherited_writers() -> None:
    """After a fork (lrstudy.execute.local's forked workers): the child starts its own writers."""
    global _LOCK
    _LOCK = threading.Lock()  # another thread may have held it at the fork
    for w in _WRITERS.values():
        w.disown()
    _WRITERS.clear()


os.register_at_fork(after_in_child=_forget_inherited_writers)


@atexit.register
def close_writers() -> None:
    """Stop every writer process after it stored what it was sent."""
    with _LOCK:
        writers = list(_WRITERS.values())
        _WRITERS.clear()
    for w in writers:
        w.close()


def bulk_enabled(uri: str) -> bool:
    """Whether the writer for `uri` uses the bulk path (see module doc)."""
    from lrstudy.track.bulk_metrics import bulk_capable

    if os.environ.get("LRSTUDY_BULK_METRICS", "1").strip() == "0":
        return False
    # With an active model id, log_batch also writes logged_model_metrics, which the bulk path
    # does not; MLflow takes it from these variables in a fresh process like this one.
    if os.environ.get("MLFLOW_ACTIVE_MODEL_ID") or os.environ.get("_MLFLOW_ACTIVE_MODEL_ID"):
        return False
    return bulk_capable(uri)


def _serve(uri: str) -> None:
    from lrstudy.gc_tuning import fewer_full_collections

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fewer_full_collections()  # before importing MLflow (see lrstudy.gc_tuning)
    from mlflow.tracking import MlflowClient

    from lrstudy.track.outage import quiet_mlflow_retries

    # After MLflow's import, which resets its loggers: a database call failing during an outage
    # would print MLflow's traceback before the study's retry rides it out.
    quiet_mlflow_retries(uri)
    # Acks go to a private copy of stdout; anything else printing to fd 1 lands on stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    if uri.startswith("sqlite:///"):
        # The study may start us before it opens the store itself: a fresh store is created and
        # migrated here (~1.5 s), under the same lock, while the study imports the training stack.
        from lrstudy.track.store import first_open

        client = first_open(uri)
    else:
        client = MlflowClient(tracking_uri=uri)
    write = _bulk_writer(uri) if bulk_enabled(uri) else _log_batch_writer(client)
    try:
        _serve_loop(write, sys.stdin.buffer, out)
    except (BrokenPipeError, EOFError, pickle.UnpicklingError, struct.error):
        # The parent died mid-frame or before reading our answer (kill -9): nothing to report
        # to anyone, so leave quietly instead of printing a traceback into the user's terminal.
        pass
    finally:
        with contextlib.suppress(OSError):
            out.close()
        from lrstudy.gc_tuning import skip_final_collection

        skip_final_collection()  # every frame is committed and acknowledged: just end


Write = Callable[[str, list[tuple[str, float, int, int]]], None]


def _log_batch_writer(client) -> Write:
    from mlflow.entities import Metric

    from lrstudy.names import MLFLOW_MAX_METRICS_PER_BATCH as step

    def write(run_id: str, rows: list[tuple[str, float, int, int]]) -> None:
        for i in range(0, len(rows), step):
            metrics = [Metric(k, v, ts, s) for k, v, s, ts in rows[i : i + step]]
            client.log_batch(run_id, metrics=metrics, synchronous=True)

    return write


def _bulk_writer(uri: str) -> Write:
    from lrstudy.track.bulk_metrics import store_for, write_metrics

    opened: list = []

    def store():
        if not opened:
            opened.append(store_for(uri))
        return opened[0]

    # Open the store (and check its schema) before the readiness probe is answered, so trials
    # don't wait for it; a failure here is left to be reported with the first frame, as before.
    with contextlib.suppress(Exception):
        store()

    def write(run_id: str, rows: list[tuple[str, float, int, int]]) -> None:
        write_metrics(store(), run_id, rows)  # one transaction per frame, no 1000-row cap

    return write


def _serve_loop(write: Write, src, out) -> None:
    while True:
        head = src.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return  # parent closed stdin (or died): nothing more will come
        seq, run_id, rows = pickle.loads(src.read(_HEADER.unpack(head)[0]))
        if not rows:  # a readiness probe
            out.write(f"{seq} ok\n".encode())
            out.flush()
            continue
        try:
            write(run_id, rows)
            out.write(f"{seq} ok\n".encode())
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            out.write(f"{seq} err {type(e).__name__}: {first}\n".encode())
        out.flush()


if __name__ == "__main__":
    _serve(sys.argv[1])
