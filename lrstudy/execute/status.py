"""What `plan` shows: every trial of a study and where it stands in the store (read-only)."""

from __future__ import annotations

from dataclasses import dataclass

from lrstudy import names
from lrstudy.errors import UserInputError
from lrstudy.plan import Trial
from lrstudy.spec import StudySpec
from lrstudy.track import runs as track_runs
from lrstudy.track.claims import Lease, is_done, is_stale


@dataclass(frozen=True)
class TrialStatus:
    trial: Trial
    state: str  # "done", "running" (claimed by a live worker) or "todo"


def study_status(spec: StudySpec, source: str, tracking_uri: str) -> list[TrialStatus]:
    """Plan the study (checking data set and model as `run` would) and read what is done.

    Raises:
        UserInputError: any mistake `run` would refuse; a missing store is not one (nothing done).
    """
    from lrstudy.track.store import experiment_id, open_client
    from lrstudy.train.preflight import preflight

    trials, _ = preflight(spec, source)
    runs: list = []
    try:
        client = open_client(tracking_uri, create=False)
        exp = experiment_id(client, spec.experiment, create=False)
        if exp is not None:
            runs = track_runs.search_study_runs(client, exp, names.KIND_TRIAL, spec.name)
    except UserInputError:
        pass  # no store yet: nothing is done
    lease = Lease.from_env()
    done = {r.data.tags.get(names.TAG_TRIAL_KEY) for r in runs if is_done(r)}
    running = {
        r.data.tags.get(names.TAG_TRIAL_KEY)
        for r in runs
        if r.info.status == "RUNNING" and not is_stale(r, lease)
    }
    return [
        TrialStatus(t, "done" if t.key in done else "running" if t.key in running else "todo")
        for t in trials
    ]
