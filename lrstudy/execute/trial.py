"""One claimed trial, start to end: params, training, final metrics, an honest status.

The run was created by the claim (`lrstudy.track.claims`); this module trains under it and always
ends it, except when the tracking server is gone for longer than the patience (then it cannot be
ended; its lease expires and the next invocation redoes the trial).
"""

from __future__ import annotations

import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrstudy import names
from lrstudy.errors import UserInputError
from lrstudy.execute.params import trial_params
from lrstudy.interrupts import InterruptedAfter, sigint_deferred
from lrstudy.plan import Trial
from lrstudy.spec import StudySpec
from lrstudy.track import runs as track_runs
from lrstudy.track.outage import TrackingUnavailable
from lrstudy.track.ui_view import float32_short

ENGINE_TRIAL = "trial"


@dataclass(frozen=True)
class TrialDone:
    """What the progress display and the summary learn about one finished trial."""

    key: str
    name: str
    config_key: str
    outcome: str
    val_acc: float | None
    seconds: float
    lr: float | None
    lr_source: str
    error: str = ""
    worker: int = 0
    # Final value of the study's ranking metric (`StudySpec.rank_metric`); None when not logged.
    metric_value: float | None = None
    metrics_logged: tuple[str, ...] = ()  # what a user's module logged itself (by name)

    def as_event(self) -> dict[str, Any]:
        return {"type": "trial", **self.__dict__}


def trial_tags(spec: StudySpec, trial: Trial) -> dict[str, str]:
    """Tags every trial run carries from its creation (the claim) on."""
    metric, mode = spec.rank_metric
    tags = {
        names.TAG_KIND: names.KIND_TRIAL,
        names.TAG_STUDY: spec.name,
        names.TAG_TRIAL_KEY: trial.key,
        names.TAG_CONFIG_KEY: trial.config_key,
        names.TAG_SPEC_HASH: spec.spec_hash(),
        names.TAG_OUTCOME: names.OUTCOME_RUNNING,
        names.TAG_ENGINE: ENGINE_TRIAL,
        names.TAG_METRIC: metric,
        names.TAG_METRIC_MODE: mode,
        names.TAG_TASK_KIND: spec.task.kind,
    }
    if spec.task.kind != "reference":
        from lrstudy.train.user_classes import task_code_hash

        tags[names.TAG_CODE_HASH] = task_code_hash(spec)
    return tags


def final_metric(spec: StudySpec, final: dict[str, float], last_epoch: dict[str, float],
                 value: float | None) -> float | None:  # fmt: skip
    """The trial's final value of the study's ranking metric, from whichever record has it."""
    if value is not None:
        return value
    metric = spec.rank_metric[0]
    finals = {names.VAL_ACC: names.FINAL_VAL_ACC, names.TRAIN_LOSS_EPOCH: names.FINAL_TRAIN_LOSS,
              names.TRAIN_ACC: names.FINAL_TRAIN_ACC}  # fmt: skip
    for v in (last_epoch.get(metric), final.get(metric), final.get(finals.get(metric, ""))):
        if v is not None:
            return float(v)
    return None


def run_claimed(
    client, exp: str, spec: StudySpec, trial: Trial, data: Any, run_id: str, *, worker: int = 0
) -> TrialDone:
    """Train `trial` under its claimed RUNNING run `run_id` and end the run.

    Raises:
        KeyboardInterrupt: after closing the run as killed (Ctrl-C, or the study stopping).
        TrackingUnavailable: the tracking server stayed down past the patience.
    """
    started = time.monotonic()
    outcome, final, extra = names.OUTCOME_FAILED, {}, {}
    metric_value, available = None, []
    lr, lr_source, callback, interrupted = trial.lr, "spec", None, False
    rungs = None  # successive halving's callback, when the study uses it
    # Everything after the claim is inside the try: a Ctrl-C at any point still ends the run.
    try:
        from lrstudy.track.callback import LRStudyCallback

        if trial.lr_auto:
            from lrstudy.rangetest.study import auto_lr

            lr, lr_source = auto_lr(client, exp, spec, trial, data)
            if trial.lr_factor is not None:  # a candidate around the recommendation (halving)
                lr_source = f"{lr_source}×{trial.lr_factor:.3g} of {lr:.3g}"
                lr *= trial.lr_factor
        extra[names.TAG_LR_SOURCE] = lr_source
        callback = LRStudyCallback(
            spec.name, run_id=run_id, client=client, divergence_factor=trial.divergence_factor
        )
        callbacks: list = [callback]
        if trial.halving:
            from lrstudy.execute.halving import RungCallback, judge_for

            rungs = RungCallback(judge_for(client, exp, spec), trial, run_id, spec.rank_metric[0])
            callbacks.append(rungs)
        if trial.task_kind == "module":
            result = _train_module(client, spec, trial, data, run_id, lr, callbacks, extra)
        else:
            from lrstudy.train.module import prepare, run_trial

            _, spe = prepare(trial, data)
            track_runs.log_params(client, run_id, trial_params(trial, lr, spe))
            result = run_trial(trial, data, callbacks, lr=lr)
        metric_value = final_metric(spec, result.metrics, result.last_epoch, result.metric_value)
        available = result.available or sorted(k for k in result.last_epoch if k != "step")
        # float32 values logged as their shortest float32 decimal (0.2, not 0.2000000029...):
        # the same number, readable in MLflow's runs table.
        final = {
            k: v if k == names.TRAIN_SECONDS else float32_short(v)
            for k, v in result.metrics.items()
        }
        outcome, last_step = result.outcome, result.total_steps
        if rungs is not None and rungs.pruned_at and outcome == names.OUTCOME_OK:
            from lrstudy.execute.halving import pruned_tags

            outcome, last_step = names.OUTCOME_PRUNED, rungs.pruned_at[1]
            extra.update(pruned_tags(*rungs.pruned_at))
        callback.log_metrics(final, step=last_step)
    except SystemExit:
        # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown.
        if callback is None or not callback.interrupted:
            raise
        outcome, interrupted = names.OUTCOME_KILLED, True
    except KeyboardInterrupt:
        outcome, interrupted = names.OUTCOME_KILLED, True
    except (UserInputError, TrackingUnavailable):
        raise
    except Exception as e:  # a crash in one trial must not end the study; it is rerun next time
        extra[names.TAG_ERROR] = f"{type(e).__name__}: {e}"[:500]
        _log_traceback(client, run_id)
    finally:
        # A Ctrl-C landing here would leave the run RUNNING: it waits until the run is ended.
        with sigint_deferred(raise_after=False) as late:
            if outcome in names.DONE_OUTCOMES and not still_running(client, run_id):
                # Another worker reaped our claim while we were cut off: its rerun owns the key
                # now, so ours must not become a second finished run.
                outcome, extra[names.TAG_ERROR] = names.OUTCOME_KILLED, "lease lost"
            else:
                track_runs.end_run(client, run_id, outcome=outcome, extra_tags=extra)
    if interrupted:
        raise KeyboardInterrupt
    acc = final.get(names.FINAL_VAL_ACC)
    done = TrialDone(
        key=trial.key,
        name=trial.name,
        config_key=trial.config_key,
        outcome=outcome,
        val_acc=float(acc) if acc is not None else None,
        seconds=time.monotonic() - started,
        lr=lr,
        lr_source=lr_source,
        error=extra.get(names.TAG_ERROR, ""),
        worker=worker,
        metric_value=metric_value,
        metrics_logged=tuple(available),
    )
    if late():
        raise InterruptedAfter(done)
    return done


def _train_module(client, spec, trial, data, run_id, lr, callbacks, extra):
    """A user LightningModule's trial: its params (init args included), the note that the study's
    optimizer replaced the module's own, training, then the step counts Lightning worked out."""
    from lrstudy.schedules.catalog import warmup_steps_from
    from lrstudy.train.user_module import replacement_note, run_module_trial

    note = replacement_note([trial], data)
    track_runs.set_tags(client, run_id, {names.TAG_OPTIMIZER_REPLACED: note})
    track_runs.log_params(client, run_id, trial_params(trial, lr, None))
    result = run_module_trial(trial, data, callbacks, lr, spec.rank_metric[0])
    spe, total = result.steps_per_epoch, result.total_steps
    track_runs.log_params(client, run_id, {
        "steps_per_epoch": spe, "total_steps": total,
        "warmup_steps": warmup_steps_from(trial.warmup, total) if total else 0,
    })  # fmt: skip
    return result


def still_running(client, run_id: str) -> bool:
    """False when another worker reaped our claim while we were cut off for longer than the TTL.

    Beats first: a reaper re-reads a run right before closing it and leaves a fresh lease alone
    (`done_or_stale.reap_stale`), so once this says True no reaper that looks after the beat closes
    the run under our FINISHED (which would let its own rerun become a second finished run)."""
    track_runs.set_tags(client, run_id, {names.TAG_HEARTBEAT: f"{time.time():.3f}"})
    return client.get_run(run_id).info.status == "RUNNING"


def _log_traceback(client, run_id: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "error.txt"
        p.write_text(traceback.format_exc(), encoding="utf-8")
        client.log_artifact(run_id, str(p))
