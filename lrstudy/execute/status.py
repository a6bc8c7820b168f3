"""What `plan` shows: every trial of a study and where it stands in the store (read-only)."""

from __future__ import annotations

from dataclasses import dataclass

from lrstudy import names
from lrstudy.errors import UserInputError
from lrstudy.plan import Trial
from lrstudy.spec import StudySpec
from lrstudy.track import runs as track_runs
from lrstudy.track.done_or_stale import is_done, is_stale
from lrstudy.track.leases import Lease


@dataclass(frozen=True)
class TrialStatus:
    trial: Trial
    state: str  # "done", "running" (claimed by a live worker) or "todo"
    population: str = ""  # "P1", "P2", ... for trials still to run together; "" = trial engine
    why_alone: str = ""  # why a trial to run cannot join a population


def study_status(
    spec: StudySpec,
    source: str,
    tracking_uri: str,
    *,
    engine: str = "auto",
    population_size: int | None = None,
) -> list[TrialStatus]:
    """Plan the study (checking data set and model as `run` would), read what is done, and
    group what is left into populations as `run --engine` would.

    Raises:
        UserInputError: any mistake `run` would refuse; a missing store is not one (nothing done).
    """
    from lrstudy.train.preflight import preflight

    trials, data = preflight(spec, source)
    runs = trial_runs(spec, tracking_uri)
    lease = Lease.from_env()
    done = {r.data.tags.get(names.TAG_TRIAL_KEY) for r in runs if is_done(r)}
    running = {
        r.data.tags.get(names.TAG_TRIAL_KEY)
        for r in runs
        if r.info.status == "RUNNING" and not is_stale(r, lease)
    }
    states = {
        t.key: "done" if t.key in done else "running" if t.key in running else "todo"
        for t in trials
    }
    # TPE starts a population with its start-up draws only, as `execute/tpe.batches` does
    cap = spec.search.tpe_startup * len(spec.seeds) if spec.search.sampling == "tpe" else None
    groups, alone = _populations([t for t in trials if states[t.key] == "todo"], data, engine,
                                 population_size, cap)  # fmt: skip
    return [
        TrialStatus(t, states[t.key], groups.get(t.key, ""), alone.get(t.key, "")) for t in trials
    ]


def _populations(
    todo: list[Trial], data, engine: str, size: int | None, cap: int | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """trial key -> population label, and trial key -> why it runs alone."""
    if engine == "trial":
        return {}, {t.key: "--engine trial" for t in todo}
    if len(todo) < 2:
        return {}, {t.key: "the only trial left to run" for t in todo}
    from lrstudy.train.population import form_populations

    populations, solo = form_populations(todo, data, size, max(cap, 2) if cap else None)
    labels = {t.key: f"P{i}" for i, pop in enumerate(populations, 1) for t in pop}
    return labels, {t.key: why for t, why in solo}


def study_notes(spec: StudySpec, source: str, tracking_uri: str) -> list[str]:
    """`plan`'s notes on a study of a user's classes (see `lrstudy.execute.notes`)."""
    versions = study_version_notes(spec, tracking_uri)
    if spec.task.kind == "reference":
        return versions
    from lrstudy.execute.notes import user_class_notes
    from lrstudy.train.preflight import preflight

    trials, data = preflight(spec, source)
    return versions + user_class_notes(spec, trials, data, trial_runs(spec, tracking_uri))


def version_notes(spec: StudySpec, trials: list[Trial], runs: list) -> list[str]:
    """`plan`'s lines on finished trial runs of other versions of the study: those whose key the
    current spec no longer plans are left out of its best, progress and report; those of another
    spec hash with a key it still plans are the same trials and count (`lrstudy.report.versions`)."""
    from lrstudy.report.versions import Version, is_current

    version = Version.of(spec.spec_hash(), {t.key for t in trials})
    other: dict[str, int] = {}
    same = 0
    for r in runs:
        if not is_done(r):
            continue
        h = r.data.tags.get(names.TAG_SPEC_HASH) or "untagged"
        if not is_current(r.data.tags.get(names.TAG_TRIAL_KEY), h, version):
            other[h] = other.get(h, 0) + 1
        elif h != version.spec_hash:
            same += 1
    lines = []
    if other:
        n = sum(other.values())
        lines.append(
            f"{n} finished trial run{'s' if n != 1 else ''} of {len(other)} other version"
            f"{'s' if len(other) != 1 else ''} of this study (spec {', '.join(sorted(other))}; "
            f"this one is {version.spec_hash}) {'are' if n != 1 else 'is'} not part of it: "
            "its best, progress and report leave them out"
        )
    if same:
        lines.append(
            f"{same} finished trial run{'s' if same != 1 else ''} came from another version of "
            "this study with the same settings (a grid it still contains): counted as done"
        )
    return lines


def study_version_notes(spec: StudySpec, tracking_uri: str) -> list[str]:
    """`version_notes` for a study, read from the store (none when there is no store yet)."""
    from lrstudy.plan import plan_trials

    runs = trial_runs(spec, tracking_uri)
    return version_notes(spec, plan_trials(spec), runs) if runs else []


def trial_runs(spec: StudySpec, tracking_uri: str) -> list:
    """The study's trial runs in the store, read-only; none when there is no store yet."""
    from lrstudy.track.store import experiment_id, open_client

    try:
        client = open_client(tracking_uri, create=False)
        exp = experiment_id(client, spec.experiment, create=False)
    except UserInputError:
        return []  # no store yet: nothing is done
    if exp is None:
        return []
    return track_runs.search_study_runs(client, exp, names.KIND_TRIAL, spec.name)
