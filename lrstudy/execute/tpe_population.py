"""TPE slots trained as populations (`--engine auto|population`).

A slot's configuration exists only once its first seed is claimed and sampled (`execute/tpe.py`),
so a batch of slots is claimed first (every seed of a slot together where it can), then each
first seed samples, in slot order (each sample told the ones before it as running: the constant
liar keeps them apart), and each later seed takes its slot's record. The configured trials then
group as any others (`form_populations`): same-shape ones train as one population, the rest on the
trial engine with their reason. A population's freed slots take the next slots of the worker's
plan, sampled when they join, so TPE sees every configuration finished so far (those stopped by
successive halving included) before it picks the next: the sequential model-based search, at a
population's pace. A newcomer whose sampled configuration has another shape (another optimizer or
batch size) trains on the trial engine after the population.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid

from lrstudy import names
from lrstudy.errors import UserInputError
from lrstudy.execute.population import Reserve, claim_members, train_members
from lrstudy.execute.shift import Shift, run_trial_run
from lrstudy.execute.tpe import TAG_TPE_SLOT, configure, slot_record
from lrstudy.execute.trial import ENGINE_TRIAL, TrialDone
from lrstudy.plan import Trial
from lrstudy.track import runs as track_runs
from lrstudy.track.outage import TrackingUnavailable

Claimed = list[tuple[Trial, str]]


def take_slots(batch: list[Trial], shift: Shift, reserve: Reserve | None = None) -> list[Trial]:
    """Claim, sample and train a batch of TPE slots' seeds as populations; return those to retry
    later (held by another worker, or a later seed whose slot has no configuration yet)."""
    from lrstudy.train.population.grouping import form_populations, population_key

    population = uuid.uuid4().hex[:12]
    ready, later = _ready(batch, shift)
    claimed, busy = claim_members(ready, shift, population, _slot_tags(ready))
    configured, waiting = _configure_all(claimed, shift)
    groups, solo = form_populations([t for t, _ in configured], shift.data,
                                    shift.order.population_size)  # fmt: skip
    run_of = {t.key: run_id for t, run_id in configured}
    alone = [(t, run_of[t.key], why) for t, why in solo]
    for members in groups:
        join = _joiner(reserve, shift, population, population_key(members[0]), alone)
        if not train_members([(t, run_of[t.key]) for t in members], shift, join):
            # Withdrawn before training: their runs are gone, their records stay on no run;
            # the next round claims and samples them again.
            waiting += members
    for trial, run_id, why in alone:
        track_runs.set_tags(shift.client, run_id, {names.TAG_ENGINE: ENGINE_TRIAL,
                                                   names.TAG_ENGINE_REASON: why[:500]})  # fmt: skip
        shift.client.delete_tag(run_id, names.TAG_POPULATION)
        run_trial_run(trial, run_id, shift)
    return later + busy + waiting


def _slot_tags(trials: list[Trial]) -> dict[str, dict]:
    return {t.key: {TAG_TPE_SLOT: t.tpe["slot_id"]} for t in trials}


def _ready(batch: list[Trial], shift: Shift) -> tuple[list[Trial], list[Trial]]:
    """(seeds that can be claimed now, seeds for later): a later seed needs its slot's record,
    or its first seed beside it in this batch (sampled first)."""
    spec = shift.spec
    first = spec.seeds[0]
    heads = {t.tpe["slot_id"] for t in batch if t.seed == first}
    ready, later = [], []
    for t in batch:
        sid = t.tpe["slot_id"]
        recorded = t.seed == first or sid in heads
        if recorded or slot_record(shift.client, shift.order.experiment_id, spec, sid):
            ready.append(t)
        else:
            head = dataclasses.replace(t, seed=first)
            if shift.claims.state(head.key, shift.order.parent_run_id) != "failed":
                later.append(t)  # (a slot whose head failed here waits for the next invocation)
    return ready, later


def _configure_all(claimed: Claimed, shift: Shift) -> tuple[Claimed, list[Trial]]:
    """Each claimed seed's real trial (first seeds sample, in slot order; later seeds read the
    record): (configured (trial, run id), seeds released for later: their slot's first seed was
    held elsewhere and is not sampled yet). A seed whose sampling fails ends failed, reported."""
    spec, client, exp = shift.spec, shift.client, shift.order.experiment_id
    first = spec.seeds[0]
    order = sorted(claimed, key=lambda c: (c[0].seed != first, c[0].tpe["slot"]))
    configured: Claimed = []
    released: list[Trial] = []
    started = time.monotonic()
    for n, (slot, run_id) in enumerate(order):
        try:
            configured.append(
                (configure(client, exp, spec, slot, run_id, sample=slot.seed == first), run_id)
            )
        except KeyboardInterrupt:
            for t, r in order[n:]:  # what is configured is closed by the caller's population
                shift.heartbeat.release(r)
                with contextlib.suppress(Exception):
                    track_runs.end_run(client, r, outcome=names.OUTCOME_KILLED)
                shift.killed(t, time.monotonic() - started)
            for t, r in configured:
                shift.heartbeat.release(r)
                with contextlib.suppress(Exception):
                    track_runs.end_run(client, r, outcome=names.OUTCOME_KILLED)
                shift.killed(t, time.monotonic() - started)
            raise
        except (UserInputError, TrackingUnavailable):
            raise
        except RuntimeError:
            if slot.seed == first:
                _failed(slot, run_id, shift, started)
            else:  # its slot is not sampled yet (the first seed is elsewhere): give it back
                shift.heartbeat.release(run_id)
                client.delete_run(run_id)
                released.append(slot)
        except Exception:  # noqa: BLE001 - one slot failing must not end the study
            _failed(slot, run_id, shift, started)
    return configured, released


def _failed(slot: Trial, run_id: str, shift: Shift, started: float) -> None:
    import sys

    e = sys.exc_info()[1]
    error = f"{type(e).__name__}: {e}"[:500]
    shift.heartbeat.release(run_id)
    track_runs.end_run(shift.client, run_id, outcome=names.OUTCOME_FAILED,
                       extra_tags={names.TAG_ERROR: error})  # fmt: skip
    shift.emit(TrialDone(slot.key, slot.name, slot.config_key, names.OUTCOME_FAILED, None,
                         time.monotonic() - started, None, "tpe", error=error,
                         worker=shift.order.index).as_event())  # fmt: skip


def _joiner(reserve: Reserve | None, shift: Shift, population: str, key, alone: list):
    """Freed slots take the next TPE slots of the plan, sampled as they join; one sampled to
    another shape goes to `alone` (trial engine, after the population)."""
    from lrstudy.train.population.grouping import population_key

    if reserve is None:
        return None

    def join(free: int) -> Claimed:
        got: Claimed = []
        while len(got) < free:
            offered = reserve.offer(free - len(got))
            if not offered:
                break
            ready, _ = _ready(offered, shift)
            claimed, _ = claim_members(ready, shift, population, _slot_tags(ready))
            reserve.taken.update(t.key for t, _ in claimed)
            configured, released = _configure_all(claimed, shift)
            reserve.taken.difference_update(t.key for t in released)
            for trial, run_id in configured:
                if population_key(trial) == key:
                    got.append((trial, run_id))
                else:
                    why = "its sampled configuration has another shape than the population it was claimed for"
                    alone.append((trial, run_id, why))
        return got

    return join
