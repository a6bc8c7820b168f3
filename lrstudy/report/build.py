"""Report stage: one self-contained HTML page per study, built from MLflow alone.

    build_report(tracking_uri, study="quickstart")  ->  reports/quickstart/index.html

Reads through `lrstudy.report.read` (the only MLflow reader), computes metrics and verdicts
(`lrstudy.report.analyze`, `lrstudy.report.diagnose`), draws figures (`lrstudy.report.plots`),
renders the jinja2 template of the top-level templates/ (shipped in the wheel as
`lrstudy/templates/`), then writes verdict tags and the artifact back through
`lrstudy.track.annotate`. No torch import anywhere on this path.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from lrstudy import names as N
from lrstudy.report.analyze import config_table, trial_metrics, trial_table
from lrstudy.report.diagnose import diagnose, run_verdicts


def templates_dir() -> Path:
    """The report templates: the source tree's top-level templates/ (editable installs, tests),
    else the copy a wheel carries as package data `lrstudy/templates/`."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "templates", package / "templates"):
        if (candidate / "report.html.j2").is_file():
            return candidate
    raise FileNotFoundError(f"report template report.html.j2 not found beside {package}")


@dataclass
class ReportResult:
    path: Path
    html: str
    n_runs: int
    n_points_read: int
    n_points_plotted: int
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds


def _dir_name(name: str) -> str:
    """A study name as one safe path component ('<script>' and '../x' included)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


def _read_plan(runs: pd.DataFrame, max_points: int) -> tuple[dict, list[str], dict[str, str]]:
    """Group runs by step stride (≤ max_points per-step points each; diverged runs in full) and
    find each run's LR key: `lr`, else the last param group's `lr/<group>`."""
    total = (
        pd.to_numeric(runs.get("params.total_steps"), errors="coerce")
        if "params.total_steps" in runs
        else None
    )
    outcome = runs.get(f"tags.{N.TAG_OUTCOME}")
    plan: dict[str, tuple[list[str], int]] = {}
    lr_keys: dict[str, str] = {}
    for i, row in runs.iterrows():
        stride = 1
        if (
            total is not None
            and pd.notna(total[i])
            and not (outcome is not None and outcome[i] == N.OUTCOME_DIVERGED)
        ):
            stride = max(1, int(total[i]) // max_points)
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


def collect(client, sr, max_points: int | None = None) -> dict:
    """Read histories and compute every frame the page needs."""
    from lrstudy.report.history import MAX_POINTS, read_histories

    plan, step_keys, lr_keys = _read_plan(sr.runs, max_points or MAX_POINTS)
    history, n_read = read_histories(client, plan, step_keys, [N.VAL_ACC])
    if lr_keys:  # one LR curve per run, under the plain name
        alias = history["run_id"].map(lr_keys)
        history.loc[history["key"] == alias, "key"] = N.LR
        history = history[~history["key"].str.startswith(f"{N.LR}/")]
    trials = trial_metrics(trial_table(sr.runs), history)
    configs = diagnose(config_table(trials))
    return {"history": history, "trials": trials, "configs": configs, "n_read": n_read}


def render_html(
    sr, data: dict, figs: dict[str, dict], tracking_uri: str, generated: datetime
) -> str:
    import jinja2

    from lrstudy.report.context import page_context

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=True,  # every study/param/tag string is escaped; figures are marked safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    ctx = page_context(sr, data, figs, tracking_uri, generated)
    return env.get_template("report.html.j2").render(**ctx)


def generate_report(
    tracking_uri: str,
    *,
    study: str | None = None,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    out_dir: Path = Path("reports"),
    log_artifact: bool = True,
    write_verdicts: bool = True,
    now: datetime | None = None,
) -> ReportResult:
    """`build_report`, returning the HTML and the figures the bench prints as well."""
    t = [time.perf_counter()]
    from lrstudy.report.figures import render_figures
    from lrstudy.report.read import find_study
    from lrstudy.track import annotate
    from lrstudy.track.store import open_client

    t.append(time.perf_counter())
    # Reading never creates a store: a mistyped sqlite path or a dead server is a one-line error.
    # (mlflow is imported lazily in there: importing it alone takes ~1 s.)
    client = open_client(tracking_uri, create=False)
    t.append(time.perf_counter())
    sr = find_study(client, study=study, experiment=experiment, parent_run_id=parent_run_id)
    t.append(time.perf_counter())
    data = collect(client, sr)
    t.append(time.perf_counter())
    figs = render_figures(sr, data)
    t.append(time.perf_counter())
    html = render_html(sr, data, figs, tracking_uri, now or datetime.now(timezone.utc))
    path = Path(out_dir) / _dir_name(sr.study or sr.experiment_name) / "index.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    t.append(time.perf_counter())
    if write_verdicts:
        current = sr.runs.set_index("run_id").get(f"tags.{N.TAG_DIAGNOSIS}")
        annotate.write_verdicts(
            client, run_verdicts(data["configs"]), None if current is None else current.to_dict()
        )
    if log_artifact and sr.parent is not None:
        annotate.log_report(client, sr.parent["run_id"], path)
    t.append(time.perf_counter())
    stages = [
        "import mlflow",
        "open store",
        "search runs",
        "histories+analysis",
        "figures",
        "html",
        "write-back",
    ]
    return ReportResult(
        path=path,
        html=html,
        n_runs=len(sr.runs),
        n_points_read=data["n_read"],
        n_points_plotted=sum(f["points"] for f in figs.values()),
        seconds={s: t[i + 1] - t[i] for i, s in enumerate(stages)},
    )


def build_report(
    tracking_uri: str,
    *,
    study: str | None = None,
    experiment: str | None = None,
    parent_run_id: str | None = None,
    out_dir: Path = Path("reports"),
    log_artifact: bool = True,
    write_verdicts: bool = True,
) -> Path:
    """Write `<out_dir>/<study>/index.html` for a study (or an experiment of plugin runs).

    Args:
        tracking_uri: any MLflow tracking URI (sqlite:///..., http://...).
        study / experiment / parent_run_id: what to report; at least one.
        log_artifact: also log the page as `report/index.html` of the study's newest parent run.
        write_verdicts: tag every trial run with its verdict (`lrstudy.diagnosis`).
    Returns:
        Path of the written index.html.
    Raises:
        UserInputError: no such experiment / run / study, or no finished trial runs.
    """
    return generate_report(
        tracking_uri,
        study=study,
        experiment=experiment,
        parent_run_id=parent_run_id,
        out_dir=out_dir,
        log_artifact=log_artifact,
        write_verdicts=write_verdicts,
    ).path
