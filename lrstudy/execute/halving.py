"""Successive halving while a trial trains: judge it at each rung, stop it when told.

The decisions themselves (ASHA's rule, recorded in the store) live in `track/rungs.py`; this
module asks at the right moments, on the trial engine (a Lightning callback) and for a
population (a function the population module calls with every member at the rung).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L

from lrstudy import names
from lrstudy.plan import Trial
from lrstudy.spec import StudySpec
from lrstudy.track.rungs import Decision, RungEntry, RungJudge


def judge_for(client, experiment_id: str, spec: StudySpec) -> RungJudge | None:
    """The study's rung judge, or None when it does not use successive halving."""
    halving = spec.search.successive_halving
    if halving is None:
        return None
    return RungJudge(client, experiment_id, spec.name, spec.spec_hash(),
                     mode=spec.rank_metric[1], eta=halving.eta)  # fmt: skip


def pruned_tags(epoch: int, step: int) -> dict[str, Any]:
    """What a stopped trial's run says about its stop (its outcome is `OUTCOME_PRUNED`)."""
    return {
        names.TAG_PRUNED_RUNG: str(epoch),
        names.TAG_PRUNED_STEP: str(step),
    }


class RungCallback(L.Callback):
    """Asks the judge at every rung epoch's end (after validation and the tracking callback's
    epoch rows) and stops training when the configuration is out; `pruned_at` then says where."""

    def __init__(self, judge: RungJudge, trial: Trial, run_id: str, metric: str) -> None:
        self.judge, self.trial, self.run_id, self.metric = judge, trial, run_id, metric
        self.rungs = set(trial.halving["rungs"]) if trial.halving else set()
        self.pruned_at: tuple[int, int] | None = None  # (rung epoch, global step)
        self.decision: Decision | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch not in self.rungs or trainer.should_stop:  # diverged: that is its outcome
            return
        value = trainer.callback_metrics.get(self.metric)
        value = float(value) if value is not None else math.nan
        entry = RungEntry(self.run_id, self.trial.key, self.trial.config_key, value)
        decision = self.judge.judge(epoch, [entry])[0]
        if decision.stop:
            self.pruned_at, self.decision = (epoch, trainer.global_step), decision
            trainer.should_stop = True


def population_judge(
    judge: RungJudge, members: list[tuple[Trial, str]], metric: str
) -> Callable[[int, list[tuple[int, dict[str, float]]]], list[bool]]:
    """For the population module: judge(epoch, [(member, its epoch row)]) -> stop each?

    Members at a rung together compete with each other as well as with the store's record."""

    def decide(epoch: int, at_rung: list[tuple[int, dict[str, float]]]) -> list[bool]:
        entries = [
            RungEntry(
                members[i][1],
                members[i][0].key,
                members[i][0].config_key,
                float(row.get(metric, math.nan)),
            )  # fmt: skip
            for i, row in at_rung
        ]
        return [d.stop for d in judge.judge(epoch, entries)]

    return decide
