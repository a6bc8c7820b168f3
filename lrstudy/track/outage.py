"""Riding out a tracking store that stops answering: retry, say so while it lasts, give up late.

MLflow's HTTP client retries a dead server silently for minutes and then raises a chained
traceback (design.md); a direct database store (`postgresql+psycopg2://`, `mysql://`, a busy
sqlite) gets no retries at all: a database restart fails the call at once. For http(s) stores
lrstudy turns MLflow's own retries down, and for every store it retries itself, through
`PatientClient`, so that:
- the outage is visible (`Outage.seconds()`, shown by the progress display) while it lasts;
- nothing is lost: the call is repeated, not dropped (metric rows stay buffered meanwhile);
- after `patience_s` the study stops with `TrackingUnavailable` (exit 3); runs left RUNNING
  expire by lease and are redone by the next invocation, so the store stays consistent.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import Any

DEFAULT_PATIENCE_S = 300.0
# Substrings of the errors a dead or restarting server causes (requests / urllib3 / MLflow).
_CONNECTION_MARKERS = (
    "Connection refused",
    "ConnectionError",
    "Max retries exceeded",
    "Failed to establish a new connection",
    "Read timed out",
    "RemoteDisconnected",
    "Connection aborted",
    "Connection reset",
    # The server died mid-answer: urllib3's IncompleteRead inside requests' ChunkedEncodingError.
    "Connection broken",
    "IncompleteRead",
    "ChunkedEncodingError",
    "too many 502 error responses",
    "too many 503 error responses",
    "too many 504 error responses",
    "status code 502",
    "status code 503",
    "status code 504",
    # A database restarting or out of reach (a direct postgresql+psycopg2:// or mysql store, as
    # psycopg2 / PyMySQL word it inside MLflow's TEMPORARILY_UNAVAILABLE), or a busy sqlite.
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "could not connect to server",
    "SSL connection has been closed unexpectedly",
    "SSL SYSCALL error",
    "Lost connection to MySQL server",
    "MySQL server has gone away",
    "Can't connect to MySQL server",
    "database is locked",
)


class TrackingUnavailable(RuntimeError):
    """The tracking store stayed unreachable for longer than the patience."""


def is_connection_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}"
    return any(m in text for m in _CONNECTION_MARKERS)


def patience_from_env() -> float:
    raw = os.environ.get("LRSTUDY_TRACKING_PATIENCE")
    return float(raw) if raw else DEFAULT_PATIENCE_S


class Outage:
    """When the tracking server stopped answering (None while it answers). Thread-safe."""

    def __init__(self, uri: str, patience_s: float) -> None:
        self.uri = uri
        self.patience_s = patience_s
        self._since: float | None = None
        self._ended: float | None = None  # when the last outage ended
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        """Record a failed call; raise TrackingUnavailable once the outage outlasts patience."""
        with self._lock:
            now = time.monotonic()
            if self._since is None:
                self._since = now
            lasted = now - self._since
        if lasted > self.patience_s:
            what = "server" if self.uri.startswith(("http://", "https://")) else "store"
            raise TrackingUnavailable(
                f"tracking {what} {self.uri} unreachable for {lasted:.0f} s "
                f"(patience {self.patience_s:.0f} s)"
            ) from None

    def ok(self) -> None:
        with self._lock:
            if self._since is not None:
                self._ended = time.monotonic()
            self._since = None

    def calm_for(self) -> float:
        """Seconds the server has answered since the last outage (inf: none seen; 0: now)."""
        with self._lock:
            if self._since is not None:
                return 0.0
            return float("inf") if self._ended is None else time.monotonic() - self._ended

    def calm_since(self) -> float | None:
        """Monotonic time since which the store has answered without a break (-inf: no outage
        seen; None: unreachable now). Leases are watched only from then on (`leases.Judge`)."""
        with self._lock:
            if self._since is not None:
                return None
            return float("-inf") if self._ended is None else self._ended

    def seconds(self) -> float | None:
        """How long the current outage has lasted, or None."""
        with self._lock:
            return None if self._since is None else time.monotonic() - self._since


def quiet_mlflow_retries(uri: str) -> None:
    """Let lrstudy, not MLflow, retry an http(s) store (env defaults; a user's setting wins).

    A database store's failed call is logged by MLflow with a full traceback
    (`mlflow.store.db.utils`, "SQLAlchemy database error") before it raises; lrstudy retries
    it or says it in one line, so that logger is kept to critical messages."""
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    else:
        import logging

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


class PatientClient:
    """An MlflowClient whose calls are retried through a tracking outage (see module doc)."""

    def __init__(self, client: Any, outage: Outage, *, pause_s: float = 1.0) -> None:
        self._client = client
        self.outage = outage
        self._pause_s = pause_s

    @property
    def tracking_uri(self) -> str:
        return self._client.tracking_uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def patient(*args: Any, **kwargs: Any) -> Any:
            return call_patiently(self.outage, attr, *args, pause_s=self._pause_s, **kwargs)

        return patient


def call_patiently(outage: Outage, fn, *args: Any, pause_s: float = 1.0, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, repeated while the server is unreachable (up to the patience)."""
    while True:
        try:
            result = fn(*args, **kwargs)
        except Exception as e:
            if not is_connection_error(e):
                raise
            outage.failed(e)
            time.sleep(pause_s)
            continue
        outage.ok()
        return result


_OUTAGES: dict[str, Outage] = {}
_OUTAGES_LOCK = threading.Lock()


def outage_for(uri: str) -> Outage:
    """This process's outage record for `uri`, shared by its clients, sinks and heartbeat."""
    with _OUTAGES_LOCK:
        if uri not in _OUTAGES:
            _OUTAGES[uri] = Outage(uri, patience_from_env())
        return _OUTAGES[uri]
