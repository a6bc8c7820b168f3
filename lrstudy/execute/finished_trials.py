"""What the store already holds for the study as it is defined now: its finished runs, their
ranking values and their outcome counts. Apart from the study's order of business: these only
read the runs of earlier invocations, to seed the progress display and an already done summary."""

from __future__ import annotations

from typing import Any

from lrstudy import names
from lrstudy.track.done_or_stale import is_done


def current_done(runs: list, current: set[str]) -> list:
    """The finished runs of the study as it is defined now (`lrstudy.report.versions`): trials
    of earlier versions (other keys) never count towards its best or its outcomes."""
    from lrstudy.report.versions import Version, is_current

    version = Version.of(None, current)
    return [
        r
        for r in runs
        if is_done(r)
        and is_current(
            r.data.tags.get(names.TAG_TRIAL_KEY), r.data.tags.get(names.TAG_SPEC_HASH), version
        )
    ]


def finished_accs(
    runs: list, current: set[str], metric: tuple[str, str] = (names.VAL_ACC, "max")
) -> list[tuple[str, str, float | None, bool, float | None, bool]]:
    """(config key, name, final value of the ranking metric, diverged, lr, pruned) per finished trial of
    the current version: final val acc for val/acc, else the metric's latest logged value."""
    key = names.FINAL_VAL_ACC if tuple(metric) == (names.VAL_ACC, "max") else metric[0]
    out = []
    for r in current_done(runs, current):
        try:
            lr = float(r.data.params.get("lr"))
        except (TypeError, ValueError):
            lr = None
        out.append(
            (
                r.data.tags.get(names.TAG_CONFIG_KEY, ""),
                r.info.run_name,
                r.data.metrics.get(key),
                r.data.tags.get(names.TAG_OUTCOME) == names.OUTCOME_DIVERGED,
                lr,
                r.data.tags.get(names.TAG_OUTCOME) == names.OUTCOME_PRUNED,
            )
        )
    return out


def finished_outcomes(runs: list, current: set[str]) -> dict[str, int]:
    """Outcome -> count over the current trials' finished runs (newest per key): what the
    summary reports when every trial was already finished."""
    newest: dict[str, Any] = {}
    for r in current_done(runs, current):
        k = r.data.tags.get(names.TAG_TRIAL_KEY)
        if k not in newest or (r.info.start_time or 0) > (newest[k].info.start_time or 0):
            newest[k] = r
    counts: dict[str, int] = {}
    for r in newest.values():
        o = r.data.tags.get(names.TAG_OUTCOME) or names.OUTCOME_OK
        counts[o] = counts.get(o, 0) + 1
    return dict(sorted(counts.items()))
