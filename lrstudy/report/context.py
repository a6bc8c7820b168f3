"""Everything the report template shows, as plain strings and lists (the template only lays out).

Numbers always carry n and spread: "0.842 ± 0.011 (n=2)"; diverged runs are counted, never
dropped.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from markupsafe import Markup

from lrstudy.report.analyze import AXES, AXIS_SHORT, fmt_value, mean_std, swept_axes
from lrstudy.report.baselines import lr_free_notes, tuning_gains
from lrstudy.report.best import best_config
from lrstudy.report.claims import VERDICT_TEXT as CLAIM_TEXT
from lrstudy.report.claims import VERDICTS as CLAIM_VERDICTS
from lrstudy.report.claims import ClaimResult
from lrstudy.report.diagnose import VERDICT_TEXT, VERDICTS, rules_text
from lrstudy.report.header import has_target, header
from lrstudy.report.history import MAX_POINTS
from lrstudy.report.metric import DEFAULT, RankMetric, missing_metric_note
from lrstudy.report.plots.curves import PLOT_POINTS
from lrstudy.report.plots.style import DARK_VERDICTS, VERDICT_COLORS, optimizer_colors
from lrstudy.report.results import StudyData

FIGURE_CAPTIONS = {
    "lr-sensitivity": "Final and best validation accuracy and final train loss against the peak LR. "
    "Line = mean over seeds, band = min–max over seeds (LRs none of whose seeds diverged), dots = "
    "single non-diverged seeds, × at the panel edge = a diverged seed, ★ = the best configuration.",
    "convergence": "Seed mean (line) and min–max band over seeds, per LR (colour). × = the last "
    "point of a configuration with diverged seeds; exploding losses are cut off at the top.",
    "stability": "Per LR: share of diverged seeds, oscillation index of the train loss, "
    "seed-to-seed std of the final accuracy and the drop from best to final accuracy. Dashed red "
    "lines are the verdict thresholds.",
    "outcomes": "Verdict of every configuration; cell text = mean final val accuracy over seeds.",
    "schedules": "The LR the optimizer actually applied (logged `lr`) divided by the peak LR, "
    "for one representative run per optimizer (median LR of the grid, first seed).",
    "grad-norm": "Gradient L2 norm per optimizer step, seed mean and min–max band, per LR.",
    "learning-curves": "Final val accuracy against the share of the training set used, per LR "
    "(error bars = seed std).",
    "robustness": "Test accuracy under Gaussian input noise of each σ, per LR (σ = 0: clean "
    "final val accuracy); diverged configurations are left out.",
    "search": "Every trial of the search, per seed. Hollow = stopped by successive halving at a "
    "rung (its value is the one the decision saw), filled = trained to the last epoch. Stopped "
    "trials are not diverged: the other sections show only the trials trained to the end.",
    "search-tpe": "Each configuration TPE sampled, in the order it was sampled: its seed-mean "
    "value of the ranking metric (left; the line is the best so far) and its peak LR (right). "
    "Hollow = a random start-up draw, filled = sampled by TPE's model of what worked.",
}


RANGE_TEST_NOTE = " Dashed vertical lines: the LR range test's recommended LR per optimizer."


FINAL_HEAD = ["optimizer · schedule · …", "peak LR", "n", "final val acc", "best val acc",
              "final train acc", "gen. gap (train − val)", "train time (s)", "diverged", "verdict"]  # fmt: skip


ACC_COLUMNS = ("final_val_acc", "best_val_acc", "final_train_acc", "gen_gap")


def final_head(metric: RankMetric = DEFAULT, has_acc: bool = True) -> list[str]:
    """The final-performance table's columns: the ranking metric first when it is not val acc;
    the accuracy columns only when some trial logged a val accuracy."""
    if metric.is_val_acc:
        return FINAL_HEAD
    acc = FINAL_HEAD[3:7] if has_acc else []
    return [*FINAL_HEAD[:3], f"{metric.label} ({metric.direction})", "final train loss", *acc,
            *FINAL_HEAD[7:]]  # fmt: skip


def has_acc(configs: pd.DataFrame) -> bool:
    """Whether some configuration has a final val accuracy."""
    return bool(np.isfinite(configs["final_val_acc"].astype(float)).any())


def _steps(row, target: bool) -> str:
    if not target:
        return "no target set"
    if row["n_reached"] == 0:
        return "never"
    return f"{row['steps_to_target']:.0f} ({row['n_reached']}/{row['n']} seeds)"


def _sort(v) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.6g}"


def _cell(r: pd.Series, col: str, digits: int = 3) -> tuple[str, str]:
    return mean_std(r[col], r[col + "_std"], None, digits), _sort(r[col])


def best_text(trials: pd.DataFrame, configs: pd.DataFrame) -> str:
    """The crowned configuration (`best_config`) with its verdict, which is never too high or
    diverged (`diagnose` compares every LR with the same best)."""
    best = best_config(trials)
    metric = _frame_metric(trials)
    if best is None and not metric.is_val_acc:
        if not np.isfinite(trials["metric_value"].astype(float)).any():
            return f"no final {metric.name} was logged by any trial: nothing is ranked"
        return "no configuration finished without a diverged seed"
    if best is None:
        if not np.isfinite(trials["final_val_acc"]).any():
            return "no final val accuracy was logged: configurations are ranked within their family by final train loss"
        return "no configuration finished without a diverged seed"
    verdict = configs.loc[configs["config"] == best.name, "verdict"].iloc[0]
    if verdict == "at_chance":
        return best.text() + " — at chance: no configuration learned anything measurable"
    return best.text()


def _frame_metric(frame: pd.DataFrame) -> RankMetric:
    if "metric" in frame.columns and len(frame):
        return RankMetric(str(frame["metric"].iloc[0]), str(frame["metric_mode"].iloc[0]))
    return DEFAULT


def _verdict(v: str) -> dict:
    return {
        "key": v,
        "text": VERDICT_TEXT[v],
        "color": VERDICT_COLORS[v],
        "light": v not in DARK_VERDICTS,
    }


def _metric_cell(r: pd.Series, metric: RankMetric, n: int | None) -> str:
    """Mean ± std (n) of the ranking metric: 3 decimals for accuracy, 3 significant digits else."""
    if metric.is_val_acc:
        return mean_std(r["final_val_acc"], r["final_val_acc_std"], n)
    mean, std = r["metric_value"], r["metric_value_std"]
    count = "" if n is None else f" (n={n})"
    if mean is None or not np.isfinite(mean):
        return f"—{count}"
    spread = f" ± {metric.fmt(std)}" if std is not None and np.isfinite(std) else ""
    return f"{metric.fmt(mean)}{spread}{count}"


def _diagnosis_row(r: pd.Series, target: bool, metric: RankMetric = DEFAULT) -> dict:
    osc = "—" if not np.isfinite(r["osc_index"]) else f"{r['osc_index']:.2f}"
    std = r["score_std"]
    std = "—" if not np.isfinite(std) else f"{std:.3f}" if metric.is_val_acc else metric.fmt(std)
    return {"lr": fmt_value(r["lr"]), "n": r["n"], "steps": _steps(r, target),
            "stability": f"osc {osc}, seed std {std}, diverged {r['n_diverged']}/{r['n']}",
            "final": _metric_cell(r, metric, r["n"]),
            "verdict": _verdict(r["verdict"]), "reason": r["reason"]}  # fmt: skip


def _final_row(fam: str, r: pd.Series, metric: RankMetric = DEFAULT, has_acc: bool = True) -> dict:
    # (text, sort key); n has its own column, so the cells show mean ± std only
    cells = [(fam, fam), (fmt_value(r["lr"]), _sort(r["lr"])), (str(r["n"]), str(r["n"]))]
    if not metric.is_val_acc:
        cells += [(_metric_cell(r, metric, None), _sort(r["metric_value"])),
                  _cell(r, "final_train_loss")]  # fmt: skip
    if metric.is_val_acc or has_acc:
        cells += [_cell(r, c) for c in ACC_COLUMNS]
    cells += [
        _cell(r, "train_seconds", 1),
        (f"{r['n_diverged']}/{r['n']}", _sort(r["divergence_rate"])),
        (VERDICT_TEXT[r["verdict"]], str(VERDICTS.index(r["verdict"]))),
    ]
    return {"cells": cells, "verdict": _verdict(r["verdict"])}


def tables(configs: pd.DataFrame, target: bool = True) -> dict:
    """Rows of the diagnosis (per family), convergence and final-performance tables."""
    colors = optimizer_colors(configs["optimizer"])
    metric = _frame_metric(configs)
    diag, conv, final = [], [], []
    for fam, g in configs.groupby("family", sort=True):
        rows = [_diagnosis_row(r, target, metric) for _, r in g.iterrows()]
        diag.append({"family": fam, "color": colors[g["optimizer"].iloc[0]], "rows": rows})
        for _, r in g.iterrows():
            conv.append({"family": fam, "lr": fmt_value(r["lr"]), "steps": _steps(r, target),
                         "auc_acc": mean_std(r["auc_val_acc"], r["auc_val_acc_std"], r["n"]),
                         "auc_loss": mean_std(r["auc_train_loss"], r["auc_train_loss_std"], r["n"])})  # fmt: skip
            final.append(_final_row(fam, r, metric, has_acc(configs)))
    return {"diagnosis": diag, "convergence": conv, "final": final}


def notes(sr, data: StudyData) -> list[str]:
    """What a reader must know before trusting the page: partial studies, left-out runs."""
    out = []
    if sr.parent is not None and sr.parent["status"] != "FINISHED":
        out.append(f"The newest study run ended with status {sr.parent['status']}; the report covers the trials that finished.")  # fmt: skip
    if sr.n_parents > 1:
        which = (
            "all of them"
            if getattr(sr, "left_out", None) is None
            else "all of them, as far as the current version still has them"
        )
        out.append(f"{sr.n_parents} invocations of this study; trials are taken from {which} (newest finished run per trial).")  # fmt: skip
    for why, n in sr.ignored.items():
        out.append(f"{n} run(s) left out: {why}.")
    if getattr(sr, "left_out", None) is not None:
        out.append(sr.left_out.note())
    if sr.study is None:
        out.append("No lrstudy study runs in this experiment: runs are grouped by their `optimizer` and `lr` params (with `schedule` and the params their tag lrstudy.config_params names); seeds (param `seed`) are aggregated.")  # fmt: skip
    accs = np.isfinite(data.trials["final_val_acc"]).any()
    if accs and sr.study is not None and data.trials["num_classes"].isna().all():
        out.append("The number of classes was not logged (param num_classes): the 'at chance' check is off.")  # fmt: skip
    metric = data.metric
    missing = missing_metric_note(metric, sr.runs)
    if missing:
        out.append(missing)
    elif not metric.is_val_acc:
        out.append(f"Configurations are ranked by the final value of {metric.name} ({metric.direction}).")  # fmt: skip
    out += figure_notes(sr, data)
    return out


def figure_notes(sr, data: StudyData) -> list[str]:
    """One line per figure a study cannot have, saying why (never an empty figure)."""
    from lrstudy import names as N

    keys = set(data.history["key"].unique()) if len(data.history) else set()
    right = data.metric.curve_key(keys)
    out = []
    if right is None and N.TRAIN_LOSS in keys:
        out.append("No per-epoch val/acc was logged: the convergence figure shows the train loss only.")  # fmt: skip
    if N.TRAIN_LOSS not in keys and right is None:
        out.append("No per-step train loss or val accuracy was logged: no convergence figure.")
    if not np.isfinite(data.trials["final_val_acc"].astype(float)).any():
        # a module's own accuracy under its own name is not lrstudy's val/acc: say which is which
        own = f" (the study's {right[0]} is drawn in the convergence figure)" if right and right[0] != N.VAL_ACC else ""  # fmt: skip
        out.append(f"No validation accuracy was logged as val/acc{own}: the accuracy panels, the noise-robustness figure and the generalisation gap are left out.")  # fmt: skip
    return out


def point_counts(sr, data: StudyData, figs: dict) -> dict:
    """The footer's counts; they add up: read = history + summaries, and the curves are drawn
    from the kept history points (plotted ≤ kept ≤ history)."""
    return {"runs": len(sr.runs), "history": data.n_history_read, "kept": len(data.history),
            "summary": data.n_summary_read, "read": data.n_history_read + data.n_summary_read,
            "plotted": sum(f["points"] for f in figs.values()), "per_run": MAX_POINTS,
            "per_curve": PLOT_POINTS}  # fmt: skip


def _captions(metric: RankMetric) -> dict[str, str]:
    """FIGURE_CAPTIONS, with the ranking metric named where the figures show it."""
    if metric.is_val_acc:
        return FIGURE_CAPTIONS
    what = f"final {metric.name} ({metric.direction})"
    return FIGURE_CAPTIONS | {
        "lr-sensitivity": f"The study's ranking metric, {what}, and the other final metrics that "
        "were logged, against the peak LR. " + FIGURE_CAPTIONS["lr-sensitivity"].split(". ", 1)[1],
        "outcomes": f"Verdict of every configuration; cell text = mean {what} over seeds.",
        "stability": "Per LR: share of diverged seeds, oscillation index of the train loss and "
        f"seed-to-seed std of the final {metric.name}. Dashed red lines are the verdict thresholds.",
    }


def _figures(sr, figs: dict, metric: RankMetric = DEFAULT) -> dict:
    out = {}
    captions = _captions(metric)
    for k, f in figs.items():
        caption = captions.get(k, "")
        if k == "lr-sensitivity" and len(sr.range_tests):
            caption += RANGE_TEST_NOTE
        if k == "lr-sensitivity" and len(getattr(sr, "pruned", ())):
            caption += (" Hollow circles: trials successive halving stopped, at the value their "
                        "rung's decision saw (see Search).")  # fmt: skip
        markup = Markup(f["markup"]) if f["kind"] == "svg" else f["markup"]
        out[k] = {**f, "markup": markup, "caption": caption}
    return out


CLAIM_COLORS = {"supported": "#31a354", "not_supported": "#d6604d", "inconclusive": "#8c8c8c",
                "skipped": "#bdbdbd"}  # fmt: skip
FIGURE_TITLES = {"lr-sensitivity": "LR sensitivity", "convergence": "Convergence",
                 "stability": "Stability", "grad-norm": "Gradient norm",
                 "robustness": "Robustness", "learning-curves": "Learning curves",
                 "schedules": "Schedules as applied", "axis-momentum": "LR × momentum",
                 "axis-batch_size": "LR × batch size", "outcomes": "Outcomes"}  # fmt: skip


def claim_chip(verdict: str) -> dict:
    """A claim verdict as the page's chips show it (white text on every claim colour)."""
    return {"key": verdict, "text": CLAIM_TEXT[verdict], "color": CLAIM_COLORS[verdict],
            "light": False}  # fmt: skip


def claims_summary(claims: list[ClaimResult]) -> str:
    """'6 claims: 3 supported, 1 not supported, 2 inconclusive'."""
    shown = [*CLAIM_VERDICTS, *(["skipped"] if any(c.verdict == "skipped" for c in claims) else [])]
    counts = {v: sum(c.verdict == v for c in claims) for v in shown}
    return f"{len(claims)} claim{'s' if len(claims) != 1 else ''}: " + ", ".join(
        f"{counts[v]} {CLAIM_TEXT[v]}" for v in shown
    )


def claims_context(claims: list[ClaimResult], figs: dict) -> dict:
    """The Claims section: one entry per claim, and each distinct evidence table once (the
    regime claims all share the 3 × 3 table)."""
    tables, seen, items = [], set(), []
    for c in claims:
        if c.table is not None and (c.table.caption, c.table.rows) not in seen:
            seen.add((c.table.caption, c.table.rows))
            tables.append({"caption": c.table.caption, "head": c.table.head, "rows": c.table.rows})
        figure = (c.figure, FIGURE_TITLES.get(c.figure, c.figure)) if c.figure in figs else None
        items.append({"name": c.name, "statement": c.statement, "family": c.family,
                      "verdict": claim_chip(c.verdict), "reason": c.reason, "rule": c.rule,
                      "evidence": [(e.label, e.text()) for e in c.evidence], "figure": figure})  # fmt: skip
    return {"items": items, "tables": tables, "summary": claims_summary(claims) if claims else ""}


def _range_tests(sr) -> list[dict]:
    return [{"optimizer": r.optimizer, "rule": r.rule, "lr": fmt_value(r.lr),
             "recommended": bool(r.recommended)} for r in sr.range_tests.itertuples()]  # fmt: skip


def _search(sr, trials, metric) -> dict | None:
    """The Search section's text: TPE's (figure `figs['search-tpe']`), then successive
    halving's (`figs['search']`); None when the study used neither."""
    from lrstudy.report.search import search_summary
    from lrstudy.report.tpe_search import tpe_summary

    lines = []
    for summary in (tpe_summary(sr, trials, metric), search_summary(sr, trials)):
        lines += summary.lines() if summary else []
    return {"lines": lines} if lines else None


def page_context(
    sr,
    data: StudyData,
    figs: dict,
    tracking_uri: str,
    generated: datetime,
    claims: list[ClaimResult] | None = None,
) -> dict:
    """Everything the template renders, as strings, lists and (escaped or safe) markup."""
    from lrstudy import __version__

    trials, configs = data.trials, data.configs
    counts = configs["verdict"].value_counts()
    target = has_target(sr, trials)
    return {
        "title": sr.study or sr.experiment_name,
        "header": header(sr, trials, tracking_uri),
        "best": best_text(trials, configs),
        "metric_head": f"{data.metric.label} (mean ± std)",
        "summary": f"{len(configs)} configurations, {len(trials)} runs: "
        + ", ".join(f"{counts.get(v, 0)} {VERDICT_TEXT[v]}" for v in VERDICTS)
        + (
            f"; {len(sr.pruned)} more runs stopped early by successive halving (see Search)"
            if len(getattr(sr, "pruned", ()))
            else ""
        ),  # fmt: skip
        "notes": notes(sr, data) + lr_free_notes(trials),
        "baseline_gains": [g.text() for g in tuning_gains(trials)],  # LR-free baselines
        "palette": sorted(optimizer_colors(configs["optimizer"]).items()),
        "verdicts": [_verdict(v) for v in VERDICTS],
        "rules": rules_text(data.metric),
        "tables": tables(configs, target),
        "final_head": final_head(data.metric, has_acc(configs)),
        "range_tests": _range_tests(sr),
        "search": _search(sr, trials, data.metric),
        "claims": claims_context(claims or [], figs),
        "figs": _figures(sr, figs, data.metric),
        "axis_figs": [
            (a, f"axis-{a}", f"LR × {AXIS_SHORT[a]}") for a in AXES if f"axis-{a}" in figs
        ],  # fmt: skip
        "swept": swept_axes(trials),
        "n_points": point_counts(sr, data, figs),
        "generated": generated.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "version": __version__,
    }
