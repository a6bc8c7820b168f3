"""What `plan` and `run` say about a study of a user's classes before it trains.

- The study's optimizer and schedule replace the module's own `configure_optimizers` (as
  LightningCLI warns when it overrides one).
- Finished trials trained on other code: each trial run carries a hash of the source files that
  define the task's classes (tag lrstudy.code_hash); finished trials with another hash still
  count as done (their keys are the same), so the user is told how many and how to redo them.
"""

from __future__ import annotations

from typing import Any

from lrstudy import names
from lrstudy.plan import Trial
from lrstudy.spec import StudySpec


def user_class_notes(spec: StudySpec, trials: list[Trial], data: Any, runs: list) -> list[str]:
    """One line per note (none for a study of lrstudy's own models)."""
    if spec.task.kind == "reference":
        return []
    from lrstudy.track.done_or_stale import is_done
    from lrstudy.train.user_classes import task_code_hash

    notes = []
    if spec.task.kind == "module":
        from lrstudy.train.user_module import replacement_note

        notes.append(f"note: {replacement_note(trials, data)}")
    current = task_code_hash(spec)
    keys = {t.key for t in trials}
    other = [
        r
        for r in runs
        if is_done(r)
        and r.data.tags.get(names.TAG_TRIAL_KEY) in keys
        and r.data.tags.get(names.TAG_CODE_HASH, current) != current
    ]
    if other:
        classes = ", ".join(ref.class_path for ref in spec.task.user_classes().values())
        notes.append(
            f"warning: {len(other)} finished trial{'s' if len(other) > 1 else ''} of this study "
            f"were trained on other code of {classes} (its source changed since); they count as "
            f"done: delete their runs in MLflow, or rename the study, to train them again"
        )
    return notes
