"""lrstudy: measured learning-rate studies with Lightning and MLflow.

Heavy modules (torch, lightning, mlflow) load lazily, so `import lrstudy` stays cheap and the report
stage never pulls in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:
    from lrstudy.api import run_study
    from lrstudy.rangetest.search import find_lr
    from lrstudy.report.best import best_config
    from lrstudy.report.results import load_results
    from lrstudy.track.callback import LRStudyCallback

__all__ = ["LRStudyCallback", "best_config", "find_lr", "load_results", "run_study", "__version__"]

# Public name -> the module that defines it, imported on first use.
_LAZY = {
    "LRStudyCallback": "lrstudy.track.callback",
    "find_lr": "lrstudy.rangetest.search",
    "load_results": "lrstudy.report.results",
    "best_config": "lrstudy.report.best",
    "run_study": "lrstudy.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lrstudy' has no attribute {name!r}")
