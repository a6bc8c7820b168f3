"""Keep libraries' chatter out of what lrstudy users read.

MLflow logs INFO lines ("Creating initial MLflow database tables...") and torch/Lightning emit
deprecation warnings that say nothing about the user's study. Set through the environment, so
the worker and writer processes (which inherit it) are quiet too; a user's own setting wins.
"""

from __future__ import annotations

import logging
import os
import warnings

_IGNORED = "ignore::DeprecationWarning,ignore::FutureWarning,ignore::PendingDeprecationWarning"


def quiet_libraries() -> None:
    """Call once at the start of a command, before MLflow or Lightning is imported."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # With a server URI MLflow prints two "View run ..." lines per run (and reads the run back
    # to do it); `lrstudy ui` prints the one link a user needs.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("PYTHONWARNINGS", _IGNORED)
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    silence_lightning_pytree()
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def silence_lightning_pytree() -> None:
    """Ignore the one warning every `Trainer.fit` prints with recent torch (2.13) and Lightning 2.6.

    Lightning's `CombinedLoader` flattens the loaders with its own copy of torch's pytree code
    (`lightning/pytorch/utilities/_pytree.py`), which builds a `LeafSpec()`; torch deprecated that
    class, so each fit warns "`isinstance(treespec, LeafSpec)` is deprecated" (a plain
    UserWarning, so no deprecation filter catches it) in the middle of the progress lines. It is
    about Lightning's internals, not the user's study. The filter matches that message from that
    module only; idempotent (warnings.filterwarnings drops an identical filter before adding).
    Installed by `lrstudy.train.data`, which every training path imports (the CLI, the worker
    processes and the notebook API's `run_study`, which never calls `quiet_libraries`).
    """
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        module=r"lightning\.pytorch\.utilities\._pytree",
    )
