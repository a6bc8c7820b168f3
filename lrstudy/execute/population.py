"""A claimed population under MLflow: one stacked model trains, each member is its own trial run.

Each member's run was claimed exactly like a solo trial's (`lrstudy.track.claims`), gets the same
params and tags, and receives the same metric rows at the same steps through its own MetricSink,
so the report cannot tell the engines apart except by the tag `lrstudy.engine=population`.

A population's slots freed by members that stopped (successive halving, divergence, the end of
their epochs) take new work from its `Reserve`: trials of the worker's later populations of the
same shape, claimed the same way when a slot is free and trained from their own step 0 beside the
others (`train.population.module`).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lrstudy import names
from lrstudy.execute.params import trial_params
from lrstudy.execute.shift import Shift, run_trial_run
from lrstudy.execute.trial import (
    ENGINE_TRIAL,
    TrialDone,
    final_metric,
    still_running,
    trial_tags,
)
from lrstudy.interrupts import sigint_deferred
from lrstudy.plan import Trial
from lrstudy.spec import StudySpec
from lrstudy.track import runs as track_runs
from lrstudy.track.claims import Wanted
from lrstudy.track.outage import TrackingUnavailable
from lrstudy.track.sink import MetricSink
from lrstudy.track.ui_view import float32_short

ENGINE_POPULATION = "population"
ENGINES = ("auto", ENGINE_TRIAL, ENGINE_POPULATION)


def batches(
    pending: list[Trial], order, data: Any, cap: int | None = None
) -> list[tuple[list[Trial], str]]:
    """The worker's next round: populations (≥ 2 trials) and single trials, in plan order, each
    with why it runs on the trial engine ("" for populations and where nobody asked).

    `trial` runs every trial alone; `auto` and `population` group every set of ≥ 2 trials that
    share a shape (`form_populations` says which, and why others cannot join): a trial that cannot
    join one runs alone, so `population` never fails a study. `cap`: members per population at
    most, whatever the size.
    """
    if order.engine == "trial" or len(pending) < 2:
        return [([t], "") for t in pending]
    from lrstudy.train.population import form_populations

    populations, solo = form_populations(pending, data, order.population_size, cap)
    return [(p, "") for p in populations] + [([t], why) for t, why in solo]


@dataclass
class Reserve:
    """Trials of the worker's later populations with this one's shape, for its freed slots.

    `taken` is the worker's: keys claimed (or found settled) here, which it skips when it reaches
    their own population; a key another worker holds stays there for its own turn."""

    trials: list[Trial]
    taken: set[str]
    tried: set[str] = field(default_factory=set)

    def offer(self, n: int) -> list[Trial]:
        out = [t for t in self.trials if t.key not in self.taken and t.key not in self.tried][:n]
        self.tried.update(t.key for t in out)
        return out


Join = Callable[[int], list[tuple[Trial, str]]]  # free slots -> newcomers (trial, claimed run)


def claim_members(
    batch: list[Trial], shift: Shift, population: str, extra: dict[str, dict] | None = None
) -> tuple[list[tuple[Trial, str]], list[Trial]]:
    """Claim what we can of `batch` as population members: (claimed (trial, run id), busy).

    One batch: a search for every member, their runs created and held by the heartbeat from the
    first (a member claimed early must not expire while the last is claimed), one search to
    resolve them (`Claims.claim_many`); a Ctrl-C meanwhile deletes them all. `extra`: more tags
    per trial key."""
    wanted = [
        Wanted(
            t.key,
            t.name,
            {
                **trial_tags(shift.spec, t),
                names.TAG_ENGINE: ENGINE_POPULATION,
                names.TAG_POPULATION: population,
                **(extra or {}).get(t.key, {}),
            },
        )  # fmt: skip
        for t in batch
    ]
    got = shift.claims.claim_many(
        wanted,
        shift.order.parent_run_id,
        hold=shift.heartbeat.hold,
        release=shift.heartbeat.release,
    )
    for key in got.done:
        shift.emit({"type": "done_elsewhere", "key": key})
    claimed = [(t, got.won[t.key]) for t in batch if t.key in got.won]
    return claimed, [t for t in batch if t.key in got.busy]


def same_shape(first: Trial, later: list[tuple[list[Trial], str]]) -> list[Trial]:
    """The trials of later populations (`batches`) that could join `first`'s population."""
    from lrstudy.train.population.grouping import population_key

    key, slots = population_key(first), first.tpe is not None  # TPE slots join TPE slots only
    return [t for batch, _ in later if len(batch) > 1 and population_key(batch[0]) == key
            and (batch[0].tpe is not None) == slots for t in batch]  # fmt: skip


def take_population(
    batch: list[Trial], shift: Shift, reserve: Reserve | None = None
) -> list[Trial]:
    """Claim what we can of `batch`, train it as one population; return the trials left to retry.

    Members another worker holds are left for later; with a single member claimed it trains alone.
    Freed slots take trials from `reserve` (claimed when a slot frees, one batch per epoch end).
    """
    population = uuid.uuid4().hex[:12]
    claimed, later = claim_members(batch, shift, population)

    def join(free: int) -> list[tuple[Trial, str]]:
        got: list[tuple[Trial, str]] = []
        while reserve is not None and len(got) < free:
            offered = reserve.offer(free - len(got))
            if not offered:
                break
            won, _ = claim_members(offered, shift, population)
            reserve.taken.update(t.key for t, _ in won)
            got += won
        return got

    if claimed and len(claimed) < len(batch):  # others hold some: fill the population up
        claimed += join(len(batch) - len(claimed))
    if not claimed:
        return later
    if not train_members(claimed, shift, join):
        return later + [t for t, _ in claimed]  # withdrawn: the trial engine takes them next
    return later


def train_members(claimed: list[tuple[Trial, str]], shift: Shift, join: Join | None) -> bool:
    """Train claimed members (trial, run id) as one population, newcomers from `join` in its
    freed slots; a single member alone on the trial engine. Reports each member as it stops.

    Returns False when the model turned out not to vectorise before anything trained (the runs
    are withdrawn; the caller hands the trials to the trial engine).
    """
    from lrstudy.train.population import NotVectorisable

    if len(claimed) == 1:
        trial, run_id = claimed[0]
        track_runs.set_tags(shift.client, run_id, {names.TAG_ENGINE: ENGINE_TRIAL})
        shift.client.delete_tag(run_id, names.TAG_POPULATION)
        return run_trial_run(trial, run_id, shift)
    members = list(claimed)  # grows as newcomers join
    reported: set[str] = set()

    def joined(free: int) -> list[tuple[Trial, str]]:
        got = join(free) if join else []
        members.extend(got)
        return got

    def on_done(done: TrialDone) -> None:  # its run is ended: no more beats, and tell the study
        shift.heartbeat.release(next(r for t, r in members if t.key == done.key))
        reported.add(done.key)
        shift.emit(done.as_event())

    started = time.monotonic()
    for _, run_id in claimed:
        shift.heartbeat.hold(run_id)
    try:
        run_claimed_population(shift.client, shift.spec, claimed, shift.data,
                               worker=shift.order.index, join=joined if join else None,
                               on_done=on_done)  # fmt: skip
    except NotVectorisable:
        return False
    except KeyboardInterrupt:
        for trial, _ in members:
            if trial.key not in reported:
                shift.killed(trial, time.monotonic() - started)
        raise
    finally:
        for _, run_id in members:
            shift.heartbeat.release(run_id)
    return True


def run_claimed_population(
    client,
    spec: StudySpec,
    members: list[tuple[Trial, str]],
    data: Any,
    *,
    worker: int = 0,
    join: Callable[[int], list[tuple[Trial, str]]] | None = None,
    on_done: Callable[[TrialDone], None] | None = None,
) -> list[TrialDone]:
    """Train `members` (trial, claimed run id) as one population and end every member's run.

    Each member's run is ended as soon as that member stops (diverged, stopped at a rung, or
    trained to the end), so what finished is safe in the store while the others train on;
    `on_done` hears of it then. `join(free slots)`: newcomers (trial, claimed run id) for slots
    freed at an epoch's end; they become members like the first ones.

    Raises:
        NotVectorisable: before anything trained (the caller runs the members solo instead).
        KeyboardInterrupt: after closing every member's run still open as killed.
        TrackingUnavailable: the tracking server stayed down past the patience.
    """
    from lrstudy.train.population import run_population

    roster = _Roster(client, spec, data, worker, on_done)
    interrupted = False

    def refill(free: int) -> list[Trial]:
        return roster.enrol(join(free) if join else [])

    try:
        roster.enrol(members)
        run_population(
            [t for t, _ in members],
            data,
            emit=lambda i, rows: roster.sinks[i].log_many(rows),
            judge=_rung_judge(client, spec, roster.members),
            refill=refill if join else None,
            on_done=roster.done,
        )
    except (KeyboardInterrupt, SystemExit):
        # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown.
        interrupted = True
        for i, ended in enumerate(roster.ended):
            if ended is None:
                roster.outcomes[i] = names.OUTCOME_KILLED
    except TrackingUnavailable:
        raise
    except Exception as e:
        from lrstudy.train.population import NotVectorisable

        if isinstance(e, NotVectorisable):
            roster.withdraw()
            raise
        for x in roster.extras:
            x[names.TAG_ERROR] = f"{type(e).__name__}: {e}"[:500]
    finally:
        if not roster.withdrawn:
            with sigint_deferred():  # a Ctrl-C here would leave members RUNNING: it waits
                roster.end_rest()
    if interrupted:
        raise KeyboardInterrupt
    return [roster.event(i) for i in range(len(roster.members))]


class _Roster:
    """A population's members and their runs (index i: member i, newcomers appended)."""

    def __init__(self, client, spec: StudySpec, data: Any, worker: int, on_done) -> None:
        self.client, self.spec, self.data, self.worker = client, spec, data, worker
        self.on_done = on_done
        self.started = time.monotonic()
        self.members: list[tuple[Trial, str]] = []
        self.sinks: list[MetricSink] = []
        self.outcomes: list[str] = []
        self.finals: list[dict[str, float]] = []
        self.extras: list[dict[str, Any]] = []
        self.ended: list[float | None] = []  # seconds after the start when its run was ended
        self.withdrawn = False

    def enrol(self, new: list[tuple[Trial, str]]) -> list[Trial]:
        """Take these claimed members on and log their params; returns their trials."""
        from lrstudy.train.module import prepare

        for trial, run_id in new:  # first every run's place, so each is ended whatever happens
            self.members.append((trial, run_id))
            self.sinks.append(MetricSink(self.client, run_id))
            self.outcomes.append(names.OUTCOME_FAILED)
            self.finals.append({})
            self.extras.append({names.TAG_LR_SOURCE: "spec"})
            self.ended.append(None)
        for trial, run_id in new:
            _, spe = prepare(trial, self.data)
            track_runs.log_params(self.client, run_id, trial_params(trial, trial.lr, spe))
        return [t for t, _ in new]

    def done(self, i: int, res: Any) -> None:
        """Member i stopped with this MemberResult: log its final values and end its run now."""
        self.finals[i] = {
            k: v if k == names.TRAIN_SECONDS else float32_short(v) for k, v in res.metrics.items()
        }
        self.sinks[i].log_many((k, v, res.total_steps) for k, v in self.finals[i].items())
        tags = {
            names.TAG_PARAM_GROUPS: ",".join(res.param_groups),
            names.TAG_DEVICE: str(getattr(res, "device", "cpu")),
        }
        if res.diverged_at is not None:
            tags[names.TAG_DIVERGED_AT] = res.diverged_at
            tags[names.TAG_DIVERGED_REASON] = res.diverged_reason
        if res.pruned_at is not None:
            from lrstudy.execute.halving import pruned_tags

            tags.update(pruned_tags(*res.pruned_at))
        self.extras[i].update(tags)
        self.outcomes[i] = res.outcome
        with sigint_deferred():  # a Ctrl-C here would leave this member RUNNING: it waits
            self._end(i)
        if self.on_done is not None:
            self.on_done(self.event(i))

    def end_rest(self) -> None:
        """End every run not ended yet, with its outcome so far (killed, failed)."""
        for i in range(len(self.members)):
            if self.ended[i] is None:
                self._end(i)

    def _end(self, i: int) -> None:
        """Flush member i's metrics, then end its run (each member independently)."""
        run_id, sink = self.members[i][1], self.sinks[i]
        self.ended[i] = time.monotonic() - self.started
        try:
            sink.close()
        finally:
            if self.outcomes[i] in names.DONE_OUTCOMES and not still_running(self.client, run_id):
                self.outcomes[i] = names.OUTCOME_KILLED  # reaped meanwhile: see trial.run_claimed
            else:
                track_runs.end_run(self.client, run_id, outcome=self.outcomes[i],
                                   extra_tags=self.extras[i])  # fmt: skip

    def withdraw(self) -> None:
        """Nothing trained: delete the members' claims so the trial engine can claim them anew."""
        self.withdrawn = True
        for (_, run_id), sink in zip(self.members, self.sinks, strict=True):
            with contextlib.suppress(Exception):
                sink.close()
            self.client.delete_run(run_id)

    def event(self, i: int) -> TrialDone:
        t = self.members[i][0]
        # its own training time (a newcomer started after the others), else the time so far
        seconds = self.finals[i].get(names.TRAIN_SECONDS)
        if seconds is None:
            seconds = (
                self.ended[i] if self.ended[i] is not None else time.monotonic() - self.started
            )
        return TrialDone(
            key=t.key,
            name=t.name,
            config_key=t.config_key,
            outcome=self.outcomes[i],
            val_acc=self.finals[i].get(names.FINAL_VAL_ACC),
            seconds=seconds,
            lr=t.lr,
            lr_source="spec",
            error=self.extras[i].get(names.TAG_ERROR, ""),
            worker=self.worker,
            metric_value=final_metric(self.spec, self.finals[i], {}, None),
            # what every member logs per epoch, as its solo trial would (train.module)
            metrics_logged=(names.VAL_LOSS, names.VAL_ACC, names.TRAIN_LOSS_EPOCH, names.TRAIN_ACC),
        )


def _rung_judge(client, spec: StudySpec, members: list[tuple[Trial, str]]):
    """Successive halving's judge for this population (None when the study does not halve)."""
    if spec.search.successive_halving is None:
        return None
    from lrstudy.execute.halving import judge_for, population_judge

    judge = judge_for(client, _experiment_id(client, members[0][1]), spec)
    return population_judge(judge, members, spec.rank_metric[0]) if judge else None


def _experiment_id(client, run_id: str) -> str:
    return client.get_run(run_id).info.experiment_id
