"""The study's task section: the data and model it trains (lrstudy's, or a user's classes named
LightningCLI-style by `class_path` + `init_args`), the loss, and the metric that ranks
configurations. Apart from the study model because it is the part a user's own code plugs into.
Torch-free, like the rest of the spec.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lrstudy.spec.lr import StrictModel

# A dotted import path to a class: `mypkg.models.LitClassifier`.
_CLASS_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


class ClassRef(StrictModel):
    """A user's class, LightningCLI style: where to import it from and its constructor's arguments.

    Resolved (imported, checked against the class's signature) by `lrstudy.train.user_classes`,
    before anything is written: the spec stays torch-free.
    """

    class_path: str
    init_args: dict[str, Any] = {}

    @field_validator("class_path")
    @classmethod
    def _dotted(cls, v: str) -> str:
        if not _CLASS_PATH.match(v):
            raise ValueError(
                f"{v!r} is not allowed: a dotted import path to a class, e.g. mypkg.models.MyModel"
            )
        return v


class MetricSpec(StrictModel):
    """The metric that ranks configurations: its final (last logged) value, seed-averaged."""

    name: str = Field(min_length=1, max_length=250)
    mode: Literal["max", "min"] | None = None

    @field_validator("name")
    @classmethod
    def _mlflow_name(cls, v: str) -> str:
        # What MLflow accepts as a metric name; lrstudy records a module's other names with
        # `_` for the characters it refuses (`acc@1` as `acc_1`), so name that one here.
        if not re.match(r"^[/\w.\- :]*$", v):
            fixed = re.sub(r"[^\w\-. /:]", "_", v)
            raise ValueError(
                f"{v!r} is not allowed: MLflow metric names hold letters, digits, _ - . / : and "
                f"spaces; a module's {v!r} is recorded as {fixed!r}: name that"
            )
        return v

    @property
    def resolved_mode(self) -> str:
        """Higher is better unless told, or unless the name says it is a loss or an error."""
        low = self.name.lower()
        return self.mode or ("min" if any(w in low for w in ("loss", "err", "perplex")) else "max")


LOSSES = ("cross_entropy", "mse")  # task.loss by name (a plain nn.Module's training loss)


class TaskSpec(StrictModel):
    """What is trained: a reference model on a data set, a user's `nn.Module` (model class) on a
    data set, or a user's LightningModule (`module`, with an optional `datamodule`)."""

    dataset: str | ClassRef | None = None
    model: str | ClassRef | None = None
    model_args: dict[str, Any] = {}
    data_args: dict[str, Any] = {}
    module: ClassRef | None = None
    datamodule: ClassRef | None = None
    loss: str | ClassRef | None = None
    metric: MetricSpec | None = None
    # Named parameter groups of a user's model, input -> output: group -> parameter-name
    # prefixes (`{encoder: [encoder.], head: [head.]}`); layer_lr and lr/<group> use the names.
    param_groups: dict[str, tuple[str, ...]] | None = None

    @field_validator("param_groups", mode="before")
    @classmethod
    def _groups(cls, v: Any) -> Any:
        if v is None:
            return v
        if not isinstance(v, dict) or not v:
            raise ValueError(f"{v!r} is not allowed: a mapping of group name -> name prefixes")
        out = {}
        for name, prefixes in v.items():
            items = [prefixes] if isinstance(prefixes, str) else prefixes
            if (
                not isinstance(items, list | tuple)
                or not items
                or not all(isinstance(p, str) and p for p in items)
            ):
                raise ValueError(
                    f"{name}: {prefixes!r} is not allowed: a parameter-name prefix or a list of them"
                )
            out[str(name)] = tuple(items)
        return out

    @model_validator(mode="after")
    def _one_kind(self) -> TaskSpec:
        if self.module is not None:
            for key in ("model", "dataset", "loss"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"@{key}: not allowed with task.module (a LightningModule brings "
                        f"its own model and loss; its data come from task.datamodule)"
                    )
            for key in ("model_args", "data_args"):
                if getattr(self, key):
                    raise ValueError(
                        f"@{key}: not allowed with task.module; give init_args to the "
                        f"module or the datamodule"
                    )
            return self
        if self.datamodule is not None:
            raise ValueError("@datamodule: needs task.module (a LightningModule)")
        for key in ("dataset", "model"):
            if getattr(self, key) is None:
                raise ValueError(
                    f"@{key}: required field is missing (or give task.module, a "
                    f"LightningModule class)"
                )
        if isinstance(self.model, ClassRef) and self.model_args:
            raise ValueError("@model_args: give a model class its init_args instead")
        if isinstance(self.dataset, ClassRef) and set(self.data_args) - {"val_fraction"}:
            raise ValueError(
                "@data_args: a dataset class takes init_args; data_args allows only "
                "val_fraction here"
            )
        if self.loss is not None:
            if not isinstance(self.model, ClassRef):
                raise ValueError("@loss: only for a model class (task.model: {class_path})")
            if isinstance(self.loss, str) and self.loss not in LOSSES:
                raise ValueError(
                    f"@loss: {self.loss!r} is not allowed: allowed: {', '.join(LOSSES)}, "
                    f"or {{class_path: ...}}"
                )
        return self

    @property
    def kind(self) -> str:
        """ "reference" (a built-in model), "model" (a user nn.Module) or "module" (a user
        LightningModule)."""
        if self.module is not None:
            return "module"
        return "model" if isinstance(self.model, ClassRef) else "reference"

    @property
    def loss_name(self) -> str:
        """The training loss of a reference or user model: a name, or a loss class's path."""
        if isinstance(self.loss, ClassRef):
            return self.loss.class_path
        return self.loss or "cross_entropy"

    def user_classes(self) -> dict[str, ClassRef]:
        """The user classes this task names, by the field that names them."""
        refs = {k: getattr(self, k) for k in ("module", "datamodule", "model", "dataset", "loss")}
        return {k: v for k, v in refs.items() if isinstance(v, ClassRef)}
