"""`LRStudyCallback`'s constructor arguments, checked at construction (one clear message each),
as Lightning's own callbacks do in `__init__`."""

from __future__ import annotations

from typing import Any


def validate_args(args: dict[str, Any]) -> None:
    """Check the constructor's arguments, one clear message per mistake."""
    for name in ("study", "tracking_uri", "experiment", "run_name", "run_id"):
        v = args[name]
        if v is not None and (not isinstance(v, str) or not v):
            raise ValueError(f"{name} must be a non-empty string or None, got {v!r}")
    f = args["divergence_factor"]
    if f is not None and (isinstance(f, bool) or not isinstance(f, int | float) or not f > 1):
        raise ValueError(f"divergence_factor must be a number > 1 or None, got {f!r}")
    if not isinstance(args["stop_on_divergence"], bool):
        raise ValueError(
            f"stop_on_divergence must be True or False, got {args['stop_on_divergence']!r}"
        )
    n = args["sync_every"]
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"sync_every must be an integer >= 1 or None, got {n!r}")
    if args["run_id"] is not None and args["client"] is None:
        raise ValueError("run_id needs the MlflowClient it belongs to (client=...)")
    for name in ("tags", "params"):
        if args[name] is not None and not isinstance(args[name], dict):
            raise ValueError(f"{name} must be a dict, got {type(args[name]).__name__}")
