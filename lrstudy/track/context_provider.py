"""MLflow run-context provider: tags fluent runs started inside an lrstudy context.

`pyproject.toml` registers `LRStudyContextProvider` under the `mlflow.run_context_provider` entry
point, so every `mlflow.start_run()` (the fluent API) asks it for tags. Inside `study_context(...)`
- entered by lrstudy around a trial or a plugin fit - it returns the study, the trial key and the
lrstudy version; everywhere else it is inert (`in_context()` is False, `tags()` is empty).

MLflow loads entry points while `import mlflow` runs and only tolerates ImportError/AttributeError
from them, so this module imports nothing heavy (no torch, no lightning) and never raises: the
worst a bug here may do is leave a run untagged.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from lrstudy import __version__, names

try:  # the base class is only needed to be recognised by MLflow; never let it break the import
    from mlflow.tracking.context.abstract_context import RunContextProvider as _Base
except Exception:  # noqa: BLE001 - see the module docstring
    _Base = object  # type: ignore[assignment,misc]

# A ContextVar rather than a global or an environment variable: it is per thread and per asyncio
# task, restores exactly on exit (nesting works), and never leaks into unrelated child processes.
_CURRENT: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "lrstudy_run_context", default=None
)


@contextlib.contextmanager
def study_context(study: str, trial_key: str | None = None) -> Iterator[dict[str, str]]:
    """Within this block, fluent MLflow runs get the lrstudy tags (study, trial key, version).

    Args:
        study: the study name (tag `lrstudy.study`).
        trial_key: the trial's key (tag `lrstudy.trial_key`), when inside one trial.

    Yields:
        The tags that runs started inside the block receive.
    """
    token = enter_context(study, trial_key)
    try:
        yield dict(_CURRENT.get() or {})
    finally:
        exit_context(token)


def enter_context(study: str, trial_key: str | None = None) -> contextvars.Token:
    """Non-`with` form of `study_context` for hooks that open and close in different calls."""
    tags = {names.TAG_STUDY: str(study), names.TAG_VERSION: __version__}
    if trial_key:
        tags[names.TAG_TRIAL_KEY] = str(trial_key)
    return _CURRENT.set(tags)


def exit_context(token: contextvars.Token) -> None:
    """Undo `enter_context`; a token from another context (another thread) is ignored."""
    try:
        _CURRENT.reset(token)
    except (ValueError, RuntimeError):
        # Reset from a different Context than the one that set it: clearing is the safe fallback.
        _CURRENT.set(None)


def current_tags() -> dict[str, str]:
    """The tags of the innermost active lrstudy context, or {} outside one."""
    return dict(_CURRENT.get() or {})


class LRStudyContextProvider(_Base):
    """Tags fluent MLflow runs with the active lrstudy context; inert outside one."""

    def in_context(self) -> bool:
        try:
            return bool(_CURRENT.get())
        except Exception:  # noqa: BLE001 - must never break run creation
            return False

    def tags(self) -> dict[str, str]:
        try:
            return current_tags()
        except Exception:  # noqa: BLE001 - must never break run creation
            return {}
