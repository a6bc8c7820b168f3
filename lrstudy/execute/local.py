"""Local worker processes: `lrstudy run --workers N` on one machine.

The study process is worker 0 itself (it has already imported torch and loaded the data, so
`--workers 1` is exactly the single-process path); workers 1..N-1 are
`python -m lrstudy.execute.worker FD` processes that read a pickled `WorkOrder` on stdin and write events
as JSON lines to a private pipe (stdout stays free for anything libraries print). They share
nothing with the study process but the tracking store: the claims keep every trial exactly once.

Stopping: Ctrl-C reaches the whole process group, so every worker closes its trial as killed
and exits; a SIGINT sent only to the study process is forwarded. Workers also get SIGINT when the
study process dies (PR_SET_PDEATHSIG), so `kill -9` of the study leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from lrstudy.execute.worker import WorkOrder

_STOP_GRACE_S = 30.0  # a worker closing its runs after Ctrl-C; then it is killed
_FORWARD_AFTER_S = 3.0


class WorkerProcess:
    """One worker process and the thread that forwards its events."""

    def __init__(self, index: int, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.index = index
        self.last_event: dict[str, Any] | None = None
        read_fd, write_fd = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        # The child starts with SIGINT blocked (the mask survives exec): a Ctrl-C during its
        # interpreter start-up would kill it with a fatal error instead of a clean stop. It
        # unblocks once it can stop cleanly, and a Ctrl-C that came meanwhile is delivered then.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lrstudy.execute.worker", str(write_fd)],
                stdin=subprocess.PIPE,
                pass_fds=(write_fd,),
                env=env,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        os.close(write_fd)
        self._on_event = on_event
        self._events = os.fdopen(read_fd, "r")
        self._thread = threading.Thread(
            target=self._pump, name=f"lrstudy-worker-{index}", daemon=True
        )
        self._thread.start()

    def send(self, order: WorkOrder) -> None:
        """Hand the worker its order (it has been importing the training stack meanwhile)."""
        self.proc.stdin.write(pickle.dumps(order))
        self.proc.stdin.close()

    def dismiss(self) -> None:
        """No order after all (nothing to do, or bad input): the worker exits on end of input."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    def _pump(self) -> None:
        for line in self._events:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            event.setdefault("worker", self.index)
            self.last_event = event
            self._on_event(event)

    def interrupt(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; kills the worker if it has not exited within `timeout` seconds."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._thread.join(timeout=5)
        return code


def spawn_workers(n: int, on_event: Callable[[dict[str, Any]], None]) -> list[WorkerProcess]:
    """Start workers 1..n-1 now, before the study is even planned: their seconds of imports then
    overlap the study process's own set-up. They wait for their order on stdin."""
    return [WorkerProcess(i, on_event) for i in range(1, n)]


def send_orders(procs: list[WorkerProcess], base: WorkOrder) -> list[WorkerProcess]:
    """Give each worker its rotation of the keys; dismiss workers beyond the number of trials."""
    from lrstudy.execute.worker import spread

    n = min(len(procs) + 1, len(base.keys))
    for p in procs[n - 1 :]:
        p.dismiss()
    busy = procs[: n - 1]
    for p in busy:
        p.send(base.replace(keys=spread(list(base.keys), p.index, n), index=p.index))
    return busy


def stop_workers(procs: list[WorkerProcess], *, interrupted: bool) -> list[int]:
    """Wait for every worker; after Ctrl-C give each a grace period to close its runs."""
    if interrupted:
        # A terminal's Ctrl-C has reached the workers already; a second SIGINT while they close
        # their runs would only add noise, so forward it only to those still running after a
        # moment (the study process alone was signalled).
        for p in procs:
            try:
                p.proc.wait(timeout=_FORWARD_AFTER_S)
            except subprocess.TimeoutExpired:
                p.interrupt()
    return [p.wait(timeout=_STOP_GRACE_S if interrupted else None) for p in procs]
