"""Whether a trial run is done or stale (its owner stopped beating or its pid is gone), and the
reaper that closes stale runs as KILLED. Apart from the claim protocol because readers that
never claim (the study's start-up, `plan`'s status, TPE's history) judge runs the same way."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from lrstudy import names
from lrstudy.track import runs as track_runs
from lrstudy.track.leases import Judge, Lease


def is_done(run) -> bool:
    return run.info.status == "FINISHED" and run.data.tags.get(names.TAG_OUTCOME) in (
        names.DONE_OUTCOMES
    )


def is_stale(run, lease: Lease, looked_at: float | None = None, judge: Judge | None = None) -> bool:
    """A RUNNING run whose owner stopped heartbeating for its lease (as this process watched it,
    `leases.Judge`), or whose pid is gone in our pid space. `looked_at`: when the read that
    returned `run` was sent (monotonic; default now)."""
    if run.info.status != "RUNNING":
        return False
    if track_runs.pid_gone_here(run):
        return True
    judge = judge or Judge(lease)
    return judge.expired(run, time.monotonic() if looked_at is None else looked_at)


def last_sign_of_life(run) -> float:
    """Seconds since the epoch of the newest heartbeat, metric or the start of a run (the
    owner's clock: used for a closed run's end time only, never to judge its lease)."""
    beat = run.data.tags.get(names.TAG_HEARTBEAT)
    times = [run.info.start_time / 1000]
    if beat:
        with contextlib.suppress(ValueError):
            times.append(float(beat))
    times += [m.timestamp / 1000 for m in getattr(run.data, "_metric_objs", [])]
    return max(times)


def reap_stale(client, runs: Iterable, lease: Lease, judge: Judge | None = None) -> list[str]:
    """Close stale RUNNING runs as KILLED, ended when they last showed life; return their ids.

    `runs` may be minutes old (a search before a claim): each stale one is read again right
    before it is closed and left alone if its owner beat meanwhile. An owner back from a cut-off
    beats before it checks its run and finishes (`execute.trial.still_running`), so a reaper
    never closes a run under its owner's FINISHED, a finish no second run of the key can follow."""
    judge = judge or Judge(lease, getattr(client, "outage", None))
    closed = []
    for r in runs:
        if not is_stale(r, lease, judge=judge):
            continue
        looked_at = time.monotonic()
        r = client.get_run(r.info.run_id)
        if is_stale(r, lease, looked_at, judge):
            track_runs.end_run(
                client,
                r.info.run_id,
                outcome=names.OUTCOME_KILLED,
                end_time_s=last_sign_of_life(r),
            )
            judge.watch.forget(r.info.run_id)
            closed.append(r.info.run_id)
    return closed
