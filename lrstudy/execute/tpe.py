"""TPE search (`search: {method: tpe, trials: N, seed: S}`): Optuna's TPESampler picks each
configuration when a worker claims it, told everything the store holds.

A TPE study has N slots x seeds trials (`plan._tpe_trials`). A trial's key is its slot's and its
seed's, not its settings', so the claim protocol gives each slot/seed to one worker, exactly once,
before anything is sampled. Then:

- the worker that won slot i's first seed samples: an in-memory Optuna study is told every slot
  of this study's plan that the store has a configuration for (finished: the seed-mean final value
  of the ranking metric, a diverged seed counting as the worst; pruned: PRUNED with its rung
  values; otherwise RUNNING, so the constant liar keeps parallel workers away from points being
  trained), asks one point, and records it on its run (`lrstudy.sampled`, with the config key and
  the run name of those settings) before training;
- a rerun of that key (after Ctrl-C, kill -9, a crash) finds the slot's record and trains the
  same configuration again: nothing is sampled twice;
- other seeds of slot i wait until the slot has a record (they are "busy" until then), then train
  that configuration.

The sampler is seeded per slot (the search's seed and the slot number): a study run by one worker
samples the same configurations every time, and two workers sampling at once during the random
start-up never draw the same point. Optuna is imported only here, when a slot is sampled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

from lrstudy import names
from lrstudy.errors import UserInputError
from lrstudy.execute.shift import Shift, run_trial_run
from lrstudy.execute.trial import TrialDone, trial_tags
from lrstudy.keys import stable_hash
from lrstudy.plan import Trial, sampled_trial
from lrstudy.spec import StudySpec
from lrstudy.spec.lr import LRRange
from lrstudy.track import runs as track_runs
from lrstudy.track.done_or_stale import is_done
from lrstudy.track.outage import TrackingUnavailable

TAG_TPE_SLOT = names.TAG_TPE_SLOT  # the slot id (`Trial.tpe["slot_id"]`) on each of its runs
TAG_SAMPLED = names.TAG_SAMPLED  # JSON: the slot's configuration (see `Sampled`)
ATTEMPTS = 20  # asks before a configuration already recorded is accepted again (small spaces)


@dataclass(frozen=True)
class Sampled:
    """A slot's configuration: Optuna's params and the settings they stand for."""

    params: dict[str, Any]  # as Optuna sampled them (told back as they are)
    optimizer: int  # index into spec.optimizers
    lr: float
    schedule: int  # index into spec.schedules
    swept: dict[str, Any]
    slot: int
    source: str = "tpe"  # "tpe" (sampled by the model) or "startup" (a random start-up draw)

    def as_tag(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def parse(cls, text: str | None) -> Sampled | None:
        """A recorded configuration, or None for a tag that is not one."""
        try:
            d = json.loads(text or "")
            return cls(dict(d["params"]), int(d["optimizer"]), float(d["lr"]),
                       int(d["schedule"]), dict(d["swept"]), int(d["slot"]),
                       str(d.get("source", "tpe")))  # fmt: skip
        except (ValueError, TypeError, KeyError):
            return None

    def settings(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "lr": self.lr, "schedule": self.schedule,
                "swept": self.swept}  # fmt: skip


# ---- the worker's loop: TPE slots, sampled when claimed ------------------------------------------


def batches(pending: list[Trial], order, data: Any) -> list[tuple[list[Trial], str]]:
    """`population.batches`, TPE slots apart from other trials: slots are grouped by their
    placeholders' shape (`execute/tpe_population.py` samples them once claimed, then groups the
    configurations by their real shape); under `--engine trial` each slot alone."""
    from lrstudy.execute.population import batches as grouped

    slots = [t for t in pending if t.tpe is not None]
    if not slots:
        return grouped(pending, order, data)
    rest = [t for t in pending if t.tpe is None]
    # A population starts with the random start-up draws only: every later slot is sampled when
    # a freed slot takes it, told what finished by then (all at once, TPE would be random).
    spec = order.spec
    cap = spec.search.tpe_startup * len(spec.seeds)
    first = (
        [([t], "") for t in slots]
        if order.engine == "trial"
        else grouped(slots, order, data, cap=max(cap, 2))
    )
    return first + (grouped(rest, order, data) if rest else [])


def take_slot(trial: Trial, shift: Shift, why: str = "") -> bool:
    """`worker.take_trial` for a TPE slot's seed: True when settled, False to try again later
    (claimed elsewhere, or a later seed whose slot has no configuration yet)."""
    if shift.settled(trial):
        return True
    spec, slot_id = shift.spec, trial.tpe["slot_id"]
    first = trial.seed == spec.seeds[0]
    if not first and slot_record(shift.client, shift.order.experiment_id, spec, slot_id) is None:
        # The slot's first seed has not been sampled yet: later, unless it failed here (then
        # the next invocation retries both; waiting would never end).
        head = dataclasses.replace(trial, seed=spec.seeds[0])
        return shift.claims.state(head.key, shift.order.parent_run_id) == "failed"
    tags = {**trial_tags(spec, trial), TAG_TPE_SLOT: slot_id}
    if why:
        tags[names.TAG_ENGINE_REASON] = why[:500]
    run_id = shift.claims.claim(trial.key, name=trial.name, tags=tags,
                                parent_id=shift.order.parent_run_id)  # fmt: skip
    if run_id is None:
        return False
    started = time.monotonic()
    shift.heartbeat.hold(run_id)
    try:
        real = configure(shift.client, shift.order.experiment_id, spec, trial, run_id,
                         sample=first)  # fmt: skip
    except KeyboardInterrupt:
        shift.heartbeat.release(run_id)
        with contextlib.suppress(Exception):
            track_runs.end_run(shift.client, run_id, outcome=names.OUTCOME_KILLED)
        shift.killed(trial, time.monotonic() - started)
        raise
    except (UserInputError, TrackingUnavailable):
        shift.heartbeat.release(run_id)
        raise
    except Exception as e:  # noqa: BLE001 - one slot failing must not end the study
        shift.heartbeat.release(run_id)
        error = f"{type(e).__name__}: {e}"[:500]
        track_runs.end_run(shift.client, run_id, outcome=names.OUTCOME_FAILED,
                           extra_tags={names.TAG_ERROR: error})  # fmt: skip
        shift.emit(TrialDone(trial.key, trial.name, trial.config_key, names.OUTCOME_FAILED,
                             None, time.monotonic() - started, None, "tpe", error=error,
                             worker=shift.order.index).as_event())  # fmt: skip
        return True
    return run_trial_run(real, run_id, shift)


def configure(client, exp: str, spec: StudySpec, slot: Trial, run_id: str, *,
              sample: bool) -> Trial:  # fmt: skip
    """The trial to train under our claimed run `run_id` of `slot`: the slot's recorded
    configuration (a rerun, or a later seed), else (the first seed) a new TPE sample. Recorded on
    the run before it is returned.

    Raises:
        RuntimeError: a later seed whose slot has no configuration (it had one when claimed).
    """
    slot_id = slot.tpe["slot_id"]
    record = slot_record(client, exp, spec, slot_id)
    if record is None:
        if not sample:
            raise RuntimeError(f"slot {slot.tpe['slot']} has no sampled configuration yet")
        mine = sample_slot(client, exp, spec, slot)
        _record(client, run_id, spec, slot, mine)
        # Two records for one slot need a reaped owner that still wrote after its rerun looked
        # (a window of one MLflow round trip); the earliest run's record is the slot's, for all.
        record = slot_record(client, exp, spec, slot_id) or mine
        if record == mine:
            return sampled_trial(spec, slot, record.settings())
    _record(client, run_id, spec, slot, record)
    return sampled_trial(spec, slot, record.settings())


def _record(client, run_id: str, spec: StudySpec, slot: Trial, record: Sampled) -> None:
    real = sampled_trial(spec, slot, record.settings())
    track_runs.set_tags(client, run_id, {
        TAG_SAMPLED: record.as_tag(),
        names.TAG_CONFIG_KEY: real.config_key,  # the report groups the slot's seeds by it
    })  # fmt: skip
    client.update_run(run_id, name=real.name)


# ---- the store -> what the sampler is told ------------------------------------------------------


def _slot_runs(client, exp: str, spec: StudySpec) -> list:
    runs = track_runs.search_all(
        client, [exp],
        f"tags.`{names.TAG_KIND}` = '{names.KIND_TRIAL}' and tags.`{names.TAG_STUDY}` = "
        f"'{_quote(spec.name)}'",
    )  # fmt: skip
    return [r for r in runs if TAG_TPE_SLOT in r.data.tags]


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def _earliest_record(runs: list) -> Sampled | None:
    found = []
    for r in runs:
        rec = Sampled.parse(r.data.tags.get(TAG_SAMPLED))
        if rec is not None:
            found.append(((r.info.start_time or 0, r.info.run_id), rec))
    return min(found, key=lambda x: x[0])[1] if found else None


def slot_record(client, exp: str, spec: StudySpec, slot_id: str) -> Sampled | None:
    """The configuration recorded for a slot (on the earliest of its runs that has one)."""
    runs = track_runs.search_all(
        client, [exp],
        f"tags.`{TAG_TPE_SLOT}` = '{slot_id}' and tags.`{names.TAG_STUDY}` = "
        f"'{_quote(spec.name)}'",
    )  # fmt: skip
    return _earliest_record(runs)


@dataclass(frozen=True)
class SlotState:
    """What the sampler is told about one slot."""

    sampled: Sampled
    state: str  # "complete", "pruned" or "running"
    value: float | None = None  # complete: the seed-mean final metric (±inf: diverged)
    intermediate: dict[int, float] | None = None  # pruned: rung epoch -> the config's value


def slot_states(client, exp: str, spec: StudySpec, slot_ids: set[str]) -> dict[str, SlotState]:
    """Every slot of `slot_ids` (the current plan's) with a recorded configuration."""
    by_slot: dict[str, list] = {}
    for r in _slot_runs(client, exp, spec):
        sid = r.data.tags[TAG_TPE_SLOT]
        if sid in slot_ids:
            by_slot.setdefault(sid, []).append(r)
    mode = spec.rank_metric[1]
    worst = -math.inf if mode == "max" else math.inf
    out = {}
    for sid, runs in by_slot.items():
        record = _earliest_record(runs)
        if record is None:
            continue
        newest: dict[str, Any] = {}  # trial key -> its done run
        for r in runs:
            k = r.data.tags.get(names.TAG_TRIAL_KEY)
            if is_done(r) and (k not in newest or (r.info.start_time or 0) >
                               (newest[k].info.start_time or 0)):  # fmt: skip
                newest[k] = r
        done = list(newest.values())
        pruned = [r for r in done if r.data.tags.get(names.TAG_OUTCOME) == names.OUTCOME_PRUNED]
        if pruned:
            out[sid] = SlotState(record, "pruned", intermediate=_rung_values(pruned[0]))
        elif done:
            values = [_final_value(spec, r) for r in done]
            bad = any(v is None or math.isnan(v) for v in values) or any(
                r.data.tags.get(names.TAG_OUTCOME) == names.OUTCOME_DIVERGED for r in done
            )
            value = worst if bad else math.fsum(values) / len(values)
            out[sid] = SlotState(record, "complete", value=value)
        else:
            out[sid] = SlotState(record, "running")
    return out


def _final_value(spec: StudySpec, run) -> float | None:
    """A finished run's final value of the ranking metric (as the report's best reads it)."""
    metric = spec.rank_metric
    key = names.FINAL_VAL_ACC if tuple(metric) == (names.VAL_ACC, "max") else metric[0]
    v = run.data.metrics.get(key)
    return float(v) if v is not None else None


def _rung_values(run) -> dict[int, float]:
    out = {}
    for k, v in run.data.tags.items():
        if k.startswith(names.TAG_RUNG_PREFIX):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                value = float(json.loads(v)["config_value"])
                if not math.isnan(value):
                    out[int(k.removeprefix(names.TAG_RUNG_PREFIX))] = value
    return out


# ---- Optuna ----------------------------------------------------------------------------------


def distributions(spec: StudySpec) -> dict[str, Any]:
    """Every parameter a TPE study can sample, as Optuna distributions (by name): the optimizer
    (by index, when several), each optimizer's LR, the schedule (by index), each sweep axis.
    A single value is no parameter: it is fixed."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    out: dict[str, Any] = {}
    if len(spec.optimizers) > 1:
        out["optimizer"] = CategoricalDistribution(list(range(len(spec.optimizers))))
    for i, opt in enumerate(spec.optimizers):
        if isinstance(opt.lr, LRRange) and opt.lr.high > opt.lr.low:
            out[f"lr.{i}"] = FloatDistribution(opt.lr.low, opt.lr.high,
                                               log=opt.lr.scale == "log")  # fmt: skip
        elif isinstance(opt.lr, tuple) and len(set(opt.lr)) > 1:
            out[f"lr.{i}"] = CategoricalDistribution(list(opt.lr))
    if len(spec.schedules) > 1:
        out["schedule"] = CategoricalDistribution(list(range(len(spec.schedules))))
    for axis, values in spec.sweep.axes().items():
        if len(values) > 1:
            out[f"sweep.{axis}"] = CategoricalDistribution(list(values))
    return out


def _suggest(trial, spec: StudySpec, dists: dict[str, Any], slot: int, source: str) -> Sampled:
    """Ask `trial` (define-by-run: only the chosen optimizer's LR is a parameter)."""

    def ask(name: str, fixed: Any) -> Any:
        d = dists.get(name)
        if d is None:
            return fixed
        if hasattr(d, "choices"):
            return trial.suggest_categorical(name, list(d.choices))
        return trial.suggest_float(name, d.low, d.high, log=d.log)

    i = int(ask("optimizer", 0))
    opt = spec.optimizers[i]
    lr = float(ask(f"lr.{i}", opt.lr.low if isinstance(opt.lr, LRRange) else opt.lr_grid()[0]))
    if isinstance(opt.lr, LRRange):
        lr = min(max(float(f"{lr:.6g}"), opt.lr.low), opt.lr.high)  # as random search rounds
    j = int(ask("schedule", 0))
    swept = {a: ask(f"sweep.{a}", v[0]) for a, v in spec.sweep.axes().items()}
    return Sampled(dict(trial.params), i, lr, j, swept, slot, source)


def slot_seed(search_seed: int, slot: int) -> int:
    """The sampler's seed for one slot: reproducible, and different for every slot (a seed
    shared by all slots would make every random start-up draw the same point)."""
    return int(stable_hash({"tpe_seed": search_seed, "slot": slot}, length=8), 16)


def sample_slot(client, exp: str, spec: StudySpec, slot: Trial) -> Sampled:
    """A new configuration for `slot`, from Optuna's TPESampler told the store's record."""
    from lrstudy.plan import plan_trials

    slot_ids = {t.tpe["slot_id"] for t in plan_trials(spec) if t.tpe is not None}
    told = slot_states(client, exp, spec, slot_ids - {slot.tpe["slot_id"]})
    return sample(spec, slot, list(told.values()))


def sample(spec: StudySpec, slot: Trial, told: list[SlotState]) -> Sampled:
    """Tell a fresh in-memory Optuna study `told`, and ask it one configuration for `slot`,
    avoiding configurations already recorded (asked again, up to ATTEMPTS, in small spaces)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    dists = distributions(spec)
    states = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
              "running": TrialState.RUNNING}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=slot_seed(spec.search.seed, slot.tpe["slot"]),
            n_startup_trials=spec.search.tpe_startup,
            multivariate=True,
            group=True,  # the LR of each optimizer is a parameter only where it was chosen
            constant_liar=True,
        )
        study = optuna.create_study(
            sampler=sampler, direction="maximize" if spec.rank_metric[1] == "max" else "minimize"
        )
        finished = 0
        for s in told:
            params = {k: v for k, v in s.sampled.params.items() if k in dists}
            try:
                study.add_trial(create_trial(
                    state=states[s.state], params=params,
                    distributions={k: dists[k] for k in params},
                    value=s.value if s.state == "complete" else None,
                    intermediate_values=s.intermediate if s.state == "pruned" else None,
                ))  # fmt: skip
            except ValueError:
                continue  # a record this space cannot hold (not expected: keys hash the space)
            finished += s.state != "running"
        source = "startup" if finished < spec.search.tpe_startup else "tpe"
        taken = {_config_key(spec, slot, s.sampled) for s in told}
        for _ in range(ATTEMPTS):
            # A duplicate stays RUNNING in the study: the liar steers the next ask away from it.
            choice = _suggest(study.ask(), spec, dists, slot.tpe["slot"], source)
            if _config_key(spec, slot, choice) not in taken:
                break
    return choice


def _config_key(spec: StudySpec, slot: Trial, record: Sampled) -> str:
    try:
        return sampled_trial(spec, slot, record.settings()).config_key
    except (ValueError, IndexError):
        return ""
