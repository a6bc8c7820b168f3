"""What a worker holds while it works through its order, and one claimed trial on the trial engine.

Shared by `worker.py` (the claim loop) and `population.py` (which falls back to the trial engine
for a population of one).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lrstudy import names
from lrstudy.execute.trial import TrialDone, run_claimed
from lrstudy.interrupts import InterruptedAfter
from lrstudy.plan import Trial
from lrstudy.spec import StudySpec
from lrstudy.track.claims import Claims
from lrstudy.track.heartbeat import Heartbeat

Emit = Callable[[dict[str, Any]], None]


@dataclass
class Shift:
    """What one worker holds while it works through its order (passed to the take functions)."""

    order: Any  # worker.WorkOrder
    data: Any
    client: Any
    claims: Claims
    heartbeat: Heartbeat
    emit: Emit

    @property
    def spec(self) -> StudySpec:
        return self.order.spec

    def killed(self, trial: Trial, seconds: float) -> None:
        """Report a trial that Ctrl-C stopped (its run is already closed as killed)."""
        event = TrialDone(
            trial.key, trial.name, trial.config_key, names.OUTCOME_KILLED, None, seconds,
            trial.lr, "spec", worker=self.order.index,
        )  # fmt: skip
        with contextlib.suppress(OSError):  # the study process may be gone already
            self.emit(event.as_event())

    def settled(self, trial: Trial) -> bool:
        """True when `trial` needs nothing more from this invocation (done, or failed here)."""
        state = self.claims.state(trial.key, self.order.parent_run_id)
        if state == "done":
            self.emit({"type": "done_elsewhere", "key": trial.key})
        return state in ("done", "failed")


def run_trial_run(trial: Trial, run_id: str, shift: Shift) -> bool:
    """Train a trial whose run we hold, with the trial engine; always True (it is settled)."""
    started = time.monotonic()
    try:
        shift.heartbeat.hold(run_id)
        done = run_claimed(
            shift.client, shift.order.experiment_id, shift.spec, trial, shift.data, run_id,
            worker=shift.order.index,
        )  # fmt: skip
    except InterruptedAfter as e:
        shift.emit(e.done.as_event())  # it finished: report it as such, then stop
        raise KeyboardInterrupt from None
    except KeyboardInterrupt:
        shift.killed(trial, time.monotonic() - started)
        raise
    finally:
        shift.heartbeat.release(run_id)
    shift.emit(done.as_event())
    # A failed trial stays undone on purpose: the next invocation retries it.
    return True
