"""Ctrl-C: held at moments where it would leave the store half-written, and never lost.

Python delivers SIGINT as a KeyboardInterrupt at whatever bytecode runs next. When that is a
finalizer (a `__del__`, a weakref or garbage-collector callback), Python prints "Exception
ignored in ..." with a traceback and carries on: the Ctrl-C is gone, and a worker went on
training its trial and claiming the next (seen in CI). While `watch_interrupts` is on, the
handler also records the request, and `check_interrupt` (at every training step and before
every claim) raises it again.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

# The state of this process's watch (main thread only; signals reach no other).
_watch = {"on": False, "requested": False, "once": False}


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _watch["requested"] and _watch["once"]:
        return  # a worker is closing its runs already; another one would land in that
    _watch["requested"] = True
    raise KeyboardInterrupt


def _unraisable(args: Any) -> None:
    # A Ctrl-C that a finalizer swallowed: `check_interrupt` raises it again; its traceback
    # would only look like a crash.
    if _watch["requested"] and issubclass(args.exc_type, KeyboardInterrupt):
        return
    sys.__unraisablehook__(args)


def watch_interrupts(*, once: bool) -> Callable[[], None]:
    """Install the recording SIGINT handler; returns the function that puts back what was there.

    `once`: later SIGINTs are ignored (a worker process: one is enough to close its runs, and a
    forwarded or repeated Ctrl-C would land in that). Otherwise each one raises (the study
    process: a second Ctrl-C may cut its wait for the workers short)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGINT, _on_sigint)
    previous_hook = sys.unraisablehook
    _watch.update(on=True, requested=False, once=once)
    sys.unraisablehook = _unraisable

    def restore() -> None:
        _watch.update(on=False, requested=False)
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGINT, previous)

    return restore


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C came and was swallowed (see the module docstring).
    A no-op unless `watch_interrupts` is on: the plugin callback calls it in users' trainers."""
    if _watch["on"] and _watch["requested"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def sigint_deferred(*, raise_after: bool = True) -> Iterator[Callable[[], bool]]:
    """Hold SIGINT until the block ends; then raise KeyboardInterrupt (`raise_after`), or let the
    caller ask the yielded function whether one came. Main thread only (elsewhere a no-op: only
    the main thread receives signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)
        _watch["requested"] = True  # the KeyboardInterrupt raised after the block is this one

    previous = signal.signal(signal.SIGINT, hold)
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
