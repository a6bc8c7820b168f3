"""A Lightning logger that hands what a user's module logs (`self.log`) to the trial's run.

A user's LightningModule logs its own metrics under its own names, on steps and on epochs;
Lightning passes them to loggers, at the steps it logs them. This logger forwards them to the
trial's `LRStudyCallback`, whose buffered sink writes them with everything else (never a
per-step MLflow call).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from lrstudy.track.callback import LRStudyCallback


class ModuleMetricsLogger(Logger):
    """Forwards `log_metrics` to one trial's callback; keeps each metric's last value."""

    def __init__(self, callback: LRStudyCallback) -> None:
        super().__init__()
        self._callback = callback
        callback.module_logger = True
        self.last: dict[str, float] = {}  # metric -> its last logged value (the trial's final)

    @property
    def name(self) -> str:
        return "lrstudy"

    @property
    def version(self) -> str:
        return "0"

    @property
    def experiment(self) -> None:
        return None

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the trial's params are logged by lrstudy (every resolved setting and init arg)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        # Lightning adds the epoch number; lrstudy logs its own `epoch` metric already.
        values = {k: float(v) for k, v in metrics.items() if k != "epoch"}
        self.last.update(values)
        self._callback.log_module_metrics(values, step)
