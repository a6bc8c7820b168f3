"""Leases judged by what the store shows, never by anyone's wall clock or settings.

A claim's owner renews its lease by rewriting its run's `lrstudy.heartbeat` tag every TTL/4
(`heartbeat.Heartbeat`). The TTL travels with the claim (tag `lrstudy.lease_s`, written when the run
is created), so an observer judges a run by the run's own lease, not by its own
`LRSTUDY_LEASE_SECONDS`.

**When is a lease expired?** MLflow has no server-side time on runs: a run's start time, its
metric timestamps and our heartbeat value are all the writer's clock (the client fills
`start_time` in `MlflowClient.create_run`; the REST handler stores what it is sent; sqlite has no
server at all). So comparing a heartbeat's value with the observer's `time.time()` trusts two
clocks. Instead an observer watches: it remembers each RUNNING run's heartbeat value and when (on
its own *monotonic* clock) it first saw that value; the run is stale when a later read, sent at
least one lease after that, still shows the same value (the AWS DynamoDB lock client's scheme:
the lease's duration is stored with the lock and measured by the waiter; only the rate of the
clocks matters, never their setting). An owner that beats every TTL/4 changes the value at least
three times within one lease, so a live owner is never judged stale, whatever its clock or ours
reads; a skew of hours changes nothing.

**Outages.** Nobody can beat while the store is unreachable, so after an outage every heartbeat
looks old to a clock-based judge. Here a run can only be judged stale after being watched for a
lease *while the store answered this observer*: an observation is counted from the end of this
process's last outage at the earliest (`Outage.calm_since`). A new invocation started right after
an outage that it never saw starts watching then; the owners, whose patient clients retry every
second, beat within a second or so of the store's return and long before a lease has passed. The
price: a dead owner's claim is taken over one lease after someone first looks at it (at most two
leases after its death, instead of one), and a claim is never taken over at start-up by age alone
(a dead pid in our own pid space is still closed at once: `runs.pid_gone_here`).

The heartbeat's value stays the owner's epoch seconds: it is what a closed run's end time is set
to (`done_or_stale.last_sign_of_life`), a cosmetic use a skewed clock can only make look odd, which the
start-up check (`clock_offset`) warns about.
"""

from __future__ import annotations

import math
import os
import threading
import time
import urllib.request
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from lrstudy import names
from lrstudy.errors import UserInputError

ENV = "LRSTUDY_LEASE_SECONDS"
DEFAULT_TTL_S = 60.0
# The TTL of a claim, written on its run when the run is created (beside names.TAG_HEARTBEAT).
TAG_LEASE = "lrstudy.lease_s"


@dataclass(frozen=True)
class Lease:
    """How long a claim lives without a heartbeat. `LRSTUDY_LEASE_SECONDS` sets the TTL."""

    ttl_s: float = DEFAULT_TTL_S

    def __post_init__(self) -> None:
        check_ttl(self.ttl_s, "lease")

    @property
    def interval_s(self) -> float:
        # Four beats per TTL: one or two lost writes (a busy store) never expire a live claim.
        return self.ttl_s / 4

    @classmethod
    def from_env(cls) -> Lease:
        raw = os.environ.get(ENV)
        if not raw:
            return cls()
        try:
            ttl = float(raw)
        except ValueError:
            raise UserInputError(
                f"{ENV}: {raw!r} is not allowed; give the lease in seconds (> 0)"
            ) from None
        check_ttl(ttl, ENV)
        return cls(ttl)

    def tag(self) -> dict[str, str]:
        return {TAG_LEASE: f"{self.ttl_s:g}"}


def check_ttl(ttl: float, what: str) -> None:
    if not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise UserInputError(f"{what}: {ttl!r} is not allowed; give the lease in seconds (> 0)")


def lease_of(run, default: Lease) -> Lease:
    """The lease the run's claim was made with; `default` for runs that carry none (older
    lrstudy versions) or carry a value no lease can have."""
    raw = run.data.tags.get(TAG_LEASE)
    try:
        ttl = float(raw) if raw else None
    except ValueError:
        ttl = None
    return Lease(ttl) if ttl is not None and math.isfinite(ttl) and ttl > 0 else default


def _token(run) -> tuple:
    return (run.data.tags.get(names.TAG_HEARTBEAT), run.info.status)


class Watch:
    """What this process has seen of each run's heartbeat, and since when (monotonic). Shared by
    every claim of the process (module-level `WATCH`), so the study's start-up look counts for
    the worker that runs in the study process. Thread-safe."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple, float]] = {}
        self._lock = threading.Lock()

    def unchanged_for(self, run, looked_at: float) -> float:
        """Seconds for which `run`'s heartbeat is known unchanged, as of a read sent at
        `looked_at` (monotonic) that returned `run`. A value not seen before is recorded as of
        now (when the read came back: the later, the safer) and counts 0."""
        token = _token(run)
        run_id = run.info.run_id
        with self._lock:
            seen = self._seen.get(run_id)
            if seen is None or seen[0] != token:
                self._seen[run_id] = (token, time.monotonic())
                return 0.0
            return max(0.0, looked_at - seen[1])

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._seen.pop(run_id, None)


WATCH = Watch()


class Judge:
    """Decides whether a RUNNING run's lease has expired, as this observer has watched it.

    `outage`: this process's outage record for the store (`outage.Outage`), or None; watching
    counts only from the end of its last outage."""

    def __init__(self, default: Lease, outage=None, watch: Watch = WATCH) -> None:
        self.default = default
        self.outage = outage
        self.watch = watch

    def expired(self, run, looked_at: float) -> bool:
        unchanged = self.watch.unchanged_for(run, looked_at)
        if self.outage is not None:
            calm_since = self.outage.calm_since()
            if calm_since is None:
                return False  # the store is unreachable right now: nobody could beat
            with_store = looked_at - calm_since
            unchanged = min(unchanged, with_store)
        return unchanged >= lease_of(run, self.default).ttl_s


# ---- is this machine's clock the store's? (a warning at start; leases do not depend on it) ----


def clock_offset(client, uri: str) -> tuple[float, float] | None:
    """(offset, uncertainty) in seconds of the store's clock minus ours, or None where the store
    has no clock of its own we can read (sqlite: it is this machine's) or it cannot be read.

    A tracking server: the `Date` header of its `/health` answer (whole seconds). A database:
    its `clock_timestamp()` / `NOW(6)`."""
    try:
        if uri.startswith(("http://", "https://")):
            return _http_offset(uri)
        if uri.startswith(("postgresql", "mysql")):
            return _sql_offset(client, uri)
    except Exception:  # noqa: BLE001 - a warning we cannot compute is no error
        return None
    return None


def _http_offset(uri: str) -> tuple[float, float] | None:
    sent = time.time()
    with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
        date = resp.headers.get("Date")
        resp.read(64)
    back = time.time()
    if not date:
        return None
    store = parsedate_to_datetime(date).timestamp() + 0.5  # the header truncates to the second
    return store - (sent + back) / 2, 0.5 + (back - sent) / 2


def _sql_offset(client, uri: str) -> tuple[float, float] | None:
    import sqlalchemy

    store = getattr(client, "_client", client)._tracking_client.store
    engine = getattr(store, "engine", None)
    if engine is None:
        return None
    query = (
        "SELECT EXTRACT(EPOCH FROM clock_timestamp())"
        if uri.startswith("postgresql")
        else "SELECT UNIX_TIMESTAMP(NOW(6))"
    )
    with engine.connect() as con:
        sent = time.time()
        value = float(con.execute(sqlalchemy.text(query)).scalar())
        back = time.time()
    return value - (sent + back) / 2, (back - sent) / 2


def clock_warning(client, uri: str, lease: Lease) -> str | None:
    """One line when this machine's clock and the store's differ by more than a quarter of the
    lease (beyond what the measurement can tell), else None."""
    measured = clock_offset(client, uri)
    if measured is None:
        return None
    offset, uncertainty = measured
    if abs(offset) - uncertainty <= lease.ttl_s / 4:
        return None
    way = "behind" if offset > 0 else "ahead of"
    return (
        f"warning: this machine's clock is {abs(offset):.0f} s {way} the tracking store's "
        f"(more than a quarter of the {lease.ttl_s:g} s lease): claims are safe (leases are "
        "judged by the store, not by clocks), but run and metric times will be off"
    )
