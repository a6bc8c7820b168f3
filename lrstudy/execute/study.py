"""Execute stage: run a study's trials in this process, tracked, resumable.

Order of business, so that bad input never leaves anything half-written in MLflow:
1. plan the trials and load the data set (user mistakes surface here, before MLflow is touched);
2. open the store once (sqlite schema set-up must not race with workers), close orphans;
3. skip trials whose key already has a finished run, run the rest under a new parent run.
Every exit path (end, exception, Ctrl-C, Lightning's own SystemExit on Ctrl-C) closes the trial
and parent runs with an honest status, so the next invocation can pick up where this one stopped.
"""

from __future__ import annotations

import math
import signal
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lrstudy import names
from lrstudy.errors import UserInputError
from lrstudy.plan import Trial
from lrstudy.spec.study import StudySpec
from lrstudy.track import runs as track_runs
from lrstudy.track.store import experiment_id, open_client
from lrstudy.track.writer import writer_for


@dataclass
class StudyRun:
    """What one invocation did (for the CLI's summary and exit code)."""

    total: int
    skipped: int
    experiment_id: str
    parent_run_id: str | None
    outcomes: dict[str, int] = field(default_factory=dict)
    closed_orphans: int = 0
    interrupted: bool = False
    best: tuple[str, float] | None = None


def study_params(spec: StudySpec, trials: list[Trial], data: Any) -> dict[str, Any]:
    """Parent-run params: what ran, readable by the report without the spec file."""
    from lrstudy.train.module import steps_per_epoch

    spe = steps_per_epoch(len(data.x_train), spec.train.batch_size)
    target = spec.train.target
    return {
        "study": spec.name,
        "description": spec.description,
        "dataset": spec.task.dataset,
        "model": spec.task.model,
        "model_args": spec.task.model_args,
        "epochs": spec.train.epochs,
        "batch_size": spec.train.batch_size,
        "target_metric": target.metric if target else "",
        "target_value": target.value if target else "",
        "target_mode": target.resolved_mode if target else "",
        "search": spec.search.method,
        "seeds": list(spec.seeds),
        "n_trials": len(trials),
        "optimizers": [o.name for o in spec.optimizers],
        "schedules": [s.label for s in spec.schedules],
        "sweep": {k: list(v) for k, v in spec.sweep.axes().items()},
        "evaluate_noise": list(spec.evaluate.noise),
        "steps_per_epoch": spe,
        "total_steps": spe * spec.train.epochs,
        "n_train": len(data.x_train),
        "n_test": len(data.x_test),
    }


def trial_params(trial: Trial, lr: float, spe: int) -> dict[str, Any]:
    """Child-run params: every resolved setting of the trial (optimizer defaults included)."""
    params: dict[str, Any] = {
        "optimizer": trial.optimizer,
        "lr": lr,
        "schedule": trial.schedule,
        "schedule_label": trial.schedule_label,
        "warmup": trial.warmup if trial.warmup is not None else 0,
        "batch_size": trial.batch_size,
        "epochs": trial.epochs,
        "seed": trial.seed,
        "train_fraction": trial.train_fraction,
        "dataset": trial.dataset,
        "model": trial.model,
        "model_args": trial.model_args,
        "data_args": trial.data_args,
        "steps_per_epoch": spe,
        "total_steps": spe * trial.epochs,
        "layer_lr": trial.layer_lr if trial.layer_lr is not None else "none",
        "divergence_factor": trial.divergence_factor,
        "target_metric": trial.target["metric"] if trial.target else "",
        "target_value": trial.target["value"] if trial.target else "",
    }
    from lrstudy.schedules.catalog import warmup_steps_from

    params["warmup_steps"] = warmup_steps_from(trial.warmup, spe * trial.epochs)
    params.update({f"schedule.{k}": v for k, v in trial.schedule_args.items()})
    params.update({f"opt.{k}": v for k, v in trial.hparams.items()})
    if "momentum" in trial.swept:
        params["momentum"] = trial.swept["momentum"]
    return params


def run_study(
    spec: StudySpec,
    source: str,
    tracking_uri: str,
    *,
    console: Console | None = None,
) -> StudyRun:
    """Run every unfinished trial of `spec`; see the module docstring for the order of business."""
    console = console or Console(stderr=True)
    from lrstudy.train.preflight import preflight

    trials, data = preflight(spec, source)
    client = open_client(tracking_uri)
    writer_for(tracking_uri)  # start the metric writer process now; it loads while we set up
    exp = experiment_id(client, spec.experiment)
    existing = track_runs.search_study_runs(client, exp, names.KIND_TRIAL, spec.name)
    parents = track_runs.search_study_runs(client, exp, names.KIND_STUDY, spec.name)
    closed = track_runs.close_orphans(client, existing + parents)
    done = track_runs.finished_trials(existing)
    todo = [t for t in trials if t.key not in done]
    result = StudyRun(len(trials), len(trials) - len(todo), exp, None, closed_orphans=len(closed))
    result.best = _best_of(done[t.key] for t in trials if t.key in done)
    if not todo:
        return result

    tags = {
        names.TAG_KIND: names.KIND_STUDY,
        names.TAG_STUDY: spec.name,
        names.TAG_SPEC_HASH: spec.spec_hash(),
        names.TAG_OUTCOME: names.OUTCOME_RUNNING,
    }
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    parent = track_runs.start_run(client, exp, name=f"{spec.name} {stamp}", tags=tags)
    result.parent_run_id = parent
    track_runs.log_params(client, parent, study_params(spec, trials, data))
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / names.SPEC_ARTIFACT
        p.write_text(spec.resolved_yaml(), encoding="utf-8")
        client.log_artifact(parent, str(p))

    outcome = names.OUTCOME_OK
    try:
        with _progress(console) as progress:
            task = progress.add_task(
                spec.name, total=len(trials), completed=result.skipped, best=_fmt_best(result.best)
            )
            for i, trial in enumerate(todo):
                trial_outcome, final = _run_one(client, exp, parent, spec, trial, data)
                result.outcomes[trial_outcome] = result.outcomes.get(trial_outcome, 0) + 1
                acc = final.get(names.FINAL_VAL_ACC, math.nan)
                if math.isfinite(acc) and (result.best is None or acc > result.best[1]):
                    result.best = (trial.name, acc)
                progress.console.print(
                    f"[{result.skipped + i + 1}/{len(trials)}] {trial.name}: {trial_outcome}"
                    + (f" ({final['error']})" if final.get("error") else "")
                    + (f", val acc {acc:.3f}" if math.isfinite(acc) else "")
                    + f" ({final.get(names.TRAIN_SECONDS, 0):.1f} s)",
                    highlight=False,
                )
                progress.update(task, advance=1, best=_fmt_best(result.best))
                if trial_outcome == names.OUTCOME_KILLED:
                    raise KeyboardInterrupt
        if result.outcomes.get(names.OUTCOME_FAILED):
            outcome = names.OUTCOME_FAILED
    except (KeyboardInterrupt, SystemExit):
        outcome = names.OUTCOME_KILLED
        result.interrupted = True
        signal.signal(
            signal.SIGINT, signal.default_int_handler
        )  # Lightning ignores SIGINT after Ctrl-C
    except BaseException:
        outcome = names.OUTCOME_FAILED
        raise
    finally:
        track_runs.end_run(client, parent, outcome=outcome)
    return result


def _run_one(
    client, exp: str, parent: str, spec: StudySpec, trial: Trial, data: Any
) -> tuple[str, dict]:
    """Run one trial under its own child run; never lets the run stay RUNNING."""
    from lrstudy.track.callback import LRStudyCallback
    from lrstudy.train.module import prepare, run_trial

    _, spe = prepare(trial, data)
    lr, lr_source = trial.lr, "spec"
    if trial.lr_auto:
        from lrstudy.rangetest.study import auto_lr

        lr, lr_source = auto_lr(client, exp, spec, trial, data)
    tags = {
        names.TAG_KIND: names.KIND_TRIAL,
        names.TAG_STUDY: spec.name,
        names.TAG_TRIAL_KEY: trial.key,
        names.TAG_CONFIG_KEY: trial.config_key,
        names.TAG_SPEC_HASH: spec.spec_hash(),
        names.TAG_OUTCOME: names.OUTCOME_RUNNING,
        names.TAG_LR_SOURCE: lr_source,
    }
    run_id = track_runs.start_run(client, exp, name=trial.name, tags=tags, parent_id=parent)
    outcome, final, extra = names.OUTCOME_FAILED, {}, {}
    callback = LRStudyCallback(
        spec.name, run_id=run_id, client=client, divergence_factor=trial.divergence_factor
    )
    try:
        track_runs.log_params(client, run_id, trial_params(trial, lr, spe))
        result = run_trial(trial, data, [callback], lr=lr)
        final = result.metrics
        callback.log_metrics(final, step=result.total_steps)
        outcome = result.outcome
    except SystemExit:
        # Lightning turns Ctrl-C into sys.exit(1) after its graceful shutdown.
        outcome = names.OUTCOME_KILLED if callback.interrupted else names.OUTCOME_FAILED
        if outcome == names.OUTCOME_FAILED:
            raise
    except KeyboardInterrupt:
        outcome = names.OUTCOME_KILLED
    except UserInputError:
        raise
    except Exception as e:  # a crash in one trial must not end the study; it is rerun next time
        extra[names.TAG_ERROR] = f"{type(e).__name__}: {e}"[:500]
        _log_traceback(client, run_id)
        outcome = names.OUTCOME_FAILED
    finally:
        track_runs.end_run(client, run_id, outcome=outcome, extra_tags=extra)
    if outcome == names.OUTCOME_FAILED:
        final = {"error": extra.get(names.TAG_ERROR, "")}
    return outcome, final


def _log_traceback(client, run_id: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "error.txt"
        p.write_text(traceback.format_exc(), encoding="utf-8")
        client.log_artifact(run_id, str(p))


def _best_of(runs) -> tuple[str, float] | None:
    best = None
    for r in runs:
        acc = r.data.metrics.get(names.FINAL_VAL_ACC)
        if acc is not None and math.isfinite(acc) and (best is None or acc > best[1]):
            best = (r.info.run_name, acc)
    return best


def _fmt_best(best: tuple[str, float] | None) -> str:
    return f"best val acc {best[1]:.3f} ({best[0]})" if best else "best: -"


def _progress(console: Console) -> Progress:
    """One study-level bar: trials done/total, elapsed, ETA, best so far (no per-trial bars)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[best]}"),
        console=console,
        transient=False,
        disable=not console.is_terminal,  # logs and CI get the per-trial lines only
    )
