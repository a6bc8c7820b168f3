"""Where runs go: resolve the tracking URI, check it is reachable, initialise the store once."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from lrstudy import names
from lrstudy.errors import UserInputError
from lrstudy.track.outage import PatientClient, outage_for, quiet_mlflow_retries

DEFAULT_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(flag: str | None = None, spec_uri: str | None = None) -> str:
    """--tracking-uri flag, else MLFLOW_TRACKING_URI, else the study's tracking.uri, else sqlite."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or spec_uri or DEFAULT_URI


def open_client(uri: str, *, create: bool = True):
    """An `MlflowClient` on `uri`, with the store initialised and reachable.

    Several processes opening one fresh sqlite store at once race on MLflow's schema set-up
    ("table ... already exists", MLflow issue 19943), so the first open of a sqlite store holds
    an inter-process file lock beside it, and a lost race is retried. The client is a
    `PatientClient` that rides out a server outage or a database restart (`lrstudy.track.outage`).

    Raises:
        UserInputError: the server is unreachable, the sqlite path's folder is missing, or the URI
            scheme is not one MLflow can open.
    """
    from mlflow.exceptions import MlflowException

    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.parent.exists():
            if not create:
                raise UserInputError(f"tracking URI {uri}: folder {db.parent} does not exist")
            db.parent.mkdir(parents=True, exist_ok=True)
        if not create and not db.exists():
            raise UserInputError(f"tracking URI {uri}: no such store ({db} does not exist)")
    quiet_mlflow_retries(uri)
    try:
        client = first_open(uri)
    except MlflowException as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(f"tracking URI {uri}: cannot open the store ({first})") from None
    # Every store rides out an outage: a server's, and a database's restart (direct
    # postgresql+psycopg2:// or mysql stores; a sqlite locked for longer than its busy timeout).
    return PatientClient(client, outage_for(uri))


def first_open(uri: str):
    """An `MlflowClient` on `uri` whose store is created and migrated; safe against other
    processes doing the same at the same moment (see `open_client`)."""
    from mlflow.tracking import MlflowClient

    # MlflowClient() itself creates or migrates a SQL store's schema: hold the lock across it.
    with _store_lock(uri):
        return _first_touch(uri, MlflowClient)


def _first_touch(uri: str, make_client, attempts: int = 5):
    """A client on a created and migrated store; a race lost to a process that does not take
    our lock (an older lrstudy, `mlflow ui`, a notebook) is retried."""
    for attempt in range(attempts):
        try:
            client = make_client(tracking_uri=uri)
            client.search_experiments(max_results=1)
            return client
        except Exception as e:
            racy = any(m in str(e) for m in ("already exists", "duplicate column", "locked"))
            if not racy or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive flock on `<db>.lock` beside a sqlite store (no-op for other stores)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock_path = Path(uri.removeprefix("sqlite:///") + ".lock")
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check_server(uri: str) -> None:
    # MLflow's own client retries a dead server for minutes; one short probe fails fast instead.
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
            resp.read(64)
    except urllib.error.HTTPError:
        return  # it answered: a server is there (maybe behind a proxy without /health)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise UserInputError(
            f"tracking URI {uri}: tracking server unreachable ({reason}); start it with "
            "`mlflow server` or pass another --tracking-uri"
        ) from None


def experiment_id(client, name: str, *, create: bool = True) -> str | None:
    """The id of experiment `name`, created when missing (and `create`); a deleted one is restored."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        if not create:
            return None
        return client.create_experiment(
            name, tags={names.EXPERIMENT_KIND: names.EXPERIMENT_KIND_TRAINING}
        )
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    if create and names.EXPERIMENT_KIND not in exp.tags:
        client.set_experiment_tag(
            exp.experiment_id, names.EXPERIMENT_KIND, names.EXPERIMENT_KIND_TRAINING
        )
    return exp.experiment_id
