"""Reading a study file: YAML (with YAML 1.2 floats) -> `StudySpec`, and one-line error messages.

Every mistake becomes a `UserInputError` naming the file, the field path (`optimizers[1].lr`), the
value and what is allowed. No torch here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lrstudy.errors import UserInputError
from lrstudy.spec.study import StudySpec

# PyYAML follows YAML 1.1, where "1e-3" (no dot) is a string; YAML 1.2 and users say it is a float.
_FLOAT = re.compile(
    r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
    r"|[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?:inf|Inf|INF)|[-+]\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


class _Loader(yaml.SafeLoader):
    pass


_Loader.yaml_implicit_resolvers = {
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _ch in "-+0123456789.":
    _Loader.yaml_implicit_resolvers[_ch] = [
        (tag, rx)
        for tag, rx in _Loader.yaml_implicit_resolvers.get(_ch, [])
        if tag != "tag:yaml.org,2002:float"
    ]
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _no_duplicate_keys(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file.

    Raises:
        UserInputError: unreadable file, bad YAML (with line number) or an invalid field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserInputError(f"{path}: cannot read study file ({e.strerror or e})") from None
    return parse_spec(text, source=str(path))


def parse_spec(text: str, source: str = "<study>") -> StudySpec:
    """Validate a study given as YAML text; `source` names it in error messages."""
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise UserInputError(
            f"{source}: invalid YAML at {where}: {e.problem or e.context}"
        ) from None
    except yaml.YAMLError as e:
        raise UserInputError(f"{source}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise UserInputError(
            f"{source}: a study file must be a mapping of keys (name, task, ...), got {type(raw).__name__}"
        )
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as e:
        raise UserInputError(format_validation_error(e, source)) from None


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line for the first problem: file, field path, value, what is allowed."""
    errors = err.errors(include_url=False)
    first = errors[0]
    field = _loc(first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    sub = re.match(r"^@([\w\[\].]+): ", msg)  # a model-level check naming the field it is about
    if sub:
        key = sub.group(1)
        field = f"{field}.{key}" if field and not key.startswith("optimizers") else key
        msg = msg[sub.end() :]
    kind = first["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(first["loc"][:-1])
        msg = f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
    elif kind == "missing":
        msg = "required field is missing"
    elif kind == "literal_error":
        msg = f"{first.get('input')!r} is not allowed: {msg.lower()}"
    elif sub:
        pass
    elif (
        "input" in first
        and not isinstance(first["input"], dict)
        and "not allowed" not in msg
        and repr(first["input"]) not in msg
    ):
        msg = f"{first['input']!r} is not allowed: {msg}"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {field or '(top level)'}: {msg}{more}"


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after[_ordered(), LRRange]",) or str(part).startswith(
            ("function-", "tuple[")
        ):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _allowed_keys(loc: tuple) -> list[str]:
    """Field names of the model at `loc` (for "unknown key" messages)."""
    model: Any = StudySpec
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        if info is None:
            return []
        model = _model_in(info.annotation)
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None
