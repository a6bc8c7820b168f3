"""Exactly-once trial claims in the tracking store itself: no lock server, any number of workers.

MLflow has no atomic "create if absent" and no heartbeat, so a claim is a run plus tags:

1. **Look.** Search the study's runs with the trial's key. A FINISHED run with outcome ok or
   diverged means done: skip. A RUNNING run whose lease expired (this process has watched its
   `lrstudy.heartbeat` stay unchanged for the run's own lease, `lrstudy.lease_s`, while the store
   answered: `leases.Judge`), or whose pid is gone in our own pid space (same machine boot and
   same pid namespace, `runs.pid_gone_here`; a hostname alone proves nothing), is closed as
   KILLED. A RUNNING run with a live lease belongs to another worker: skip for now.
2. **Claim.** Create our RUNNING run for the key (tag `lrstudy.claim=pending`, a heartbeat, our
   lease).
3. **Resolve.** Search again. We win only if we see no other live claim and no done run for the
   key; then we tag `lrstudy.claim=won`. If another claim is `won`, or has the smaller run id, we
   retract (delete our run). If every other claim is pending with a larger id, we wait a moment
   and look again (they retract); after a bounded number of looks we retract as well.

A population claims its members as one batch (`Claims.claim_many`): one search for every key,
the runs created (in parallel on a remote store) and held by the heartbeat from their creation,
one search to resolve them all; the same three steps, key by key, in a few round trips.

Why it is safe: of two claims that both "saw themselves alone", the later-created one searched
after the earlier one existed, so it must have seen it, unless the earlier one was retracted or
reaped as stale. So at most one live winner per key. The tie-break by run id only decides who
yields when two pending claims see each other (liveness), not safety. A winner keeps its lease
alive with a heartbeat thread (`Heartbeat`, `lrstudy.track.heartbeat`); before finishing it beats
once more, re-reads its run and gives up the result if someone reaped it meanwhile (a worker cut
off for longer than the TTL). A reaper (`lrstudy.track.done_or_stale`) re-reads a stale run right
before closing it and spares it if it beat meanwhile, so a reaper that looks after that last beat
never closes a run under its owner's FINISHED. What is left: a reaper whose re-read came before
that beat and whose close lands after the owner's check (one round trip inside two); MLflow has
no compare-and-set to close it.

Bound: a worker that dies (kill -9, lost machine) stops heartbeating; one lease after another
worker first looks at the key (so within two leases of the death), that worker closes its run as
KILLED and claims the trial anew. Waiting workers look at least every `interval_s`. No clock is
compared with another: leases are measured by each observer's monotonic clock against changes it
sees in the store (`lrstudy.track.leases`).
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from lrstudy import names
from lrstudy.interrupts import sigint_deferred
from lrstudy.track import runs as track_runs
from lrstudy.track.done_or_stale import is_done, is_stale, reap_stale
from lrstudy.track.leases import Judge, Lease

CLAIM_PENDING = "pending"
CLAIM_WON = "won"
_RESOLVE_LOOKS = 20  # at ~0.05-0.2 s each: a pending rival gets ~2 s to retract
_PARALLEL = 8  # calls at once when a batch claim creates or marks runs on a remote store


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


@dataclass(frozen=True)
class Wanted:
    """A trial a batch claim asks for: its key, its run's name and tags."""

    key: str
    name: str
    tags: dict[str, Any]


@dataclass
class Batch:
    """What `Claims.claim_many` got: runs won (key -> run id), keys done elsewhere, keys
    settled in this invocation (failed under its parent), and keys another worker holds."""

    won: dict[str, str] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)


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
        # Runs are judged by their own lease as this process watched them, counted only while
        # the store answered us (right after an outage every heartbeat looks old).
        self.judge = Judge(self.lease, self._outage)

    def _stale(self, run, looked_at: float) -> bool:
        return is_stale(run, self.lease, looked_at, self.judge)

    def _key_runs(self, key: str) -> tuple[list, float]:
        looked_at = time.monotonic()
        return key_runs(self.client, self.experiment_id, self.study, key), looked_at

    def _study_runs(self) -> tuple[list, float]:
        looked_at = time.monotonic()
        runs = track_runs.search_all(self.client, [self.experiment_id], _study_filter(self.study))
        return runs, looked_at

    def _judge_key(self, runs: list, looked_at: float, parent_id: str | None) -> str:
        """'done', 'failed', 'busy' or 'free' for one key's runs; reaps stale claims."""
        if any(is_done(r) for r in runs):
            return "done"
        if parent_id and any(
            r.info.status == "FAILED" and r.data.tags.get(names.PARENT_RUN_ID) == parent_id
            for r in runs
        ):
            return "failed"  # retried by the next invocation, not by a sibling worker now
        stale = [r for r in runs if self._stale(r, looked_at)]
        reaped = set(reap_stale(self.client, stale, self.lease, self.judge))
        live = [r for r in runs if r.info.status == "RUNNING" and r.info.run_id not in reaped]
        return "busy" if live else "free"

    def state(self, key: str, parent_id: str | None = None) -> str:
        """'done', 'failed' (a run under `parent_id`, this invocation, failed), 'busy' (a live
        claim elsewhere) or 'free' for `key`; reaps stale claims on the way."""
        runs, looked_at = self._key_runs(key)
        return self._judge_key(runs, looked_at, parent_id)

    def _claim_tags(self, tags: dict[str, Any]) -> dict[str, Any]:
        return {
            **tags,
            names.TAG_OWNER: self.owner,
            names.TAG_CLAIM: CLAIM_PENDING,
            names.TAG_HEARTBEAT: f"{time.time():.3f}",
            **self.lease.tag(),
        }

    def claim(
        self, key: str, *, name: str, tags: dict[str, Any], parent_id: str | None
    ) -> str | None:
        """Our RUNNING run for `key` when we won it, else None (done, busy, or lost the race)."""
        if self.state(key, parent_id) != "free":
            return None
        # Ctrl-C is held back for the second or so a claim takes: an interrupt between creating
        # the run and resolving it would otherwise leave a claim nobody ends.
        with sigint_deferred() as interrupted:
            run_id = track_runs.start_run(
                self.client,
                self.experiment_id,
                name=name,
                tags=self._claim_tags(tags),
                parent_id=parent_id,
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
            runs, looked_at = self._key_runs(key)
            verdict = self._verdict(runs, run_id, looked_at)
            if verdict == CLAIM_WON:
                track_runs.set_tags(self.client, run_id, {names.TAG_CLAIM: CLAIM_WON})
                return True
            if verdict == "yield":
                return False
            self._sleep(random.uniform(0.05, 0.2))
        return False

    def _verdict(self, runs: list, mine: str, looked_at: float) -> str:
        """'won', 'yield' or 'wait' for our pending claim `mine`, given its key's runs."""
        others = [r for r in runs if r.info.run_id != mine]
        if any(is_done(r) for r in others):
            return "yield"
        live = [r for r in others if r.info.status == "RUNNING" and not self._stale(r, looked_at)]
        if not live:
            return CLAIM_WON
        if any(r.data.tags.get(names.TAG_CLAIM) == CLAIM_WON or r.info.run_id < mine for r in live):
            return "yield"
        return "wait"

    def claim_many(
        self,
        wanted: list[Wanted],
        parent_id: str | None,
        *,
        hold: Callable[[str], None] = lambda run_id: None,
        release: Callable[[str], None] = lambda run_id: None,
    ) -> Batch:
        """Claim many keys in a few round trips (a population's members): one search for all,
        the runs created (`hold` is called on each as it is created, so the heartbeat renews it
        from its first moment), one search per resolving round. Ctrl-C is held back while the
        runs are created and resolved, checked between steps, and then every run this call
        created is deleted before KeyboardInterrupt is raised: nothing is left RUNNING.
        """
        batch = Batch()
        by_key = {w.key: w for w in wanted}
        runs, looked_at = self._study_runs()
        grouped: dict[str, list] = {k: [] for k in by_key}
        for r in runs:
            key = r.data.tags.get(names.TAG_TRIAL_KEY)
            if key in grouped:
                grouped[key].append(r)
        free = []
        for key, w in by_key.items():
            verdict = self._judge_key(grouped[key], looked_at, parent_id)
            {"done": batch.done, "failed": batch.failed, "busy": batch.busy}.get(
                verdict, free
            ).append(w if verdict == "free" else key)
        if not free:
            return batch
        created: dict[str, str] = {}  # key -> our run id
        lost: list[str] = []  # keys whose run we created and must delete
        lock = threading.Lock()

        def create(w: Wanted) -> None:
            if interrupted():
                return  # Ctrl-C: stop creating; what exists is deleted below
            run_id = track_runs.start_run(
                self.client,
                self.experiment_id,
                name=w.name,
                tags=self._claim_tags(w.tags),
                parent_id=parent_id,
            )
            hold(run_id)
            with lock:
                created[w.key] = run_id

        def mark_won(key: str) -> None:
            track_runs.set_tags(self.client, created[key], {names.TAG_CLAIM: CLAIM_WON})

        with sigint_deferred() as interrupted:
            try:
                self._parallel(create, free)
                pending = dict(created)
                for _ in range(_RESOLVE_LOOKS):
                    if not pending or interrupted():
                        break
                    runs, looked_at = self._study_runs()
                    grouped = {k: [] for k in pending}
                    for r in runs:
                        if (key := r.data.tags.get(names.TAG_TRIAL_KEY)) in grouped:
                            grouped[key].append(r)
                    verdicts = {
                        k: self._verdict(grouped[k], run_id, looked_at)
                        for k, run_id in pending.items()
                    }
                    winners = [k for k, v in verdicts.items() if v == CLAIM_WON]
                    self._parallel(mark_won, winners)
                    batch.won.update({k: pending[k] for k in winners})
                    batch.busy += [k for k, v in verdicts.items() if v == "yield"]
                    pending = {k: r for k, r in pending.items() if verdicts[k] == "wait"}
                    if pending:
                        self._sleep(random.uniform(0.05, 0.2))
                batch.busy += list(pending)
                # Lost or unresolved: deleted, not ended (a lost race must not look like a run).
                lost = [k for k in created if k not in batch.won]
            except BaseException:
                lost = list(created)
                raise
            finally:
                if interrupted():
                    lost = list(created)
                    batch.won.clear()
                for k in lost:
                    release(created[k])
                self._parallel(self.client.delete_run, [created[k] for k in lost])
        return batch

    def _parallel(self, fn: Callable[[Any], None], items: list) -> None:
        """`fn` over `items`; on a remote store several at once (each call is a round trip)."""
        if len(items) <= 1 or _local_store(self.client):
            for item in items:
                fn(item)
            return
        with ThreadPoolExecutor(max_workers=_PARALLEL, thread_name_prefix="lrstudy-claim") as ex:
            for f in [ex.submit(fn, item) for item in items]:
                f.result()

    def still_ours(self, run_id: str) -> bool:
        """False when another worker reaped our run (we were cut off for longer than the TTL)."""
        return self.client.get_run(run_id).info.status == "RUNNING"


def _study_filter(study: str) -> str:
    return (
        f"tags.`{names.TAG_KIND}` = '{names.KIND_TRIAL}' "
        f"and tags.`{names.TAG_STUDY}` = '{_quote(study)}'"
    )


def _local_store(client) -> bool:
    uri = str(getattr(client, "tracking_uri", "") or "")
    return uri.startswith("sqlite:") or not uri
