"""Ctrl-C at moments where it would leave the store half-written: held until the moment passes."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def sigint_deferred(*, raise_after: bool = True) -> Iterator[Callable[[], bool]]:
    """Hold SIGINT until the block ends; then raise KeyboardInterrupt (`raise_after`), or let the
    caller ask the yielded function whether one came. Main thread only (elsewhere a no-op: only
    the main thread receives signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield lambda: bool(caught)
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and raise_after:
        raise KeyboardInterrupt


class InterruptedAfter(KeyboardInterrupt):
    """Ctrl-C came while a finished trial's run was being ended: the run ended with its real
    outcome, and `done` (a `TrialDone`) is still to be reported before stopping."""

    def __init__(self, done: object) -> None:
        super().__init__()
        self.done = done
