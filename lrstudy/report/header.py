"""The report's header: what ran (task, model, steps, optimizers, schedules, seeds, target),
where it is stored (without credentials) and when."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from lrstudy import names as N
from lrstudy.report.analyze import fmt_value


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


def has_target(sr, trials: pd.DataFrame) -> bool:
    """Whether the study set a target (else 'steps to target' has nothing to count)."""
    p = (sr.parent or {}).get("params", {})
    return bool(p.get("target_metric")) or trials["steps_to_target"].notna().any()


def target_text(p: dict) -> str:
    """'val/acc ≥ 0.8', or 'none' when the study set no target (logged as an empty string)."""
    if not p.get("target_metric"):
        return "none"
    op = "≤" if p.get("target_mode") == "min" else "≥"
    value = p.get("target_value")
    try:
        value = fmt_value(float(value))
    except (TypeError, ValueError):
        value = value or "?"
    return f"{p['target_metric']} {op} {value}"


def header(sr, trials: pd.DataFrame, tracking_uri: str) -> list[tuple[str, str]]:
    """(label, text) rows of the page's header: what ran, where, when."""
    p = (sr.parent or {}).get("params", {})
    tags = (sr.parent or {}).get("tags", {})
    seeds = sorted({int(s) for s in trials["seed"].dropna()})
    task = p.get("dataset", "—")
    if p.get("num_classes") not in (None, "", "0"):  # labels 0..C-1 (checked when loaded)
        task += f" ({p['num_classes']} classes; {p.get('n_train', '?')} train, {p.get('n_test', '?')} validation samples)"
    items = [
        ("task", task),
        ("model", p.get("model", "—") + (f" {p['model_args']}" if p.get("model_args") not in (None, "{}") else "")),
        ("steps", f"{p['total_steps']} ({p.get('epochs', '?')} epochs × {p.get('steps_per_epoch', '?')} steps, "
                  f"batch size {p.get('batch_size', '?')})" if "total_steps" in p else "—"),
        ("optimizers", _list(p["optimizers"]) if "optimizers" in p else ", ".join(sorted(trials["optimizer"].unique()))),
        ("schedules", _list(p["schedules"]) if "schedules" in p else ", ".join(sorted(trials["schedule"].unique()))),
        ("search", f"{p.get('search', '—')}" + (f", swept besides LR: {_list(p['sweep'])}" if p.get("sweep") not in (None, "{}") else "")),
        ("seeds", f"n={len(seeds)} ({', '.join(map(str, seeds))})" if seeds else "—"),
        ("target", target_text(p)),
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
