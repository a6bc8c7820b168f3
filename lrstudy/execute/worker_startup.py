"""How a study's local workers start: as fresh interpreters before the preflight, or forked once
this process holds the training stack and the data, with their early events held until the
progress display exists. Apart from the study's order of business, which only picks the way."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from lrstudy.plan import Trial


class Relay:
    """Events of workers started before the progress display exists: held until it does."""

    def __init__(self) -> None:
        self._target = None
        self._early: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        with self._lock:
            if self._target is None:
                self._early.append(event)
                return
        self._target(event)

    def connect(self, target: Callable[[dict[str, Any]], None]) -> None:
        with self._lock:
            self._target = target
            early, self._early = self._early, []
        for event in early:
            target(event)


def spawn_fresh_workers(workers: int, executor: str, relay: Relay) -> list:
    """Workers 1..N-1 of a local study as fresh interpreters, started now; none for Ray or one."""
    if executor != "local" or workers < 2:
        return []
    from lrstudy.execute.local import spawn_fresh

    return spawn_fresh(workers, relay)


def one_torch_thread() -> int:
    """Keep torch at one thread until the workers are forked: a parallel region run before the
    fork would leave its OpenMP pool unusable in them (they hang at their next one)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads


def fork_workers(workers: int, relay: Relay, trials: list[Trial], data: Any, threads: int) -> list:
    """Workers 1..N-1 forked from this process, which holds the training stack and the data now
    (fresh interpreters if forking became unsafe); torch gets its `threads` back either way."""
    from lrstudy.execute.local import can_fork, spawn_forked, spawn_fresh

    try:
        if can_fork():
            return spawn_forked(workers, relay, trials, data)
        return spawn_fresh(workers, relay)  # a library started a thread meanwhile
    finally:
        import torch

        torch.set_num_threads(threads)
