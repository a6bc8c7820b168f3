"""Exactly-once trial claims in the tracking store itself: no lock server, any number of workers.

MLflow has no atomic "create if absent" and no heartbeat, so a claim is a run plus two tags:

1. **Look.** Search the study's runs with the trial's key. A FINISHED run with outcome ok or
   diverged means done: skip. A RUNNING run whose lease is stale (its `lrstudy.heartbeat` is older
   than the lease's TTL, or its pid is gone in our own pid space: same machine boot and same pid
   namespace, `runs.pid_gone_here`; a hostname alone proves nothing) is closed as KILLED. A RUNNING run with a
   live lease belongs to another worker: skip for now.
2. **Claim.** Create our RUNNING run for the key (tag `lrstudy.claim=pending`, heartbeat now).
3. **Resolve.** Search again. We win only if we see no other live claim and no done run for the
   key; then we tag `lrstudy.claim=won`. If another claim is `won`, or has the smaller run id, we
   retract (delete our run). If every other claim is pending with a larger id, we wait a moment
   and look again (they retract); after a bounded number of looks we retract as well.

Why it is safe: of two claims that both "saw themselves alone", the later-created one searched
after the earlier one existed, so it must have seen it, unless the earlier one was retracted or
reaped as stale. So at most one live winner per key. The tie-break by run id only decides who
yields when two pending claims see each other (liveness), not safety. A winner keeps its lease
alive with a heartbeat thread (`Heartbeat`); before finishing it beats once more, re-reads its run
and gives up the result if someone reaped it meanwhile (a worker cut off for longer than the TTL).
A reaper re-reads a stale run right before closing it and spares it if it beat meanwhile, so a
reaper that looks after that last beat never closes a run under its owner's FINISHED. What is
left: a reaper whose re-read came before that beat and whose close lands after the owner's check
(one round trip inside two); MLflow has no compare-and-set to close it.

Bound: a worker that dies (kill -9, lost machine) stops heartbeating; after `ttl_s` any worker
that looks at the key closes its run as KILLED and claims the trial anew. Waiting workers look at
least every `interval_s`. Clocks of the machines are assumed to agree to well within the TTL.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from lrstudy import names
from lrstudy.track import runs as track_runs

CLAIM_PENDING = "pending"
CLAIM_WON = "won"
_RESOLVE_LOOKS = 20  # at ~0.05-0.2 s each: a pending rival gets ~2 s to retract


@dataclass(frozen=True)
class Lease:
    """How long a claim lives without a heartbeat. `LRSTUDY_LEASE_SECONDS` sets the TTL."""

    ttl_s: float = 60.0

    @property
    def interval_s(self) -> float:
        # Four beats per TTL: one or two lost writes (a busy store) never expire a live claim.
        return self.ttl_s / 4

    @classmethod
    def from_env(cls) -> Lease:
        raw = os.environ.get("LRSTUDY_LEASE_SECONDS")
        return cls(float(raw)) if raw else cls()


def new_owner() -> str:
    """A worker's identity on its runs: host, pid and a random part (pids repeat across hosts).

    Informative only: liveness reads the run's pid, boot id and pid namespace tags."""
    return f"{track_runs.host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def key_runs(client, experiment_id: str, study: str, key: str) -> list:
    """Every active (not deleted) trial run of `study` with trial key `key`."""
    return client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{names.TAG_KIND}` = '{names.KIND_TRIAL}' "
            f"and tags.`{names.TAG_TRIAL_KEY}` = '{key}' "
            f"and tags.`{names.TAG_STUDY}` = '{_quote(study)}'"
        ),
        max_results=names.MLFLOW_MAX_RESULTS,
    )


def _quote(value: str) -> str:
    return value.replace("'", "\\'")


def is_done(run) -> bool:
    return run.info.status == "FINISHED" and run.data.tags.get(names.TAG_OUTCOME) in (
        names.DONE_OUTCOMES
    )


def is_stale(run, lease: Lease, now: float | None = None) -> bool:
    """A RUNNING run whose owner stopped heartbeating (or whose pid is gone in our pid space)."""
    if run.info.status != "RUNNING":
        return False
    if track_runs.pid_gone_here(run):
        return True
    now = time.time() if now is None else now
    return now - last_sign_of_life(run) > lease.ttl_s


def last_sign_of_life(run) -> float:
    """Seconds since the epoch of the newest heartbeat, metric or the start of a run."""
    beat = run.data.tags.get(names.TAG_HEARTBEAT)
    times = [run.info.start_time / 1000]
    if beat:
        with contextlib.suppress(ValueError):
            times.append(float(beat))
    times += [m.timestamp / 1000 for m in getattr(run.data, "_metric_objs", [])]
    return max(times)


def reap_stale(client, runs: Iterable, lease: Lease) -> list[str]:
    """Close stale RUNNING runs as KILLED, ended when they last showed life; return their ids.

    `runs` may be minutes old (a search before a claim): each stale one is read again right
    before it is closed and left alone if its owner beat meanwhile. An owner back from a cut-off
    beats before it checks its run and finishes (`execute.trial.still_running`), so a reaper
    never closes a run under its owner's FINISHED, a finish no second run of the key can follow."""
    closed = []
    for r in runs:
        if not is_stale(r, lease):
            continue
        r = client.get_run(r.info.run_id)
        if is_stale(r, lease, time.time()):
            track_runs.end_run(
                client,
                r.info.run_id,
                outcome=names.OUTCOME_KILLED,
                end_time_s=last_sign_of_life(r),
            )
            closed.append(r.info.run_id)
    return closed


class Claims:
    """Claims trials of one study for one worker (`owner`)."""

    def __init__(
        self,
        client,
        experiment_id: str,
        study: str,
        *,
        owner: str | None = None,
        lease: Lease | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.study = study
        self.owner = owner or new_owner()
        self.lease = lease or Lease.from_env()
        self._sleep = sleep
        self._outage = getattr(client, "outage", None)

    def _stale(self, run) -> bool:
        """`is_stale`, except that right after a tracking outage no lease is judged: nobody's
        heartbeat could land while the server was down, so every lease looks expired then."""
        if self._outage is not None and self._outage.calm_for() <= self.lease.ttl_s:
            return run.info.status == "RUNNING" and track_runs.pid_gone_here(run)
        return is_stale(run, self.lease)

    def state(self, key: str, parent_id: str | None = None) -> str:
        """'done', 'failed' (a run under `parent_id`, this invocation, failed), 'busy' (a live
        claim elsewhere) or 'free' for `key`; reaps stale claims on the way."""
        runs = key_runs(self.client, self.experiment_id, self.study, key)
        if any(is_done(r) for r in runs):
            return "done"
        if parent_id and any(
            r.info.status == "FAILED" and r.data.tags.get(names.PARENT_RUN_ID) == parent_id
            for r in runs
        ):
            return "failed"  # retried by the next invocation, not by a sibling worker now
        reap_stale(self.client, [r for r in runs if self._stale(r)], self.lease)
        live = [r for r in runs if r.info.status == "RUNNING" and not self._stale(r)]
        return "busy" if live else "free"

    def claim(
        self, key: str, *, name: str, tags: dict[str, Any], parent_id: str | None
    ) -> str | None:
        """Our RUNNING run for `key` when we won it, else None (done, busy, or lost the race)."""
        if self.state(key, parent_id) != "free":
            return None
        claim_tags = {
            **tags,
            names.TAG_OWNER: self.owner,
            names.TAG_CLAIM: CLAIM_PENDING,
            names.TAG_HEARTBEAT: f"{time.time():.3f}",
        }
        # Ctrl-C is held back for the second or so a claim takes: an interrupt between creating
        # the run and resolving it would otherwise leave a claim nobody ends.
        with _sigint_deferred() as interrupted:
            run_id = track_runs.start_run(
                self.client, self.experiment_id, name=name, tags=claim_tags, parent_id=parent_id
            )
            try:
                won = self._settle(key, run_id)
            except BaseException:
                self.client.delete_run(run_id)
                raise
            if not won or interrupted():
                # Deleted, not ended: a lost race must not look like a trial that ran.
                self.client.delete_run(run_id)
                won = False
        return run_id if won else None

    def _settle(self, key: str, run_id: str) -> bool:
        for _ in range(_RESOLVE_LOOKS):
            verdict = self._resolve(key, run_id)
            if verdict == CLAIM_WON:
                track_runs.set_tags(self.client, run_id, {names.TAG_CLAIM: CLAIM_WON})
                return True
            if verdict == "yield":
                return False
            self._sleep(random.uniform(0.05, 0.2))
        return False

    def _resolve(self, key: str, mine: str) -> str:
        """'won', 'yield' or 'wait' for our pending claim `mine`."""
        others = [
            r
            for r in key_runs(self.client, self.experiment_id, self.study, key)
            if r.info.run_id != mine
        ]
        if any(is_done(r) for r in others):
            return "yield"
        live = [r for r in others if r.info.status == "RUNNING" and not self._stale(r)]
        if not live:
            return CLAIM_WON
        if any(r.data.tags.get(names.TAG_CLAIM) == CLAIM_WON or r.info.run_id < mine for r in live):
            return "yield"
        return "wait"

    def still_ours(self, run_id: str) -> bool:
        """False when another worker reaped our run (we were cut off for longer than the TTL)."""
        return self.client.get_run(run_id).info.status == "RUNNING"


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[Callable[[], bool]]:
    """Hold SIGINT until the block ends, then raise KeyboardInterrupt (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield lambda: bool(caught)
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class Heartbeat:
    """A daemon thread that refreshes `lrstudy.heartbeat` on the runs a worker holds.

    `on_error(exc)` / `on_ok()` let the caller show a tracking outage while it lasts.
    """

    def __init__(
        self,
        client,
        lease: Lease,
        *,
        on_error: Callable[[BaseException], None] | None = None,
        on_ok: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.lease = lease
        self._runs: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._on_error = on_error
        self._on_ok = on_ok
        self._thread = threading.Thread(target=self._loop, name="lrstudy-heartbeat", daemon=True)
        self._thread.start()

    def hold(self, run_id: str) -> None:
        with self._lock:
            self._runs.add(run_id)

    def release(self, run_id: str) -> None:
        with self._lock:
            self._runs.discard(run_id)

    def beat(self) -> None:
        with self._lock:
            held = sorted(self._runs)
        for run_id in held:
            track_runs.set_tags(self.client, run_id, {names.TAG_HEARTBEAT: f"{time.time():.3f}"})

    def _loop(self) -> None:
        while not self._stop.wait(self.lease.interval_s):
            try:
                self.beat()
            except Exception as e:  # noqa: BLE001 - an outage is reported, never fatal here
                if self._on_error:
                    self._on_error(e)
            else:
                if self._on_ok:
                    self._on_ok()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
