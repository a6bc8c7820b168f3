"""A study's results as frames: what the report shows, and `load_results` for notebooks.

    import lrstudy
    df = lrstudy.load_results("quickstart", tracking_uri="sqlite:///mlflow.db")
    df.groupby("config")["final_val_acc"].agg(["mean", "std", "count"])

One row per trial (the newest finished run of each trial key), with its configuration, params,
outcome, the report's diagnosis of its configuration and its final metrics. Reads MLflow only
(through `lrstudy.report.read` and `lrstudy.report.history`); never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lrstudy import names as N
from lrstudy.errors import UserInputError
from lrstudy.report.analyze import AXES, FINALS, config_table, trial_metrics, trial_table
from lrstudy.report.diagnose import diagnose
from lrstudy.report.metric import RankMetric, study_metric

# The columns of `load_results`, in order; then every curve metric and noise accuracy, then
# `params.<name>` for every param as logged (strings).
RESULT_COLUMNS = ["trial", "run_id", "trial_key", "config_key", "config", "family", "optimizer",
                  "schedule", "lr", "seed", *AXES, "outcome", "diverged", "diagnosis",
                  "diagnosis_reason", *FINALS, "metric", "metric_mode", "metric_value", "score"]  # fmt: skip
CURVE_COLUMNS = ["osc_index", "end_trend", "still_falling", "auc_train_loss", "auc_val_acc"]


@dataclass
class StudyData:
    """Every frame a report needs, and how many metric values went into them."""

    history: pd.DataFrame  # long: run_id, key, step, value (per-step keys strided, de-duplicated)
    trials: pd.DataFrame  # `trial_metrics`: one row per trial
    configs: pd.DataFrame  # `diagnose(config_table(...))`: one row per configuration
    results: pd.DataFrame  # `results_frame`: the tidy per-trial table of `load_results`
    n_history_read: int  # history points read, re-logged (duplicate) steps included
    n_summary_read: int  # latest metric values returned with the runs (finals, summaries)
    metric: RankMetric = RankMetric()  # what ranks the configurations


def read_plan(runs: pd.DataFrame, max_points: int) -> tuple[dict, list[str], dict[str, str]]:
    """Group runs by step stride (≤ max_points per-step points each; diverged runs in full) and
    find each run's LR key: `lr`, else the last param group's `lr/<group>`."""
    total = pd.to_numeric(runs["params.total_steps"], errors="coerce") if "params.total_steps" in runs else None  # fmt: skip
    outcome = runs.get(f"tags.{N.TAG_OUTCOME}")
    plan: dict[str, tuple[list[str], int]] = {}
    lr_keys: dict[str, str] = {}
    for i, row in runs.iterrows():
        stride = 1
        diverged = outcome is not None and outcome[i] == N.OUTCOME_DIVERGED
        if total is not None and pd.notna(total[i]) and not diverged:
            stride = max(1, -(-int(total[i]) // max_points))  # rounded up: never > max_points
        plan.setdefault(f"stride{stride}", ([], stride))[0].append(row["run_id"])
        if pd.isna(row.get(f"metrics.{N.LR}")):
            groups = str(row.get(f"tags.{N.TAG_PARAM_GROUPS}") or "").split(",")
            have = [
                c[8:] for c in runs.columns if c.startswith(f"metrics.{N.LR}/") and pd.notna(row[c])
            ]
            named = [f"{N.LR}/{g}" for g in groups if f"{N.LR}/{g}" in have]
            if named or have:
                lr_keys[row["run_id"]] = (named or sorted(have))[-1]
    extra = sorted(set(lr_keys.values()))
    return plan, [N.LR, *extra, N.TRAIN_LOSS, N.GRAD_NORM], lr_keys


def collect(client, sr, max_points: int | None = None) -> StudyData:
    """Read histories and compute every frame the page needs."""
    from lrstudy.report.history import MAX_POINTS, read_histories

    plan, step_keys, lr_keys = read_plan(sr.runs, max_points or MAX_POINTS)
    metric = study_metric(sr.runs, sr.parent)
    # A user's module ranked by its own metric (val_acc, val_loss, ...): its curve is what the
    # convergence figure draws where val/acc would be (`convergence_key`).
    epoch_keys = [N.VAL_ACC, *([metric.name] if metric.draws_own_curve else [])]
    history, n_read = read_histories(client, plan, step_keys, epoch_keys)
    if lr_keys:  # one LR curve per run, under the plain name
        alias = history["run_id"].map(lr_keys)
        history.loc[history["key"] == alias, "key"] = N.LR
        history = history[~history["key"].str.startswith(f"{N.LR}/")].reset_index(drop=True)
    study_params = (sr.parent or {}).get("params")
    trials = trial_metrics(trial_table(sr.runs, study_params, metric), history)
    pruned = getattr(sr, "pruned", None)
    tried = None
    if pruned is not None and len(pruned):  # stopped by halving: tried, if not in the table
        stopped = trial_table(pruned, study_params, metric)
        tried = {fam: g["lr"] for fam, g in stopped.groupby("family", sort=True)}
    configs = diagnose(config_table(trials), tried)
    n_summary = int(sr.runs["n_metrics"].sum()) if "n_metrics" in sr.runs else 0
    return StudyData(history, trials, configs, results_frame(sr.runs, trials, configs), n_read,
                     n_summary, metric)  # fmt: skip


def results_frame(runs: pd.DataFrame, trials: pd.DataFrame, configs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: RESULT_COLUMNS, curve metrics, noise accuracies, then `params.*`."""
    verdicts = configs.set_index("config")[["verdict", "reason"]]
    df = trials.rename(columns={"run_name": "trial"}).join(verdicts, on="config")
    df = df.rename(columns={"verdict": "diagnosis", "reason": "diagnosis_reason"})
    noise = [c for c in df.columns if c.startswith("noise:")]
    params = sorted(c for c in runs.columns if c.startswith("params."))
    df = df[[*RESULT_COLUMNS, *CURVE_COLUMNS, *noise]].join(
        runs.set_index("run_id")[params], on="run_id"
    )
    return df.reset_index(drop=True)


def load_results(study_or_experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The per-trial results of a study, as the report sees them.

    Args:
        study_or_experiment: a study name (as in its YAML), else the name of an MLflow
            experiment of plugin runs.
        tracking_uri: any MLflow tracking URI; None = MLflow's default (MLFLOW_TRACKING_URI).
    Returns:
        One row per trial: trial (run name), run_id, trial_key, config_key, config (label),
        family, optimizer, schedule, lr, seed, the swept axes, outcome, diverged, diagnosis
        (verdict of the trial's configuration), diagnosis_reason, the final metrics
        (final_val_acc, best_val_acc, final_train_loss, final_train_acc, steps_to_target,
        train_seconds), metric / metric_mode / metric_value (the ranking metric's name, "max" or
        "min", and its final value: what `lrstudy.best_config` ranks by), score, curve metrics, `noise:<sigma>` accuracies and `params.<name>`.
    Raises:
        UserInputError: no such study or experiment, or no finished trial runs.
    """
    from lrstudy.report.read import find_study
    from lrstudy.track.store import open_client

    if tracking_uri is None:
        import mlflow

        tracking_uri = mlflow.get_tracking_uri()
    client = open_client(tracking_uri, create=False)
    try:
        sr = find_study(client, study=study_or_experiment)
    except UserInputError as as_study:
        try:
            sr = find_study(client, experiment=study_or_experiment)
        except UserInputError:
            raise as_study from None
    return collect(client, sr).results
