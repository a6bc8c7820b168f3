"""lrstudy: measured learning-rate studies with Lightning and MLflow.

Heavy modules (torch, lightning, mlflow) load lazily, so `import lrstudy` stays cheap and the report
stage never pulls in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from lrstudy.rangetest.search import find_lr
    from lrstudy.track.callback import LRStudyCallback

__all__ = ["LRStudyCallback", "find_lr", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "LRStudyCallback":
        from lrstudy.track.callback import LRStudyCallback

        return LRStudyCallback
    if name == "find_lr":
        from lrstudy.rangetest.search import find_lr

        return find_lr
    raise AttributeError(f"module 'lrstudy' has no attribute {name!r}")
