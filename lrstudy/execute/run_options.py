"""The options of one `run` checked before anything starts: --workers, --executor, --engine and
--population-size, and the default worker count. Apart from the study so that the CLI can check
them without importing the study's machinery (workers, progress display, tracking writer)."""

from __future__ import annotations

import os
from typing import Any

from lrstudy.errors import UserInputError

EXECUTORS = ("local", "ray")


def default_workers() -> int:
    """$LRSTUDY_WORKERS, else the cores this process may use (affinity-aware)."""
    raw = os.environ.get("LRSTUDY_WORKERS")
    if raw:
        try:
            return int(raw)
        except ValueError:
            raise UserInputError(
                f"LRSTUDY_WORKERS: {raw!r} is not allowed; give an integer >= 1"
            ) from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def check_workers(workers: Any, executor: str) -> int:
    """Validate --workers / --executor (Raises: UserInputError, one line each)."""
    if executor not in EXECUTORS:
        raise UserInputError(
            f"--executor: {executor!r} is not an executor; allowed: {', '.join(EXECUTORS)}"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UserInputError(f"--workers: {workers} is not allowed; give an integer >= 1")
    return workers


def check_engine(engine: Any, population_size: Any) -> None:
    """Validate --engine / --population-size (Raises: UserInputError, one line each)."""
    from lrstudy.execute.population import ENGINES

    if engine not in ENGINES:
        raise UserInputError(
            f"--engine: {engine!r} is not an engine; allowed: {', '.join(ENGINES)}"
        )
    if population_size is not None and (
        isinstance(population_size, bool)
        or not isinstance(population_size, int)
        or population_size < 1
    ):
        raise UserInputError(
            f"--population-size: {population_size} is not allowed; give an integer >= 1"
        )
