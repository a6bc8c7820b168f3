"""Local worker processes: `lrstudy run --workers N` on one machine.

The study process is worker 0 itself (it has already imported torch and loaded the data, so
`--workers 1` is exactly the single-process path); workers 1..N-1 are separate processes that
read a pickled `WorkOrder` from a pipe and write events as JSON lines to another (stdout stays
free for anything libraries print). They share nothing with the study process but the tracking
store: the claims keep every trial exactly once.

Two ways to start them:
- **forked** from the study process once it has imported the training stack and loaded the data
  (`spawn_forked`). A worker then starts with nothing left to import or load: two cold imports of
  torch and Lightning competing for two cores cost a 2-worker study seconds. Forking is safe only
  while the study process runs no other thread and torch has not used its OpenMP pool with more
  than one thread (a child's next parallel region would hang): `run_study` checks that torch was
  not imported before it started, and keeps torch at one thread until the workers exist.
- **fresh interpreters** (`spawn_fresh`, `python -m lrstudy.execute.worker EVENTS_FD ORDER_FD`)
  otherwise, e.g. from a notebook that trained something first. They start before the study is
  planned, so their imports overlap the study process's own set-up.

Stopping: Ctrl-C reaches the whole process group, so every worker closes its trial as killed
and exits; a SIGINT sent only to the study process is forwarded. Workers also get SIGINT when the
study process dies (PR_SET_PDEATHSIG), so `kill -9` of the study leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
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
# The order pipes' write ends this process holds: a forked worker closes the ones it inherits,
# or a worker dismissed before it would never see the end of its order.
_ORDER_ENDS: set[int] = set()


class _Forked:
    """A forked worker with the part of `subprocess.Popen`'s interface used here."""

    def __init__(self, target: Callable[..., None], args: tuple, index: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self._p = ctx.Process(target=target, args=args, name=f"lrstudy-worker-{index}")
        self._p.start()
        self.pid = self._p.pid

    def poll(self) -> int | None:
        return self._p.exitcode

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self._p.kill()

    def wait(self, timeout: float | None = None) -> int:
        self._p.join(timeout)
        if self._p.exitcode is None:
            raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout or 0)
        return self._p.exitcode


class WorkerProcess:
    """One worker process and the thread that forwards its events.

    `inherited`: (trials, data) to fork with; None starts a fresh interpreter instead.
    """

    def __init__(
        self,
        index: int,
        on_event: Callable[[dict[str, Any]], None],
        inherited: tuple[list, Any] | None = None,
    ) -> None:
        self.index = index
        self.last_event: dict[str, Any] | None = None
        read_fd, write_fd = os.pipe()
        order_r, self._order_w = os.pipe()
        # The child starts with SIGINT blocked (the mask survives fork and exec): a Ctrl-C during
        # its start-up would kill it with a fatal error instead of a clean stop. It unblocks once
        # it can stop cleanly, and a Ctrl-C that came meanwhile is delivered then.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            if inherited is None:
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
                argv = [sys.executable, "-m", "lrstudy.execute.worker", str(write_fd), str(order_r)]
                self.proc = subprocess.Popen(argv, pass_fds=(write_fd, order_r), env=env)
            else:
                from lrstudy.execute.worker import serve_forked

                closing = (read_fd, self._order_w, *_ORDER_ENDS)
                args = (write_fd, order_r, *inherited, closing)
                self.proc = _Forked(serve_forked, args, index)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        os.close(write_fd)
        os.close(order_r)
        _ORDER_ENDS.add(self._order_w)
        self._order_open = True
        self._on_event = on_event
        self._events = os.fdopen(read_fd, "r")
        self._thread = threading.Thread(
            target=self._pump, name=f"lrstudy-worker-{index}", daemon=True
        )
        self._thread.start()

    def send(self, order: WorkOrder) -> None:
        """Hand the worker its order (a fresh one has been importing the training stack)."""
        payload = memoryview(pickle.dumps(order))
        try:
            while payload:
                payload = payload[os.write(self._order_w, payload) :]
        finally:
            self.dismiss()

    def dismiss(self) -> None:
        """Close the order pipe: a worker that got no order exits (nothing to do, bad input)."""
        if self._order_open:
            self._order_open = False
            _ORDER_ENDS.discard(self._order_w)
            with contextlib.suppress(OSError):
                os.close(self._order_w)

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


def spawn_fresh(n: int, on_event: Callable[[dict[str, Any]], None]) -> list[WorkerProcess]:
    """Start workers 1..n-1 as fresh interpreters now, before the study is even planned: their
    seconds of imports then overlap the study process's own set-up."""
    return [WorkerProcess(i, on_event) for i in range(1, n)]


def spawn_forked(
    n: int, on_event: Callable[[dict[str, Any]], None], trials: list, data: Any
) -> list[WorkerProcess]:
    """Fork workers 1..n-1 from this process, which holds the training stack and the data."""
    return [WorkerProcess(i, on_event, (trials, data)) for i in range(1, n)]


def can_fork() -> bool:
    """Whether forking this process now is safe: Linux-style fork, and no thread but this one
    (a lock another thread holds would stay held in the child forever)."""
    return hasattr(os, "fork") and sys.platform != "darwin" and threading.active_count() == 1


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
