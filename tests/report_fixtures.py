"""Write a synthetic LR study into an MLflow store, in exactly the layout `lrstudy run` writes.

Used by the report tests and by bench/bench_report.py. Curves follow a simple model of an LR sweep:
each optimizer has a sweet-spot LR; far below it training is slow (loss still falling at the end),
somewhat above it the loss oscillates, far above it the run diverges (NaN or clamped-Inf loss,
ends early). Everything is deterministic (seeded by crc32 of the trial key), so two stores built
from the same `SyntheticStudy` hold the same values.
"""

from __future__ import annotations

import itertools
import json
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from lrstudy import names as N
from lrstudy.report.history import clean_history

# Sweet-spot LR per optimizer: the synthetic loss converges fastest there.
SWEET_SPOT = {"sgd": 0.1, "adam": 3e-3, "adamw": 3e-3, "rmsprop": 1e-3}
MLFLOW_MAX_FLOAT = 1.7976931348623157e308  # what MLflow stores for +Inf
T0 = 1_700_000_000_000  # fixed epoch-ms origin, so stores are reproducible


@dataclass(frozen=True)
class SyntheticStudy:
    study: str = "synthetic"
    experiment: str | None = None  # default: the study name
    optimizers: tuple[str, ...] = ("adam", "sgd")
    lrs: dict[str, tuple[float, ...]] = field(
        default_factory=lambda: {
            "adam": (1e-4, 1e-3, 3e-3, 1e-2, 0.1),
            "sgd": (1e-3, 0.03, 0.1, 0.3, 3.0),
        }
    )
    schedules: tuple[str, ...] = ("constant",)  # labels; "cosine+warmup" gets a real warmup
    seeds: tuple[int, ...] = (0, 1)
    epochs: int = 4
    steps_per_epoch: int = 30
    # swept axes besides the LR, e.g. {"weight_decay": (0.0, 1e-4)}
    sweep: dict[str, tuple[float, ...]] = field(default_factory=dict)
    noise_sigmas: tuple[float, ...] = ()
    range_test: bool = False
    target: float | None = 0.8  # None: a study without a target (logged as empty strings)
    num_classes: int | None = 10  # logged on the parent run; None: not logged (older stores)
    n_test: int = 1000  # validation samples, logged on the parent run
    stuck: tuple[str, ...] = ()  # optimizers that learn nothing: flat loss, accuracy at chance
    killed_duplicate: bool = True  # a KILLED attempt of the first trial next to its finished redo
    resumed_duplicates: bool = True  # the first trial re-logs steps 10..19 (a resumed run)
    old_parent: bool = True  # one trial sits under an older invocation's parent run


@dataclass
class WrittenStudy:
    experiment_id: str
    parent_run_ids: list[str]  # oldest first
    trial_run_ids: list[str]  # the runs the report should use (newest FINISHED per trial key)
    ignored_run_ids: list[str]
    n_metric_points: int


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


def _schedule(label: str, total: int) -> np.ndarray:
    t = np.arange(total)
    if label == "constant":
        return np.ones(total)
    warm = max(1, total // 10) if "warmup" in label else 0
    mult = 0.5 * (1 + np.cos(np.pi * np.clip((t - warm) / max(1, total - warm), 0, 1)))
    if warm:
        mult = np.where(t < warm, (t + 1) / warm, mult)
    return mult


def _stuck_curves(key: str, total: int, spe: int, chance: float):
    """A run that learns nothing: loss flat at ln(1/chance), accuracy at chance."""
    rng = _rng(key)
    loss = math.log(1 / chance) + 0.02 * rng.standard_normal(total)
    grad = 0.5 + 0.05 * rng.random(total)
    return loss, grad, chance + 0.003 * rng.standard_normal(total // spe), None


def _curves(opt: str, lr: float, key: str, total: int, spe: int, label: str, bonus: float):
    """Per-step loss/grad-norm and per-epoch accuracies for one trial; None marks divergence."""
    rng = _rng(key)
    d = math.log10(lr / SWEET_SPOT.get(opt, 1e-2))
    t = np.arange(total) / total
    k = 6.0 * 10 ** min(d, 0.0)  # convergence rate: slower below the sweet spot
    level = math.exp(-k)  # fraction of the initial loss excess left at the end
    loss = 2.3 * np.exp(-k * t) + 0.15 + 0.04 * rng.standard_normal(total)
    diverged_at = None
    if d >= 1.2:  # diverges: loss explodes, then NaN (odd seeds) or clamped Inf (even seeds)
        diverged_at = max(5, int(total * 0.15))
        loss[diverged_at - 4 : diverged_at] = 10.0 ** np.arange(1, 5)
        loss[diverged_at] = float("nan") if zlib.crc32(key.encode()) % 2 else MLFLOW_MAX_FLOAT
        loss = loss[: diverged_at + 1]
    elif d >= 0.4:  # too high: oscillates around a worse plateau
        loss = loss + 0.8 * d * np.abs(np.sin(t * 15.0)) + 0.3 * d
        level += 0.25 * d
    grad = np.abs(loss[: len(loss)]) * 0.8 + 0.1 * rng.random(len(loss))
    n_ep = (len(loss) - 1) // spe if diverged_at is not None else total // spe
    ep_t = (np.arange(1, n_ep + 1) * spe) / total
    acc_end = 0.93 - 0.75 * level + bonus + 0.006 * rng.standard_normal()
    val_acc = np.clip(acc_end - (0.83 - 0.75 * level) * np.exp(-k * ep_t) + 0.003 * ep_t, 0, 1)
    val_acc = val_acc + 0.004 * rng.standard_normal(n_ep)
    return loss, grad, val_acc, diverged_at


def _params(d: dict) -> list[Param]:
    return [Param(k, str(v)) for k, v in d.items()]


def _log(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    step = N.MLFLOW_MAX_METRICS_PER_BATCH
    for i in range(0, len(metrics), step):
        client.log_batch(run_id, metrics=metrics[i : i + step])


def write_study(tracking_uri: str, spec: SyntheticStudy, artifact_root: Path) -> WrittenStudy:
    """Fill `tracking_uri` with one synthetic study; returns the ids the tests check against."""
    client = MlflowClient(tracking_uri)
    exp_name = spec.experiment or spec.study
    exp = client.get_experiment_by_name(exp_name)
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment(
            exp_name, artifact_location=Path(artifact_root).resolve().as_uri()
        )
    )
    total = spec.epochs * spec.steps_per_epoch
    parent_params = {
        "study": spec.study, "description": "synthetic study for tests", "dataset": "mnist1d",
        "model": "mlp", "model_args": "{}", "epochs": spec.epochs, "batch_size": 100,
        "target_metric": N.VAL_ACC if spec.target is not None else "",
        "target_value": spec.target if spec.target is not None else "",
        "target_mode": "max" if spec.target is not None else "", "search": "grid",
        "seeds": json.dumps(list(spec.seeds)), "n_trials": 0,
        "optimizers": json.dumps(list(spec.optimizers)),
        "schedules": json.dumps(list(spec.schedules)),
        "sweep": json.dumps({k: list(v) for k, v in spec.sweep.items()}),
        "evaluate_noise": json.dumps(list(spec.noise_sigmas)),
        "steps_per_epoch": spec.steps_per_epoch, "total_steps": total, "n_test": spec.n_test,
    }  # fmt: skip
    if spec.num_classes is not None:
        parent_params["num_classes"] = spec.num_classes
    parent_tags = {N.TAG_KIND: N.KIND_STUDY, N.TAG_STUDY: spec.study, N.TAG_SPEC_HASH: "abc123",
                   N.TAG_VERSION: "0.1.0"}  # fmt: skip
    parents = []
    for i in range(2 if spec.old_parent else 1):
        run = client.create_run(exp_id, start_time=T0 + i * 10_000_000, tags=parent_tags,
                                run_name=f"{spec.study} #{i}")  # fmt: skip
        client.log_batch(run.info.run_id, params=_params(parent_params))
        parents.append(run.info.run_id)

    chosen, ignored, n_points, n = [], [], 0, 0
    axes = list(spec.sweep)
    for opt, label, *axis_values in itertools.product(
        spec.optimizers, spec.schedules, *spec.sweep.values()
    ):
        swept = dict(zip(axes, axis_values, strict=True))
        bonus = -0.02 * sum(i for i, v in enumerate(axis_values))  # later axis values a bit worse
        for lr, seed in itertools.product(spec.lrs[opt], spec.seeds):
            config_key = f"{opt}|{label}|{lr:g}|" + "|".join(f"{k}={v}" for k, v in swept.items())
            trial_key = f"{config_key}|seed={seed}"
            if opt in spec.stuck:
                chance = 1 / (spec.num_classes or 10)
                loss, grad, val_acc, div_at = _stuck_curves(trial_key, total, spec.steps_per_epoch, chance)  # fmt: skip
            else:
                loss, grad, val_acc, div_at = _curves(opt, lr, trial_key, total, spec.steps_per_epoch,
                                                      label, bonus)  # fmt: skip
            mult = _schedule(label, total)[: len(loss)]
            params = {
                "optimizer": opt, "lr": lr, "schedule": label.split("+")[0],
                "schedule_label": label, "warmup_steps": total // 10 if "warmup" in label else 0,
                "batch_size": swept.get("batch_size", 100), "epochs": spec.epochs, "seed": seed,
                "train_fraction": swept.get("train_fraction", 1.0), "dataset": "mnist1d",
                "model": "mlp", "total_steps": total, "steps_per_epoch": spec.steps_per_epoch,
                "opt.momentum": swept.get("momentum", 0.9), "opt.weight_decay":
                swept.get("weight_decay", 0.0), "layer_lr": "none",
                "target_metric": N.VAL_ACC if spec.target is not None else "",
                "target_value": spec.target if spec.target is not None else "",
            }  # fmt: skip
            if "momentum" in swept:
                params["momentum"] = swept["momentum"]
            outcome = N.OUTCOME_DIVERGED if div_at is not None else N.OUTCOME_OK
            tags = {N.TAG_KIND: N.KIND_TRIAL, N.TAG_STUDY: spec.study, N.TAG_TRIAL_KEY: trial_key,
                    N.TAG_SPEC_HASH: "abc123", N.TAG_VERSION: "0.1.0", N.TAG_OUTCOME: outcome,
                    N.TAG_PARAM_GROUPS: "all", N.TAG_LR_SOURCE: "spec",
                    N.TAG_CONFIG_KEY: config_key}  # fmt: skip
            if div_at is not None:
                tags[N.TAG_DIVERGED_AT] = str(div_at)
                tags[N.TAG_DIVERGED_REASON] = "non-finite loss"
            parent = parents[0] if (spec.old_parent and n == 1) else parents[-1]
            name = f"{opt} lr={lr:g} {label} seed={seed}"
            if spec.killed_duplicate and n == 0:  # a killed attempt, superseded by the redo below
                dead = client.create_run(exp_id, start_time=T0 + 5, run_name=name,
                                         tags={**tags, N.PARENT_RUN_ID: parents[0],
                                               N.TAG_OUTCOME: N.OUTCOME_KILLED})  # fmt: skip
                _log(client, dead.info.run_id, [Metric(N.TRAIN_LOSS, 9.0, T0, s) for s in range(5)])
                client.set_terminated(dead.info.run_id, "KILLED")
                ignored.append(dead.info.run_id)
            run = client.create_run(exp_id, start_time=T0 + 100 + n, run_name=name,
                                    tags={**tags, N.PARENT_RUN_ID: parent})  # fmt: skip
            rid = run.info.run_id
            client.log_batch(rid, params=_params(params))
            ms = []
            for s in range(len(loss)):
                ts = T0 + s
                ms += [Metric(N.LR, lr * float(mult[s]), ts, s),
                       Metric(N.TRAIN_LOSS, float(loss[s]), ts, s),
                       Metric(N.GRAD_NORM, float(grad[s]), ts, s)]  # fmt: skip
            if spec.resumed_duplicates and n == 0:  # resumed: steps 10..19 logged again, later
                ms += [Metric(N.TRAIN_LOSS, float(loss[s]) - 0.01, T0 + 10**6 + s, s)
                       for s in range(10, 20)]  # fmt: skip
            for e, acc in enumerate(val_acc, start=1):
                st, ts = e * spec.steps_per_epoch - 1, T0 + e * spec.steps_per_epoch
                ms += [Metric(N.VAL_ACC, float(acc), ts, st),
                       Metric(N.TRAIN_ACC, float(min(1.0, acc + 0.03)), ts, st),
                       Metric(N.VAL_LOSS, float(2.5 * (1 - acc)), ts, st),
                       Metric(N.TRAIN_LOSS_EPOCH, float(np.mean(loss[st - spec.steps_per_epoch + 1 : st + 1])), ts, st),
                       Metric(N.EPOCH, float(e), ts, st), Metric(N.EPOCH_SECONDS, 0.5, ts, st)]  # fmt: skip
            fin = T0 + 10**7
            if div_at is None:
                final = float(val_acc[-1])
                ms += [Metric(N.FINAL_VAL_ACC, final, fin, total),
                       Metric(N.BEST_VAL_ACC, float(val_acc.max()), fin, total),
                       Metric(N.FINAL_TRAIN_LOSS, float(np.mean(loss[-spec.steps_per_epoch:])), fin, total),
                       Metric(N.FINAL_TRAIN_ACC, min(1.0, final + 0.03), fin, total)]  # fmt: skip
                reached = np.nonzero(val_acc >= (spec.target or np.inf))[0]
                if len(reached):
                    ms.append(Metric(N.STEPS_TO_TARGET, float((reached[0] + 1) * spec.steps_per_epoch), fin, total))  # fmt: skip
                for sigma in spec.noise_sigmas:
                    ms.append(Metric(f"{N.NOISE_ACC_PREFIX}{sigma:g}", final - 0.8 * sigma, fin, total))  # fmt: skip
            else:
                ms += [Metric(N.FINAL_VAL_ACC, float("nan"), fin, total),
                       Metric(N.FINAL_TRAIN_LOSS, float("nan"), fin, total)]  # fmt: skip
            ms.append(Metric(N.TRAIN_SECONDS, 0.5 * spec.epochs, fin, total))
            _log(client, rid, ms)
            n_points += len(ms)
            client.set_terminated(rid, "FINISHED", end_time=T0 + 200 + n)
            chosen.append(rid)
            n += 1

    if spec.range_test:
        for opt in spec.optimizers:
            run = client.create_run(exp_id, start_time=T0 + 50, run_name=f"find-lr {opt}",
                                    tags={N.TAG_KIND: N.KIND_RANGE_TEST, N.TAG_STUDY: spec.study})  # fmt: skip
            sweet = SWEET_SPOT.get(opt, 1e-2)
            lrs = np.logspace(math.log10(sweet) - 3, math.log10(sweet) + 2, 50)
            ms = [Metric(N.LR, float(v), T0, s) for s, v in enumerate(lrs)]
            ms += [Metric(N.RT_LOSS, 2.3 - s * 0.02, T0, s) for s in range(50)]
            ms += [Metric(N.RT_SMOOTHED, 2.3 - s * 0.02, T0, s) for s in range(50)]
            ms += [Metric(f"{N.RT_SUGGESTION_PREFIX}{r}", sweet * f, T0, 0)
                   for r, f in (("valley", 1.0), ("steepest", 0.3))]  # fmt: skip
            _log(client, run.info.run_id, ms)
            client.log_batch(run.info.run_id, params=_params({"optimizer": opt, "suggestion": "valley"}))  # fmt: skip
            client.set_terminated(run.info.run_id, "FINISHED")
    for p in parents:
        client.set_terminated(p, "FINISHED")
    return WrittenStudy(exp_id, parents, chosen, ignored, n_points)


# --- hand-built frames (no store): curves with known verdicts ---------------------------------

STEPS = np.arange(400)


def good_loss(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 2.3 * np.exp(-STEPS / 40) + 0.1 + 0.02 * rng.standard_normal(len(STEPS))


def slow_loss(seed: int = 0) -> np.ndarray:  # too low an LR: still falling at the end
    rng = np.random.default_rng(seed)
    return 2.3 * np.exp(-STEPS / 900) + 0.1 + 0.02 * rng.standard_normal(len(STEPS))


def oscillating_loss(seed: int = 0) -> np.ndarray:  # too high: big swings around a plateau
    rng = np.random.default_rng(seed)
    return 1.2 + 0.6 * np.sin(STEPS / 8.0) + 0.02 * rng.standard_normal(len(STEPS))


def diverging_loss() -> np.ndarray:  # explodes, then NaN (as logged) and clamped Inf
    loss = good_loss()[:60].copy()
    loss[50:58] = 10.0 ** np.arange(1, 9)
    loss[58], loss[59] = MLFLOW_MAX_FLOAT, np.nan
    return loss


def raw(run_id: str, key: str, values, steps=None, t0: int = 0) -> pd.DataFrame:
    steps = np.arange(len(values)) if steps is None else np.asarray(steps)
    return pd.DataFrame(
        {"run_id": run_id, "key": key, "step": steps, "timestamp": t0 + steps, "value": values}
    )


def study_frames():
    """Four configurations x 2 seeds: slow (1e-3), good (1e-2), oscillating (1e-1), diverging (1)."""
    kinds = {1e-3: ("slow", 0.55), 1e-2: ("good", 0.93), 1e-1: ("osc", 0.80), 1.0: ("div", np.nan)}
    rows, hist = [], []
    for lr, (kind, acc) in kinds.items():
        for seed in (0, 1):
            rid = f"{kind}-{seed}"
            loss = {"slow": slow_loss, "good": good_loss, "osc": oscillating_loss}.get(kind)
            loss = diverging_loss() if loss is None else loss(seed)
            final = acc + 0.004 * seed
            rows.append(
                {
                    "run_id": rid,
                    "run_name": rid,
                    "status": "FINISHED",
                    "start_time": 1,
                    "params.optimizer": "sgd",
                    "params.lr": str(lr),
                    "params.seed": str(seed),
                    "params.schedule_label": "constant",
                    "params.opt.momentum": "0.9",
                    "params.opt.weight_decay": "0.0",
                    "params.batch_size": "100",
                    f"tags.{N.TAG_OUTCOME}": N.OUTCOME_DIVERGED if kind == "div" else N.OUTCOME_OK,
                    f"tags.{N.TAG_CONFIG_KEY}": f"sgd|{lr}",
                    f"metrics.{N.FINAL_VAL_ACC}": final,
                    f"metrics.{N.BEST_VAL_ACC}": final + 0.01,
                    f"metrics.{N.FINAL_TRAIN_ACC}": final + 0.05,
                    f"metrics.{N.STEPS_TO_TARGET}": {"good": 200.0, "osc": 300.0}.get(kind, np.nan),
                    f"metrics.{N.TRAIN_LOSS}": float(loss[-1]),
                    "nonfinite": "" if np.isfinite(loss[-1]) else N.TRAIN_LOSS,
                }  # fmt: skip
            )
            hist.append(raw(rid, N.TRAIN_LOSS, loss))
    return pd.DataFrame(rows), clean_history(pd.concat(hist))
