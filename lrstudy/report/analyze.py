"""Metrics of an LR study, as plain functions of tidy frames (no MLflow, no torch).

Frames:
  runs     one row per run, as read by `lrstudy.report.read` (columns run_id, tags.*, params.*, metrics.*)
  history  long: run_id, key, step, value (one value per step, Inf restored)
  trials   `trial_table(runs)`: typed columns per run (optimizer, schedule, lr, seed, axes, finals),
           `trial_metrics(trials, history)` adds curve metrics (oscillation, trend, AUC, score)
  configs  `config_table(trial_metrics(...))`: one row per configuration, seeds aggregated
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from lrstudy import names as N

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
# The oscillation index compares the loss's path length with its net drop, on bin means: a
# per-batch loss is noisy, and averaging ~8 points per bin keeps that noise out of the index.
POINTS_PER_BIN = 8
MAX_BINS = 30
# A run that barely moved is judged against a quarter of its starting loss: otherwise the batch
# noise on an almost flat curve (too low an LR) reads as oscillation.
DROP_FLOOR = 0.25
END_WINDOW = 0.2  # "still falling" looks at the last 20% of steps
EXPLODE_RATIO = 10.0  # a loss above 10x its starting level has exploded, whatever the tag says
# Still falling = the loss dropped by more than 2% over the last fifth of training. A bare slope < 0
# would call half of all converged runs "falling" because of noise on the plateau.
FALLING_REL = -0.02


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


def fmt_value(v: float) -> str:
    """Compact, stable text for an LR or axis value: 4 significant digits (0.0048063 → 0.004806).
    Display only: configurations are grouped by exact values, never by this text."""
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def trial_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Typed per-run columns; works for lrstudy trials and for plugin runs with few params."""
    t = pd.DataFrame({"run_id": runs["run_id"], "run_name": runs["run_name"]})
    t["optimizer"] = _get(runs, "params.optimizer").fillna("").astype(str)
    t["schedule"] = _get(runs, "params.schedule_label").fillna(_get(runs, "params.schedule"))
    t["schedule"] = t["schedule"].fillna("—").astype(str)
    t["lr"] = _num(_get(runs, "params.lr"))
    t["seed"] = _num(_get(runs, "params.seed"))
    t["batch_size"] = _num(_get(runs, "params.batch_size"))
    t["momentum"] = _momentum(runs)
    t["weight_decay"] = _num(_get(runs, "params.opt.weight_decay"))
    t["train_fraction"] = _num(_get(runs, "params.train_fraction"))
    t["total_steps"] = _num(_get(runs, "params.total_steps"))
    outcome = _get(runs, f"tags.{N.TAG_OUTCOME}").fillna(N.OUTCOME_OK)
    t["diverged_at"] = _num(_get(runs, f"tags.{N.TAG_DIVERGED_AT}"))
    for col, metric in FINALS.items():
        t[col] = _num(_get(runs, f"metrics.{metric}")).astype(float)
    for col in sorted(c for c in runs.columns if c.startswith(f"metrics.{N.NOISE_ACC_PREFIX}")):
        t["noise:" + col.removeprefix(f"metrics.{N.NOISE_ACC_PREFIX}")] = _num(runs[col])
    nonfinite = _get(runs, "nonfinite").fillna("").astype(str).str.split(",")
    t["diverged"] = (outcome == N.OUTCOME_DIVERGED) | nonfinite.map(lambda ks: N.TRAIN_LOSS in ks)
    t["start_time"] = _num(runs["start_time"])
    # plugin runs: no optimizer/lr params -> the run is its own configuration, named after itself
    bare = (t["optimizer"] == "") & t["lr"].isna()
    t.loc[bare, "optimizer"] = t.loc[bare, "run_name"].astype(str)
    t.loc[t["optimizer"] == "", "optimizer"] = "run"
    swept = swept_axes(t)
    t["family"] = t.apply(lambda r: family_label(r, swept), axis=1)
    t["config"] = t.apply(
        lambda r: r["family"] + (f" · lr={fmt_value(r['lr'])}" if pd.notna(r["lr"]) else ""), axis=1
    )
    # seeds of one configuration share the config key tag; a label shared by several keys (say,
    # two layer-wise LR variants) gets the key appended so the two never merge
    exact = t.apply(
        lambda r: f"{r['family']}|{r['lr']!r}|" + "|".join(repr(r[a]) for a in AXES), axis=1
    )
    key = _get(runs, f"tags.{N.TAG_CONFIG_KEY}").fillna(exact).astype(str)
    clash = key.groupby(t["config"]).transform("nunique") > 1
    t.loc[clash, "config"] = t.loc[clash, "config"] + " [" + key[clash] + "]"
    return t.sort_values(["family", "lr", "seed", "run_id"], kind="stable").reset_index(drop=True)


def swept_axes(trials: pd.DataFrame) -> list[str]:
    """Axes (besides LR) with more than one value among the trials."""
    return [a for a in AXES if trials[a].dropna().nunique() > 1]


def family_label(row: pd.Series, swept: list[str]) -> str:
    """Everything that names a configuration except its LR: 'sgd · cosine+warmup · wd=0.0001'."""
    parts = [row["optimizer"]] + ([row["schedule"]] if row["schedule"] != "—" else [])
    parts += [f"{AXIS_SHORT[a]}={fmt_value(row[a])}" for a in swept]
    return " · ".join(parts)


def binned(steps: np.ndarray, values: np.ndarray, n_bins: int, hi: float | None = None):
    """Mean of the finite values in `n_bins` equal-width step bins → (bin centres, means); bins
    without a finite value are NaN. The one downsampling rule used for analysis and figures."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    hi = float(steps.max()) if hi is None and len(steps) else (hi or 0.0)
    edges = np.linspace(0.0, max(hi, 1.0), n_bins + 1)
    idx = np.clip(np.searchsorted(edges, steps, side="right") - 1, 0, n_bins - 1)
    ok = np.isfinite(values)
    sums = np.bincount(idx[ok], weights=values[ok], minlength=n_bins)
    counts = np.bincount(idx[ok], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return (edges[:-1] + edges[1:]) / 2, means


def downsample(steps: np.ndarray, values: np.ndarray, max_points: int):
    """≤ max_points per curve: as-is when short enough, else bin means (NaN bins dropped)."""
    steps, values = np.asarray(steps), np.asarray(values, dtype=float)
    if len(steps) <= max_points:
        return steps, values
    x, y = binned(steps, values, max_points)
    keep = np.isfinite(y)
    return x[keep], y[keep]


def oscillation_index(steps: np.ndarray, loss: np.ndarray) -> float:
    """Path length of the bin-averaged loss over its net drop, minus 1: 0 for a monotone descent,
    large when the loss swings up and down. NaN with too few finite points."""
    finite = np.isfinite(loss)
    n_bins = min(MAX_BINS, int(finite.sum()) // POINTS_PER_BIN)
    if n_bins < 3:
        return float("nan")
    _, m = binned(steps[finite], loss[finite], n_bins)
    m = m[np.isfinite(m)]
    drop = max(m[0] - m[-1], DROP_FLOOR * abs(m[0]), 1e-12)
    return float(max(np.abs(np.diff(m)).sum() / drop - 1.0, 0.0))


def end_trend(steps: np.ndarray, loss: np.ndarray) -> float:
    """Relative change of the loss over the last END_WINDOW of steps (least-squares line);
    negative = still falling. NaN with too few points."""
    finite = np.isfinite(loss)
    s, v = steps[finite].astype(float), loss[finite]
    if len(s) < 5:
        return float("nan")
    tail = s >= s.max() - END_WINDOW * (s.max() - s.min())
    if tail.sum() < 3:
        return float("nan")
    slope = np.polyfit(s[tail], v[tail], 1)[0]
    return float(slope * (s[tail].max() - s[tail].min()) / max(abs(v[tail].mean()), 1e-12))


def run_curve_metrics(history: pd.DataFrame) -> pd.DataFrame:
    """Per run: oscillation index, end trend, explosion, AUCs (means over the training curve)."""
    rows = []
    loss = history[history["key"] == N.TRAIN_LOSS]
    acc = history[history["key"] == N.VAL_ACC].groupby("run_id")["value"]
    acc_auc = acc.apply(lambda v: float(np.nanmean(v)) if np.isfinite(v).any() else np.nan)
    last_acc = acc.last()
    for rid, g in loss.groupby("run_id", sort=True):
        s, v = g["step"].to_numpy(), g["value"].to_numpy()
        finite = v[np.isfinite(v)]
        start = finite[: max(1, len(finite) // 20)].mean() if len(finite) else np.nan
        rows.append(
            {
                "run_id": rid,
                "osc_index": oscillation_index(s, v),
                "end_trend": end_trend(s, v),
                "exploded": bool(
                    (~np.isfinite(v)).any()
                    or (len(finite) and finite.max() > EXPLODE_RATIO * start)
                ),
                "auc_train_loss": float(finite.mean()) if len(finite) else np.nan,
                "n_steps": int(s.max()) + 1,
            }
        )
    out = pd.DataFrame(
        rows, columns=["run_id", "osc_index", "end_trend", "exploded", "auc_train_loss", "n_steps"]
    )
    out = out.set_index("run_id")
    out["auc_val_acc"] = acc_auc
    out["last_val_acc"] = last_acc
    return out


def trial_metrics(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Trials plus their curve metrics, divergence from the curves, gaps and `score`.

    `score` is what configurations are ranked by: final val accuracy, else the last logged
    val/acc (plugin runs), else minus the final train loss.
    """
    t = trials.join(run_curve_metrics(history), on="run_id")
    t["final_val_acc"] = t["final_val_acc"].fillna(t["last_val_acc"].where(~t["diverged"]))
    t["diverged"] = t["diverged"] | t["exploded"].fillna(False).astype(bool)
    # a curve cut short by divergence has no fair area, and its blow-up is not an oscillation
    t.loc[t["diverged"], ["auc_train_loss", "auc_val_acc", "osc_index"]] = np.nan
    t["gen_gap"] = t["final_train_acc"] - t["final_val_acc"]
    t["final_best_gap"] = t["best_val_acc"] - t["final_val_acc"]
    has_acc = np.isfinite(t["final_val_acc"]).any()
    t["score"] = (
        t["final_val_acc"] if has_acc else -t["final_train_loss"].fillna(t["auc_train_loss"])
    )
    return t


MEASURES = ("score", "final_val_acc", "best_val_acc", "final_train_loss", "final_train_acc", "gen_gap",
            "final_best_gap", "train_seconds", "osc_index", "auc_val_acc", "auc_train_loss")  # fmt: skip


def config_table(t: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration of `trial_metrics` rows: means and sample std (n ≥ 2) over the
    finite values of the seeds, counts of seeds, diverged seeds and seeds that reached the target."""
    noise = [c for c in t.columns if c.startswith("noise:")]
    values = t[[*MEASURES, "end_trend", *noise]].astype(float)
    t = t.assign(**values.where(np.isfinite(values)))  # Inf would poison a mean: treat as missing
    g = t.groupby("config", sort=True, dropna=False)
    out = t.drop_duplicates("config").set_index("config")[
        ["family", "optimizer", "schedule", "lr", *AXES]
    ]
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
    out["still_falling"] = out["end_trend"] < FALLING_REL
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
