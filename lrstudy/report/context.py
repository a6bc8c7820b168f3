"""Everything the report template shows, as plain strings and lists (the template only lays out).

Numbers always carry n and spread: "0.842 ± 0.011 (n=2)"; diverged runs are counted, never
dropped.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd
from markupsafe import Markup

from lrstudy import names as N
from lrstudy.report.analyze import AXES, AXIS_SHORT, fmt_value, mean_std, swept_axes
from lrstudy.report.diagnose import VERDICT_TEXT, VERDICTS, rules_text
from lrstudy.report.plots.style import VERDICT_COLORS, optimizer_colors

FIGURE_CAPTIONS = {
    "lr-sensitivity": "Final and best validation accuracy and final train loss against the peak LR. "
    "Line = mean over seeds, band = min–max over seeds, dots = single seeds, × at the panel edge = "
    "a diverged seed.",
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
}


RANGE_TEST_NOTE = " Dashed vertical lines: the LR range test's recommended LR per optimizer."


def _safe_uri(uri: str) -> str:
    """The tracking URI without credentials (user:password@, or a token in the query)."""
    parts = urlsplit(uri)
    if not (parts.username or parts.password or parts.query):
        return uri  # rebuilding would mangle sqlite:////abs/path
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _list(value: str | None) -> str:
    try:
        v = json.loads(value) if value else None
    except (TypeError, ValueError):
        return str(value)
    if isinstance(v, list):
        return ", ".join(str(x) for x in v) or "—"
    if isinstance(v, dict):
        return (
            "; ".join(
                f"{k}: {', '.join(map(str, x)) if isinstance(x, list) else x}" for k, x in v.items()
            )
            or "—"
        )
    return str(v)


def _when(ms: float | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def header(sr, trials: pd.DataFrame, tracking_uri: str) -> list[tuple[str, str]]:
    p = (sr.parent or {}).get("params", {})
    tags = (sr.parent or {}).get("tags", {})
    seeds = sorted({int(s) for s in trials["seed"].dropna()})
    items = [
        ("task", p.get("dataset", "—")),
        ("model", p.get("model", "—") + (f" {p['model_args']}" if p.get("model_args") not in (None, "{}") else "")),
        ("steps", f"{p['total_steps']} ({p.get('epochs', '?')} epochs × {p.get('steps_per_epoch', '?')} steps, "
                  f"batch size {p.get('batch_size', '?')})" if "total_steps" in p else "—"),
        ("optimizers", _list(p["optimizers"]) if "optimizers" in p else ", ".join(sorted(trials["optimizer"].unique()))),
        ("schedules", _list(p["schedules"]) if "schedules" in p else ", ".join(sorted(trials["schedule"].unique()))),
        ("search", f"{p.get('search', '—')}" + (f", swept besides LR: {_list(p['sweep'])}" if p.get("sweep") not in (None, "{}") else "")),
        ("seeds", f"n={len(seeds)} ({', '.join(map(str, seeds))})" if seeds else "—"),
        ("target", f"{p['target_metric']} {'≥' if p.get('target_mode', 'max') == 'max' else '≤'} {p.get('target_value')}" if "target_metric" in p else "—"),
        ("store", f"{_safe_uri(tracking_uri)} — experiment {sr.experiment_name} ({sr.experiment_id})"),
        ("date", _when((sr.parent or {}).get("start_time") or trials["start_time"].min())),
        ("lrstudy version", tags.get(N.TAG_VERSION, "—")),
    ]  # fmt: skip
    device_col = f"tags.{N.TAG_DEVICE}"
    if device_col in sr.runs.columns and sr.runs[device_col].notna().any():
        items.insert(-2, ("device", ", ".join(sorted(sr.runs[device_col].dropna().unique()))))
    if p.get("description"):
        items.insert(0, ("description", p["description"]))
    return items


def _steps(row) -> str:
    if row["n_reached"] == 0:
        return "never"
    return f"{row['steps_to_target']:.0f} ({row['n_reached']}/{row['n']} seeds)"


def _sort(v) -> str:
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.6g}"


def _cell(r: pd.Series, col: str, digits: int = 3) -> tuple[str, str]:
    return mean_std(r[col], r[col + "_std"], None, digits), _sort(r[col])


def best_text(configs: pd.DataFrame) -> str:
    alive = configs[(configs["n_diverged"] == 0) & np.isfinite(configs["score"])]
    if alive.empty:
        return "no configuration finished without diverging"
    b = alive.loc[alive["score"].idxmax()]
    what = "final val accuracy" if np.isfinite(b["final_val_acc"]) else "score (−final train loss)"
    return f"{b['config']}: {what} {mean_std(b['score'], b['score_std'], b['n'])}"


def _verdict(v: str) -> dict:
    return {"key": v, "text": VERDICT_TEXT[v], "color": VERDICT_COLORS[v]}


def tables(configs: pd.DataFrame) -> dict:
    colors = optimizer_colors(configs["optimizer"])
    diag, conv, final = [], [], []
    for fam, g in configs.groupby("family", sort=True):
        rows = []
        for _, r in g.iterrows():
            osc = "—" if not np.isfinite(r["osc_index"]) else f"{r['osc_index']:.2f}"
            std = "—" if not np.isfinite(r["score_std"]) else f"{r['score_std']:.3f}"
            rows.append({"lr": fmt_value(r["lr"]), "n": r["n"], "steps": _steps(r),
                         "stability": f"osc {osc}, seed std {std}, diverged {r['n_diverged']}/{r['n']}",
                         "final": mean_std(r["final_val_acc"], r["final_val_acc_std"], r["n"]),
                         "verdict": _verdict(r["verdict"]), "reason": r["reason"]})  # fmt: skip
            conv.append({"family": fam, "lr": fmt_value(r["lr"]), "steps": _steps(r),
                         "auc_acc": mean_std(r["auc_val_acc"], r["auc_val_acc_std"], r["n"]),
                         "auc_loss": mean_std(r["auc_train_loss"], r["auc_train_loss_std"], r["n"])})  # fmt: skip
            # (text, sort key); n has its own column, so the cells show mean ± std only
            cells = [(fam, fam), (fmt_value(r["lr"]), _sort(r["lr"])), (str(r["n"]), str(r["n"]))]
            cells += [
                _cell(r, c) for c in ("final_val_acc", "best_val_acc", "final_train_acc", "gen_gap")
            ]
            cells += [
                _cell(r, "train_seconds", 1),
                (f"{r['n_diverged']}/{r['n']}", _sort(r["divergence_rate"])),
                (VERDICT_TEXT[r["verdict"]], str(VERDICTS.index(r["verdict"]))),
            ]
            final.append({"cells": cells, "verdict": _verdict(r["verdict"])})
        diag.append({"family": fam, "color": colors[g["optimizer"].iloc[0]], "rows": rows})
    return {"diagnosis": diag, "convergence": conv, "final": final}


def page_context(sr, data: dict, figs: dict, tracking_uri: str, generated: datetime) -> dict:
    from lrstudy import __version__

    trials, configs = data["trials"], data["configs"]
    counts = configs["verdict"].value_counts()
    notes = []
    if sr.parent is not None and sr.parent["status"] != "FINISHED":
        notes.append(
            f"The newest study run ended with status {sr.parent['status']}; the report covers the trials that finished."
        )
    if sr.n_parents > 1:
        notes.append(
            f"{sr.n_parents} invocations of this study; trials are taken from all of them (newest finished run per trial)."
        )
    for why, n in sr.ignored.items():
        notes.append(f"{n} run(s) left out: {why}.")
    if sr.study is None:
        notes.append(
            "No lrstudy study runs in this experiment: runs are grouped by their `optimizer` and `lr` params."
        )
    swept = swept_axes(trials)
    title = sr.study or sr.experiment_name
    return {
        "title": title,
        "header": header(sr, trials, tracking_uri),
        "best": best_text(configs),
        "summary": f"{len(configs)} configurations, {len(trials)} runs: "
        + ", ".join(f"{counts.get(v, 0)} {VERDICT_TEXT[v]}" for v in VERDICTS),
        "notes": notes,
        "palette": sorted(optimizer_colors(configs["optimizer"]).items()),
        "verdicts": [_verdict(v) for v in VERDICTS],
        "rules": rules_text(),
        "tables": tables(configs),
        "final_head": [
            "optimizer · schedule · …",
            "peak LR",
            "n",
            "final val acc",
            "best val acc",
            "final train acc",
            "gen. gap (train − val)",
            "train time (s)",
            "diverged",
            "verdict",
        ],  # fmt: skip
        "range_tests": [
            {
                "optimizer": r.optimizer,
                "rule": r.rule,
                "lr": fmt_value(r.lr),
                "recommended": bool(r.recommended),
            }
            for r in sr.range_tests.itertuples()
        ],
        "figs": {
            k: {
                **f,
                "markup": Markup(f["markup"]) if f["kind"] == "svg" else f["markup"],
                "caption": FIGURE_CAPTIONS.get(k, "")
                + (RANGE_TEST_NOTE if k == "lr-sensitivity" and len(sr.range_tests) else ""),
            }
            for k, f in figs.items()
        },  # fmt: skip
        "axis_figs": [
            (a, f"axis-{a}", f"LR × {AXIS_SHORT[a]}") for a in AXES if f"axis-{a}" in figs
        ],
        "swept": swept,
        "n_points": {"read": data["n_read"], "plotted": sum(f["points"] for f in figs.values())},
        "generated": generated.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "version": __version__,
    }
