"""Where runs go: resolve the tracking URI, check it is reachable, initialise the store once."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from lrstudy import names
from lrstudy.errors import UserInputError

DEFAULT_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(flag: str | None = None, spec_uri: str | None = None) -> str:
    """--tracking-uri flag, else MLFLOW_TRACKING_URI, else the study's tracking.uri, else sqlite."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or spec_uri or DEFAULT_URI


def open_client(uri: str, *, create: bool = True):
    """An `MlflowClient` on `uri`, with the store initialised and reachable.

    Doing this once, in the parent process, before any trial matters: several processes creating
    a fresh sqlite store at once race on its schema migration (design.md).

    Raises:
        UserInputError: the server is unreachable, the sqlite path's folder is missing, or the URI
            scheme is not one MLflow can open.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

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
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)  # creates / migrates the store schema
    except MlflowException as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserInputError(f"tracking URI {uri}: cannot open the store ({first})") from None
    return client


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
