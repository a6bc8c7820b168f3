"""One study, one current definition: which trial runs belong to the study as it is defined now.

A study may be changed and run again under the same name (another data set option, other LRs).
Its trials are those of the current definition; trials of earlier versions are left out of the
ranking, the best configuration and the diagnosis, with a note saying how many and why. The CLI's
best line, the progress display, `load_results` and the report all decide through `is_current`.

The rule. A version is the spec hash (tag `lrstudy.spec_hash` of the parent and trial runs) and,
when known, the trial keys of its plan. A trial run is current when
- its trial key is one of the current plan's keys (a key hashes every setting that can change what
  the trial computes, so a trial that a grown grid still contains is the same trial, whatever
  spec version ran it: `run` skips it as done, and the report counts it); else, when the keys
  are not known,
- its spec hash is the current one, or it has none (plugin runs, runs written before the tag).
The runner knows the keys (it just planned them); the report re-plans the newest parent run's
logged spec (`study.yaml`) and falls back to the hash alone when that cannot be done.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from lrstudy import names as N


@dataclass(frozen=True)
class Version:
    """The current definition of a study: its spec hash and, when known, its plan's trial keys."""

    spec_hash: str | None = None
    keys: frozenset[str] | None = None

    @classmethod
    def of(cls, spec_hash: str | None, keys: Iterable[str] | None = None) -> Version:
        return cls(spec_hash or None, frozenset(keys) if keys is not None else None)


def is_current(trial_key: str | None, spec_hash: str | None, version: Version | None) -> bool:
    """Whether a trial run (its trial key and spec hash tags) belongs to `version`."""
    if version is None:
        return True
    if version.keys is not None:
        return trial_key in version.keys
    if version.spec_hash is None or not spec_hash:
        return True
    return spec_hash == version.spec_hash


@dataclass(frozen=True)
class LeftOut:
    """Trial runs of earlier versions: count per spec hash, and what differs (when known)."""

    counts: dict[str, int]  # spec hash ('' = untagged) -> runs left out
    differs: dict[str, str]  # spec hash -> 'different task.data_args.noise' (when known)

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def note(self) -> str:
        """'12 trials of 2 earlier versions of this study (different task.data_args.noise) are
        left out: …'"""
        k = len(self.counts)
        whys = sorted({self.differs[h] for h in self.counts if self.differs.get(h)})
        if whys:
            why = "; ".join(whys)
        else:
            why = "spec " + ", ".join(sorted(h or "untagged" for h in self.counts))
        return (
            f"{self.n} trial{'s' if self.n != 1 else ''} of {k} earlier "
            f"version{'s' if k != 1 else ''} of this study ({why}) "
            f"{'are' if self.n != 1 else 'is'} left out: only the trials of the current "
            "definition are ranked, diagnosed and shown."
        )


def _col(runs: pd.DataFrame, name: str) -> pd.Series:
    if name in runs.columns:
        return runs[name]
    return pd.Series([None] * len(runs), index=runs.index, dtype=object)


def current_trials(
    runs: pd.DataFrame, version: Version | None, differs: dict[str, str] | None = None
) -> tuple[pd.DataFrame, LeftOut | None]:
    """The runs of `runs` (a runs frame: tags.* columns) that belong to `version`, and what was
    left out (None when nothing was)."""
    if version is None or runs.empty:
        return runs, None
    keys = _col(runs, f"tags.{N.TAG_TRIAL_KEY}")
    hashes = _col(runs, f"tags.{N.TAG_SPEC_HASH}")
    keep = pd.Series(
        [is_current(k, h, version) for k, h in zip(keys, hashes, strict=True)],
        index=runs.index,
        dtype=bool,
    )
    if keep.all():
        return runs, None
    counts: dict[str, int] = {}
    for h in hashes[~keep]:
        h = "" if h is None or (isinstance(h, float) and pd.isna(h)) else str(h)
        counts[h] = counts.get(h, 0) + 1
    return runs[keep].reset_index(drop=True), LeftOut(counts, dict(differs or {}))


# --- what differs between two versions (their logged specs) ---------------------------------------

IGNORED = ("tracking", "report", "description", "claims")  # not part of the spec hash either


def _flat(d, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            if not prefix and k in IGNORED:
                continue
            out.update(_flat(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = d
    return out


def spec_difference(old: dict | None, new: dict | None, limit: int = 3) -> str:
    """'different task.data_args.noise, seeds' between two resolved specs; '' when unknown."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ""
    a, b = _flat(old), _flat(new)
    paths = sorted(p for p in set(a) | set(b) if a.get(p) != b.get(p))
    if not paths:
        return ""
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return "different " + ", ".join(paths[:limit]) + more


def _prune(x):
    """The resolved YAML fills empty defaults ([] / {} / null) that validation refuses when
    written out; leaving them out gives the same spec back."""
    if isinstance(x, dict):
        return {k: _prune(v) for k, v in x.items() if v not in (None, [], {})}
    return x


def plan_keys(spec: dict | None, spec_hash: str | None) -> frozenset[str] | None:
    """The trial keys of a logged (resolved) spec, re-planned without torch; None when the spec
    cannot be read back or re-planning it does not give the logged spec hash (an older or newer
    lrstudy wrote it): then versions are told apart by hash alone."""
    if not isinstance(spec, dict):
        return None
    try:
        from lrstudy.plan import plan_trials
        from lrstudy.spec import StudySpec

        parsed = StudySpec.model_validate(_prune(spec))
        if spec_hash and parsed.spec_hash() != spec_hash:
            return None
        return frozenset(t.key for t in plan_trials(parsed))
    except Exception:  # noqa: BLE001 - any failure only means: decide by hash
        return None
