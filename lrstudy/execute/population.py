"""A claimed population under MLflow: one stacked model trains, each member is its own trial run.

Each member's run was claimed exactly like a solo trial's (`lrstudy.track.claims`), gets the same
params and tags, and receives the same metric rows at the same steps through its own MetricSink,
so the report cannot tell the engines apart except by the tag `lrstudy.engine=population`.
"""

from __future__ import annotations

import contextlib
import time
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


def batches(pending: list[Trial], order, data: Any) -> list[tuple[list[Trial], str]]:
    """The worker's next round: populations (≥ 2 trials) and single trials, in plan order, each
    with why it runs on the trial engine ("" for populations and where nobody asked).

    `trial` runs every trial alone; `auto` and `population` group every set of ≥ 2 trials that
    share a shape (`form_populations` says which, and why others cannot join): a trial that cannot
    join one runs alone, so `population` never fails a study.
    """
    if order.engine == "trial" or len(pending) < 2:
        return [([t], "") for t in pending]
    from lrstudy.train.population import form_populations

    populations, solo = form_populations(pending, data, order.population_size)
    return [(p, "") for p in populations] + [([t], why) for t, why in solo]


def take_population(batch: list[Trial], shift: Shift) -> list[Trial]:
    """Claim what we can of `batch`, train it as one population; return the trials left to retry.

    Members another worker holds are left for later; with a single member claimed it trains alone.
    """
    from lrstudy.train.population import NotVectorisable

    # One batch: a search for every member, their runs created and held by the heartbeat from
    # the first (a member claimed early must not expire while the last is claimed), one search
    # to resolve them (`Claims.claim_many`); a Ctrl-C meanwhile deletes them all.
    wanted = [
        Wanted(t.key, t.name, {**trial_tags(shift.spec, t), names.TAG_ENGINE: ENGINE_POPULATION})
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
    later = [t for t in batch if t.key in got.busy]
    if len(claimed) == 1:
        trial, run_id = claimed[0]
        track_runs.set_tags(shift.client, run_id, {names.TAG_ENGINE: ENGINE_TRIAL})
        run_trial_run(trial, run_id, shift)
        return later
    if not claimed:
        return later
    started = time.monotonic()
    for _, run_id in claimed:
        shift.heartbeat.hold(run_id)
    try:
        done = run_claimed_population(
            shift.client, shift.spec, claimed, shift.data, worker=shift.order.index
        )
    except NotVectorisable:
        # Withdrawn before training: the trial engine takes them in the next round.
        return later + [t for t, _ in claimed]
    except KeyboardInterrupt:
        for trial, _ in claimed:
            shift.killed(trial, time.monotonic() - started)
        raise
    finally:
        for _, run_id in claimed:
            shift.heartbeat.release(run_id)
    for event in done:
        shift.emit(event.as_event())
    return later


def run_claimed_population(
    client, spec: StudySpec, members: list[tuple[Trial, str]], data: Any, *, worker: int = 0
) -> list[TrialDone]:
    """Train `members` (trial, claimed run id) as one population and end every member's run.

    Raises:
        NotVectorisable: before anything trained (the caller runs the members solo instead).
        KeyboardInterrupt: after closing every member's run as killed.
        TrackingUnavailable: the tracking server stayed down past the patience.
    """
    from lrstudy.train.module import prepare
    from lrstudy.train.population import run_population

    trials = [t for t, _ in members]
    run_ids = [r for _, r in members]
    started = time.monotonic()
    sinks = [MetricSink(client, r) for r in run_ids]
    outcomes = [names.OUTCOME_FAILED] * len(members)
    finals: list[dict[str, float]] = [{} for _ in members]
    extras: list[dict[str, Any]] = [{names.TAG_LR_SOURCE: "spec"} for _ in members]
    interrupted = withdrawn = False
    try:
        for trial, run_id in members:
            _, spe = prepare(trial, data)
            track_runs.log_params(client, run_id, trial_params(trial, trial.lr, spe))
        results = run_population(trials, data, emit=lambda i, rows: sinks[i].log_many(rows),
                                 judge=_rung_judge(client, spec, members))  # fmt: skip
        for i, res in enumerate(results):
            finals[i] = {
                k: v if k == names.TRAIN_SECONDS else float32_short(v)
                for k, v in res.metrics.items()
            }
            sinks[i].log_many((k, v, res.total_steps) for k, v in finals[i].items())
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
            extras[i].update(tags)
            outcomes[i] = res.outcome
    except (KeyboardInterrupt, SystemExit):
        # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown.
        outcomes, interrupted = [names.OUTCOME_KILLED] * len(members), True
    except TrackingUnavailable:
        raise
    except Exception as e:
        from lrstudy.train.population import NotVectorisable

        if isinstance(e, NotVectorisable):
            withdrawn = True
            _withdraw(client, run_ids, sinks)
            raise
        for x in extras:
            x[names.TAG_ERROR] = f"{type(e).__name__}: {e}"[:500]
    finally:
        if not withdrawn:
            with sigint_deferred():  # a Ctrl-C here would leave members RUNNING: it waits
                _finish(client, run_ids, sinks, outcomes, extras)
    if interrupted:
        raise KeyboardInterrupt
    seconds = time.monotonic() - started
    return [
        TrialDone(
            key=t.key,
            name=t.name,
            config_key=t.config_key,
            outcome=outcomes[i],
            val_acc=finals[i].get(names.FINAL_VAL_ACC),
            seconds=seconds,
            lr=t.lr,
            lr_source="spec",
            error=extras[i].get(names.TAG_ERROR, ""),
            worker=worker,
            metric_value=final_metric(spec, finals[i], {}, None),
            # what every member logs per epoch, as its solo trial would (train.module)
            metrics_logged=(names.VAL_LOSS, names.VAL_ACC, names.TRAIN_LOSS_EPOCH, names.TRAIN_ACC),
        )
        for i, t in enumerate(trials)
    ]


def _rung_judge(client, spec: StudySpec, members: list[tuple[Trial, str]]):
    """Successive halving's judge for this population (None when the study does not halve)."""
    if spec.search.successive_halving is None:
        return None
    from lrstudy.execute.halving import judge_for, population_judge

    judge = judge_for(client, _experiment_id(client, members[0][1]), spec)
    return population_judge(judge, members, spec.rank_metric[0]) if judge else None


def _experiment_id(client, run_id: str) -> str:
    return client.get_run(run_id).info.experiment_id


def _finish(client, run_ids, sinks, outcomes, extras) -> None:
    """Flush every member's metrics, then end its run (each member independently)."""
    for i, (run_id, sink) in enumerate(zip(run_ids, sinks, strict=True)):
        try:
            sink.close()
        finally:
            if outcomes[i] in names.DONE_OUTCOMES and not still_running(client, run_id):
                outcomes[i] = names.OUTCOME_KILLED  # reaped meanwhile: see trial.run_claimed
            else:
                track_runs.end_run(client, run_id, outcome=outcomes[i], extra_tags=extras[i])


def _withdraw(client, run_ids: list[str], sinks: list[MetricSink]) -> None:
    """Nothing trained: delete the members' claims so the trial engine can claim them anew."""
    for run_id, sink in zip(run_ids, sinks, strict=True):
        with contextlib.suppress(Exception):
            sink.close()
        client.delete_run(run_id)
