"""The training loss of a reference or user model: by name (`cross_entropy`, `mse`) or a class.

A LightningModule computes its own loss; these serve `task.model` (an nn.Module lrstudy wraps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

LossFn = Callable[[Tensor, Tensor], Tensor]


def mse(output: Tensor, target: Tensor) -> Tensor:
    """Mean squared error; integer class labels are compared as one-hot vectors, and a single
    output column against a vector of targets."""
    if not target.is_floating_point():
        if output.dim() == 2 and output.shape[1] > 1:
            target = F.one_hot(target.long(), output.shape[1])
        target = target.to(output.dtype)
    if output.dim() == target.dim() + 1 and output.shape[-1] == 1:
        output = output.squeeze(-1)
    return F.mse_loss(output, target)


NAMED: dict[str, LossFn] = {"cross_entropy": F.cross_entropy, "mse": mse}


def make_loss(loss: str | dict[str, Any]) -> LossFn:
    """The loss function a trial's `loss` names: a name above, or {class_path, init_args} of a
    class that preflight resolved (see `lrstudy.train.user_classes.RESOLVED`)."""
    if isinstance(loss, str):
        return NAMED[loss]
    from lrstudy.train.user_classes import RESOLVED

    return RESOLVED[loss["class_path"]](**loss.get("init_args", {}))


def is_classification(y: Tensor) -> bool:
    """Integer targets are class labels: accuracy is measured (and reported) for them."""
    return not torch.is_floating_point(y) and not torch.is_complex(y)
