"""Successive halving's rung decisions, made asynchronously (ASHA) and recorded in the store.

A trial that reaches a rung (an epoch end, `HalvingSpec.rungs`) asks `RungJudge.judge`: does my
configuration go on? The answer compares the configuration's seed-mean metric at that rung with
every configuration that has reached it so far, as Optuna's `SuccessiveHalvingPruner` does: go on
while in the top 1/eta of them; with fewer than eta values recorded, only the best so far goes on.
Nobody waits for a rung to fill (Li et al., "A System for Massively Parallel Hyperparameter
Tuning", MLSys 2020).

Each decision is a tag on the deciding run, `lrstudy.rung.<epoch>` = {"value", "config_value",
"decision", "competitors"}, written before it is acted on. So:
- it is made once per trial key: only the key's claim owner decides (claims are exactly-once), and
  a rerun after a crash finds the decision on the key's earlier run and follows it instead of
  deciding again (training is deterministic, so it reaches the rung with the same value);
- values recorded by any run of a key count once (the key's newest value wins);
- the pool is the study's current version (spec hash): an edited study does not compete with
  its old self.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from lrstudy import names
from lrstudy.track import runs as track_runs

CONTINUE = "continue"
STOP = "stop"


@dataclass(frozen=True)
class RungEntry:
    """A trial at a rung: its claimed run, identity and its value of the ranking metric."""

    run_id: str
    key: str
    config_key: str
    value: float


@dataclass(frozen=True)
class Decision:
    decision: str  # CONTINUE or STOP
    value: float
    config_value: float
    competitors: int  # configurations that had reached the rung, this one included
    reused: bool = False  # found on the key's earlier run (a rerun after a crash)

    @property
    def stop(self) -> bool:
        return self.decision == STOP

    def as_tag(self) -> str:
        return json.dumps({"value": self.value, "config_value": self.config_value,
                           "decision": self.decision, "competitors": self.competitors})  # fmt: skip


def rung_tag(epoch: int) -> str:
    return f"{names.TAG_RUNG_PREFIX}{epoch}"


def parse_rung_tag(text: str) -> dict | None:
    """A recorded decision, or None for a tag that is not one (hand-edited, truncated)."""
    try:
        out = json.loads(text)
    except ValueError:
        return None
    return out if isinstance(out, dict) and out.get("decision") in (CONTINUE, STOP) else None


def promotable(value: float, competing: Sequence[float], eta: float, mode: str) -> bool:
    """ASHA's rule (as Optuna's `_is_trial_promotable_to_next_rung`): go on when `value` is in
    the top floor(n / eta) of the n competing values (itself included); below eta values, only
    when it is the best so far. NaN (a diverged configuration) counts as the worst value."""
    worst = -math.inf if mode == "max" else math.inf
    clean = sorted(worst if math.isnan(v) else v for v in competing)
    value = worst if math.isnan(value) else value
    keep = max(int(len(clean) // eta), 1)
    if mode == "max":
        return value >= clean[-keep] and value != worst
    return value <= clean[keep - 1] and value != worst


class RungJudge:
    """Decides and records rung decisions for one study version in one experiment."""

    def __init__(self, client, experiment_id: str, study: str, spec_hash: str, *, mode: str,
                 eta: float) -> None:  # fmt: skip
        self.client, self.experiment_id = client, experiment_id
        self.study, self.spec_hash, self.mode, self.eta = study, spec_hash, mode, eta

    def judge(self, epoch: int, entries: list[RungEntry]) -> list[Decision]:
        """Decide for every entry (trials reaching rung `epoch` together, e.g. a population's
        members) against the configurations recorded at that rung plus each other, and record
        each decision on the entry's run before returning it."""
        tag = rung_tag(epoch)
        recorded: dict[str, tuple[str, float]] = {}  # key -> (config key, value)
        earlier: dict[str, dict] = {}  # key -> its decision on an earlier run of the key
        mine = {e.run_id for e in entries}
        for run in self._study_runs():
            tags = run.data.tags
            found = parse_rung_tag(tags.get(tag, ""))
            key = tags.get(names.TAG_TRIAL_KEY)
            if found is None or key is None:
                continue
            recorded[key] = (tags.get(names.TAG_CONFIG_KEY, key), float(found["value"]))
            if run.info.run_id not in mine:
                earlier.setdefault(key, found)
        for e in entries:
            if e.key not in earlier:
                recorded[e.key] = (e.config_key, e.value)
        by_config: dict[str, list[float]] = {}
        for config, value in recorded.values():
            by_config.setdefault(config, []).append(value)
        means = {c: _mean(v) for c, v in by_config.items()}
        out = []
        for e in entries:
            if e.key in earlier:
                d = earlier[e.key]
                out.append(Decision(d["decision"], float(d["value"]), float(d["config_value"]),
                                    int(d["competitors"]), reused=True))  # fmt: skip
                continue
            mean = means[e.config_key]
            go = promotable(mean, list(means.values()), self.eta, self.mode)
            out.append(Decision(CONTINUE if go else STOP, e.value, mean, len(means)))
        for e, d in zip(entries, out, strict=True):
            track_runs.set_tags(self.client, e.run_id, {tag: d.as_tag()})
        return out

    def _study_runs(self) -> list:
        runs = track_runs.search_all(
            self.client,
            [self.experiment_id],
            f"tags.`{names.TAG_KIND}` = '{names.KIND_TRIAL}' "
            f"and tags.`{names.TAG_SPEC_HASH}` = '{self.spec_hash}'",
        )
        return [r for r in runs if r.data.tags.get(names.TAG_STUDY) == self.study]


def _mean(values: list[float]) -> float:
    # A diverged seed (NaN) makes the configuration's mean NaN: the worst, as in the report.
    return math.fsum(values) / len(values)
