"""Spec stage: a study file (YAML) -> a frozen, validated `StudySpec`; every mistake is one line.

`study.py` holds the study model, `task.py` its task section (data, model, a user's classes,
metric), `lr.py` the optimizer, LR and schedule sections (and how an LR expands into values),
`load.py` the YAML reading and error formatting, and `optimizers.py` the optimizer catalogue the
spec is validated against (all torch-free).
"""

from lrstudy.spec.load import load_spec, parse_spec
from lrstudy.spec.lr import LRRange, OptimizerSpec, ScheduleSpec
from lrstudy.spec.study import StudySpec

__all__ = ["LRRange", "OptimizerSpec", "ScheduleSpec", "StudySpec", "load_spec", "parse_spec"]
