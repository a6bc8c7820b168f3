"""Reading a study file: YAML (with YAML 1.2 floats) -> `StudySpec`, and one-line error messages.

Every mistake becomes a `UserInputError` naming the file, the field path (`optimizers[1].lr`), the
value and what is allowed. No torch here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

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


def read_yaml(path: str | Path) -> Any:
    """A study file's YAML, read (YAML 1.2 floats, duplicate keys refused) but not validated.

    Raises:
        UserInputError: unreadable file or bad YAML.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserInputError(f"{path}: cannot read study file ({e.strerror or e})") from None
    return _parse_yaml(text, str(path))


def parse_spec(text: str, source: str = "<study>") -> StudySpec:
    """Validate a study given as YAML text; `source` names it in error messages."""
    return validate(_parse_yaml(text, source), source)


def validate(raw: Any, source: str) -> StudySpec:
    """A study read from YAML (a dict) -> StudySpec; every mistake is one line naming `source`."""
    if not isinstance(raw, dict):
        raise UserInputError(
            f"{source}: a study file must be a mapping of keys (name, task, ...), got {type(raw).__name__}"
        )
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as e:
        raise UserInputError(format_validation_error(e, source)) from None


def _parse_yaml(text: str, source: str) -> Any:
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
    return raw


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line for the first problem: file, field path, value, what is allowed.

    "(+N more)" counts the other mistakes; the errors pydantic reports for the members of one
    union (`warmup: int | float` fails as an int and as a float) are one mistake.
    """
    errors = _without_consequences(err.errors(include_url=False))
    first = errors[0]
    place = _place(first["loc"])
    union_msg = None
    if place.union is not None:
        members = [e for e in errors if _place(e["loc"]).mistake == place.mistake]
        deep = [e for e in members if _place(e["loc"]).deep]
        if deep:  # the member the value was evidently meant as: its own error says more
            first = deep[0]
            place = _place(first["loc"])
        elif "input" in first:  # no member took the value at all: name the accepted forms
            union_msg = f"{first['input']!r} is not allowed: {_forms(place.union)}"
    field = place.field
    msg = str(first["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    sub = re.match(r"^@([\w\[\].]+): ", msg)  # a model-level check naming the field it is about
    if sub:
        key = sub.group(1)
        field = f"{field}.{key}" if field and not key.startswith("optimizers") else key
        msg = msg[sub.end() :]
    kind = first["type"]
    if union_msg is not None:
        msg = union_msg
    elif kind == "extra_forbidden":
        allowed = list(place.model.model_fields) if place.model is not None else []
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
    others = {_place(e["loc"]).mistake for e in errors} - {place.mistake}
    more = f" (+{len(others)} more)" if others else ""
    return f"{source}: {field or '(top level)'}: {msg}{more}"


def _without_consequences(errors: list[dict]) -> list[dict]:
    """Drop errors that only follow from another: a `schedules` list that fails `min_length`
    because its one item failed is one mistake (the item's), not a second one."""
    locs = [tuple(e["loc"]) for e in errors]
    return [
        e
        for e in errors
        if e["type"] != "too_short"
        or not any(len(o) > len(e["loc"]) and o[: len(e["loc"])] == tuple(e["loc"]) for o in locs)
    ] or errors


def _forms(annotation: Any) -> str:
    """The forms a union accepts, in words: "a string or a {class_path, init_args} mapping"."""
    words: list[str] = []
    for member in get_args(annotation):
        word = _form(member)
        if word and word not in words:
            words.append(word)
    return " or ".join(words)


def _form(annotation: Any) -> str | None:
    if annotation is type(None):
        return None
    if get_origin(annotation) is Annotated:
        return _form(get_args(annotation)[0])
    if get_origin(annotation) is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(annotation))
    if get_origin(annotation) in (tuple, list):
        return "a list"
    if get_origin(annotation) is dict or annotation is dict:
        return "a mapping"
    if _is_model(annotation):
        return "a {" + ", ".join(annotation.model_fields) + "} mapping"
    words = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}
    return words.get(annotation, _name(annotation))


@dataclass(frozen=True)
class _Place:
    """Where one pydantic error is, in the user's terms."""

    field: str  # the path as written in the file, e.g. optimizers[1].layer_lr.decay
    mistake: tuple  # the value at fault; the members of one union share it
    model: type[BaseModel] | None  # the section the last key belongs to (for "unknown key")
    union: Any = None  # the union annotation the error went through, if any
    deep: bool = False  # the error is inside a union member (a key or item of it), not at it


def _place(loc: tuple) -> _Place:
    """Walk an error location through the spec's models, dropping pydantic's own labels.

    Pydantic adds a label for each member of a union it tried (`warmup.int`, `warmup.float`;
    `layer_lr.LayerLR.decay`) and for validator wrappers (`function-after[...]`); neither is a key
    the user wrote. All the members of one union complain about one value: the union's field.
    """
    path: list[str | int] = []
    union_at: tuple | None = None
    union: Any = None
    annotation: Any = StudySpec
    model: type[BaseModel] | None = None
    for part in loc:
        annotation = _without_none(annotation)
        if isinstance(part, int):
            path.append(part)
            args = get_args(annotation)
            annotation = args[0] if args else None  # tuple[X, ...] / list[X] -> X
        elif str(part).startswith("function-"):
            continue
        elif get_origin(annotation) in (Union, UnionType):
            if union_at is None:
                union_at, union = tuple(path), annotation
            annotation = next((m for m in get_args(annotation) if _name(m) == part), None)
        else:
            model = annotation if _is_model(annotation) else None
            path.append(part)
            info = model.model_fields.get(part) if model is not None else None
            annotation = info.annotation if info is not None else None
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    if union_at is None:
        return _Place(field, tuple(path), model)
    return _Place(field, union_at, model, union, deep=len(path) > len(union_at))


def _without_none(annotation: Any) -> Any:
    """`X | None` -> X: pydantic labels no member there, as it does for a real union."""
    if get_origin(annotation) in (Union, UnionType):
        members = [m for m in get_args(annotation) if m is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _name(annotation: Any) -> str | None:
    return getattr(annotation, "__name__", None)
