"""Spec stage: a study file (YAML) -> a frozen, validated `StudySpec`; every mistake is one line.

`study.py` holds the pydantic models, `load.py` the YAML reading and error formatting, and
`optimizers.py` the optimizer catalogue the spec is validated against (torch-free).
"""

from lrstudy.spec.load import load_spec, parse_spec
from lrstudy.spec.study import LRRange, OptimizerSpec, ScheduleSpec, StudySpec

__all__ = ["LRRange", "OptimizerSpec", "ScheduleSpec", "StudySpec", "load_spec", "parse_spec"]
