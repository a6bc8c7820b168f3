"""Metrics of an LR study, as plain functions of tidy frames (no MLflow, no torch).

Frames:
  runs     one row per run, as read by `lrstudy.report.read` (columns run_id, tags.*, params.*, metrics.*)
  history  long: run_id, key, step, value (one value per step, Inf restored)
  trials   `trial_table(runs)`: typed columns per run (optimizer, schedule, lr, seed, axes, finals),
           `trial_metrics(trials, history)` adds curve metrics (`curve_metrics`) and `score`
  configs  `config_table(trial_metrics(...))`: one row per configuration, seeds aggregated
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

from lrstudy import names as N
from lrstudy.report.curve_metrics import run_curve_metrics
from lrstudy.report.metric import DEFAULT, RankMetric

AXES = ("batch_size", "momentum", "weight_decay", "train_fraction")  # swept besides the LR
AXIS_SHORT = {"batch_size": "bs", "momentum": "mom", "weight_decay": "wd", "train_fraction": "frac"}
FINALS = {  # trials column -> summary metric logged once at the end of a trial
    "final_val_acc": N.FINAL_VAL_ACC,
    "best_val_acc": N.BEST_VAL_ACC,
    "final_train_loss": N.FINAL_TRAIN_LOSS,
    "final_train_acc": N.FINAL_TRAIN_ACC,
    "steps_to_target": N.STEPS_TO_TARGET,
    "train_seconds": N.TRAIN_SECONDS,
}


def _num(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce")


def _get(runs: pd.DataFrame, col: str) -> pd.Series:
    return runs[col] if col in runs.columns else pd.Series(np.nan, index=runs.index, dtype=object)


def _first_of_json_list(s) -> float:
    try:
        v = json.loads(s) if isinstance(s, str) else None
        return float(v[0]) if isinstance(v, list) and v else np.nan
    except (ValueError, TypeError):
        return np.nan


def _momentum(runs: pd.DataFrame) -> pd.Series:
    """Param `momentum` when swept, else opt.momentum, else beta1 of opt.betas."""
    betas = _get(runs, "params.opt.betas").map(_first_of_json_list)
    return (
        _num(_get(runs, "params.momentum"))
        .fillna(_num(_get(runs, "params.opt.momentum")))
        .fillna(_num(betas))
    )


def fmt_value(v: float | None) -> str:
    """Compact, stable text for an LR or axis value: 3 significant digits (0.003139 → 0.00314,
    5e-05 → 5e-5), whole numbers in full (batch size 1024, lr 50). Display only: configurations
    are grouped by exact values, never by this text."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if float(v).is_integer() and abs(v) < 1e6:
        return str(int(v))
    # '5e-05' -> '5e-5', '1.2e+06' -> '1.2e6': the short form log-axis ticks use too
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m[1].replace("+", "") + m[2], f"{v:.3g}")


def _study_param(runs: pd.DataFrame, name: str, study_params: dict | None) -> pd.Series:
    """A trial param, else the study's (parent run's) param of the same name: a setting of the
    whole study, like the number of classes, may be logged once on the parent only."""
    default = (study_params or {}).get(name)
    return _num(_get(runs, f"params.{name}")).fillna(_num(pd.Series([default])).iloc[0])


def _config_params(runs: pd.DataFrame) -> pd.Series:
    """Per run: ' · name=value' for each param its tag lrstudy.config_params (a JSON list a
    plugin user passed) names as configuration; '' for runs without the tag."""

    def one(i) -> str:
        raw = runs.at[i, f"tags.{N.TAG_CONFIG_PARAMS}"]
        try:
            names = json.loads(raw) if isinstance(raw, str) else []
        except ValueError:
            names = []
        if not isinstance(names, list):
            return ""
        parts = []
        for name in names:
            v = runs.at[i, f"params.{name}"] if f"params.{name}" in runs.columns else None
            parts.append(f"{name}={'—' if v is None or pd.isna(v) else v}")
        return "".join(f" · {p}" for p in parts)

    if f"tags.{N.TAG_CONFIG_PARAMS}" not in runs.columns:
        return pd.Series("", index=runs.index, dtype=object)
    return pd.Series([one(i) for i in runs.index], index=runs.index, dtype=object)


def trial_table(
    runs: pd.DataFrame, study_params: dict | None = None, metric: RankMetric = DEFAULT
) -> pd.DataFrame:
    """Typed per-run columns; works for lrstudy trials and for plugin runs with few params.

    Args:
        runs: runs as read by `lrstudy.report.read`.
        study_params: the parent run's params, for settings logged once per study
            (`num_classes`, `n_test` = size of the validation split).
        metric: what ranks configurations (`lrstudy.report.metric.study_metric`); columns
            `metric`, `metric_mode` and `metric_value` (its final value; for val/acc, max it is
            filled from `final_val_acc` by `trial_metrics`).
    """
    t = pd.DataFrame({"run_id": runs["run_id"], "run_name": runs["run_name"]})
    t["trial_key"] = _get(runs, f"tags.{N.TAG_TRIAL_KEY}").fillna(runs["run_id"]).astype(str)
    t["optimizer"] = _get(runs, "params.optimizer").fillna("").astype(str)
    t["schedule"] = _get(runs, "params.schedule_label").fillna(_get(runs, "params.schedule"))
    # plugin runs log schedule "none" when no scheduler ran: no schedule to name
    t["schedule"] = t["schedule"].fillna("—").astype(str).replace("none", "—")
    t["lr"] = _num(_get(runs, "params.lr"))
    t["seed"] = _num(_get(runs, "params.seed"))
    t["batch_size"] = _num(_get(runs, "params.batch_size"))
    t["momentum"] = _momentum(runs)
    t["weight_decay"] = _num(_get(runs, "params.opt.weight_decay"))
    t["train_fraction"] = _num(_get(runs, "params.train_fraction"))
    t["total_steps"] = _num(_get(runs, "params.total_steps"))
    # chance level and the size of the sample behind an accuracy (for "at chance")
    t["num_classes"] = _study_param(runs, "num_classes", study_params)
    t["n_val"] = _study_param(runs, "n_test", study_params)
    outcome = _get(runs, f"tags.{N.TAG_OUTCOME}").fillna(N.OUTCOME_OK)
    t["outcome"] = outcome.astype(str)
    t["diverged_at"] = _num(_get(runs, f"tags.{N.TAG_DIVERGED_AT}"))
    for col, logged in FINALS.items():
        t[col] = _num(_get(runs, f"metrics.{logged}")).astype(float)
    for col in sorted(c for c in runs.columns if c.startswith(f"metrics.{N.NOISE_ACC_PREFIX}")):
        t["noise:" + col.removeprefix(f"metrics.{N.NOISE_ACC_PREFIX}")] = _num(runs[col])
    t["metric"], t["metric_mode"] = metric.name, metric.mode
    t["metric_value"] = (
        np.nan if metric.is_val_acc else _num(_get(runs, f"metrics.{metric.name}")).astype(float)
    )
    nonfinite = _get(runs, "nonfinite").fillna("").astype(str).str.split(",")
    t["diverged"] = (outcome == N.OUTCOME_DIVERGED) | nonfinite.map(lambda ks: N.TRAIN_LOSS in ks)
    t["start_time"] = _num(runs["start_time"])
    # plugin runs: no optimizer/lr params -> the run is its own configuration, named after itself
    bare = (t["optimizer"] == "") & t["lr"].isna()
    t.loc[bare, "optimizer"] = t.loc[bare, "run_name"].astype(str)
    t.loc[t["optimizer"] == "", "optimizer"] = "run"
    swept = swept_axes(t)
    t["family"] = t.apply(lambda r: family_label(r, swept), axis=1) + _config_params(runs).values
    t["config"] = t.apply(
        lambda r: r["family"] + (f" · lr={fmt_value(r['lr'])}" if pd.notna(r["lr"]) else ""), axis=1
    )
    # seeds of one configuration share the config key tag; a label shared by several keys (say,
    # two layer-wise LR variants) gets the key appended so the two never merge
    exact = t.apply(
        lambda r: f"{r['family']}|{r['lr']!r}|" + "|".join(repr(r[a]) for a in AXES), axis=1
    )
    # plugin runs with several param groups log each group's LR as `lr/<group>`: two runs that
    # share the last group's LR but not the others' are different configurations
    group_lrs = sorted(c for c in runs.columns if c.startswith("params.lr/"))
    if group_lrs:
        exact = exact + runs[group_lrs].astype(str).agg("|".join, axis=1).values
    key = _get(runs, f"tags.{N.TAG_CONFIG_KEY}").fillna(exact).astype(str)
    clash = key.groupby(t["config"]).transform("nunique") > 1
    t.loc[clash, "config"] = t.loc[clash, "config"] + " [" + key[clash] + "]"
    t["config_key"] = key
    return t.sort_values(["family", "lr", "seed", "run_id"], kind="stable").reset_index(drop=True)


def swept_axes(trials: pd.DataFrame) -> list[str]:
    """Axes (besides LR) with more than one value among the trials."""
    return [a for a in AXES if trials[a].dropna().nunique() > 1]


def family_label(row: pd.Series, swept: list[str]) -> str:
    """Everything that names a configuration except its LR: 'sgd · cosine+warmup · wd=0.0001'."""
    parts = [row["optimizer"]] + ([row["schedule"]] if row["schedule"] != "—" else [])
    parts += [f"{AXIS_SHORT[a]}={fmt_value(row[a])}" for a in swept]
    return " · ".join(parts)


def trial_metrics(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Trials plus their curve metrics, divergence from the curves, gaps and `score`.

    `score` is what configurations are ranked by, higher is better: for the classic ranking
    (val/acc, max) final val accuracy, else the last logged val/acc (plugin runs), else minus the
    final train loss; for any other ranking metric its final value (`metric_value`), negated when
    lower is better.
    """
    t = trials.join(run_curve_metrics(history), on="run_id")
    t["still_falling"] = t["still_falling"].astype("boolean").fillna(False).astype(bool)
    t["final_val_acc"] = t["final_val_acc"].fillna(t["last_val_acc"].where(~t["diverged"]))
    t["diverged"] = t["diverged"] | t["exploded"].fillna(False).astype(bool)
    # a curve cut short by divergence has no fair area, and its blow-up is not an oscillation
    t.loc[t["diverged"], ["auc_train_loss", "auc_val_acc", "osc_index"]] = np.nan
    t["gen_gap"] = t["final_train_acc"] - t["final_val_acc"]
    t["final_best_gap"] = t["best_val_acc"] - t["final_val_acc"]
    if "metric" not in t.columns:  # a trials frame built by hand: the classic ranking
        t["metric"], t["metric_mode"], t["metric_value"] = DEFAULT.name, DEFAULT.mode, np.nan
    metric = (
        RankMetric(str(t["metric"].iloc[0]), str(t["metric_mode"].iloc[0])) if len(t) else DEFAULT
    )
    if metric.is_val_acc:
        t["metric_value"] = t["final_val_acc"]
        has_acc = np.isfinite(t["final_val_acc"]).any()
        t["score"] = (
            t["final_val_acc"] if has_acc else -t["final_train_loss"].fillna(t["auc_train_loss"])
        )
    else:
        value = t["metric_value"].astype(float)
        t["score"] = metric.sign * value.where(np.isfinite(value))
    return t


MEASURES = ("score", "metric_value", "final_val_acc", "best_val_acc", "final_train_loss", "final_train_acc", "gen_gap",
            "final_best_gap", "train_seconds", "osc_index", "auc_val_acc", "auc_train_loss")  # fmt: skip


def config_table(t: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration of `trial_metrics` rows: means and sample std (n ≥ 2) over the
    finite values of the seeds, counts of seeds, diverged seeds and seeds that reached the target."""
    if "metric" not in t.columns:
        t = t.assign(
            metric=DEFAULT.name,
            metric_mode=DEFAULT.mode,
            metric_value=t.get("final_val_acc", np.nan),
        )
    noise = [c for c in t.columns if c.startswith("noise:")]
    values = t[[*MEASURES, "end_trend", *noise]].astype(float)
    t = t.assign(**values.where(np.isfinite(values)))  # Inf would poison a mean: treat as missing
    g = t.groupby("config", sort=True, dropna=False)
    first = ["config_key", "family", "optimizer", "schedule", "lr", *AXES, "num_classes", "n_val",
             "metric", "metric_mode"]  # fmt: skip
    out = t.drop_duplicates("config").set_index("config")[first]
    out = out.loc[list(g.groups)].copy()
    out["n"] = g.size()
    out["n_diverged"] = g["diverged"].sum().astype(int)
    out["divergence_rate"] = out["n_diverged"] / out["n"]
    out["run_ids"] = g["run_id"].agg(list)
    means, stds = g[list(MEASURES)].mean(), g[list(MEASURES)].std(ddof=1)
    for col in MEASURES:
        out[col], out[col + "_std"] = means[col], stds[col]
    out["n_reached"] = g["steps_to_target"].count()
    out["steps_to_target"] = g["steps_to_target"].median()
    out["end_trend"] = g["end_trend"].mean()
    # a diverged seed's blow-up is no sign of progress; most seeds must still be falling
    out["n_falling"] = (t["still_falling"] & ~t["diverged"]).groupby(t["config"]).sum().astype(int)
    out["still_falling"] = 2 * out["n_falling"] > out["n"]
    out["first_diverged_at"] = g["diverged_at"].min()
    for col in noise:
        out[col] = g[col].mean()
    out = out.reset_index()
    return out.sort_values(
        ["family", "lr", "config"], kind="stable", na_position="last"
    ).reset_index(drop=True)


def mean_std(mean: float, std: float, n: int | None, digits: int = 3) -> str:
    """'0.842 ± 0.011 (n=2)'; the ± part only when there is a spread to show; n=None leaves out
    the count (for tables that show n in a column of their own)."""
    count = "" if n is None else f" (n={n})"
    if mean is None or not np.isfinite(mean):
        return f"—{count}"
    spread = f" ± {std:.{digits}f}" if std is not None and np.isfinite(std) else ""
    return f"{mean:.{digits}f}{spread}{count}"
