"""A user's classes named in a study file (`class_path` + `init_args`): import, check, build.

Class paths resolve from the study file's folder, then the working directory, then installed
packages (both folders go to the front of `sys.path` for this process, so workers and unpickling
find the same classes). `init_args` are checked against the constructor's signature before
anything is written, the way optimizer hyperparameters are. The Python API may hand over the
class (or any factory) itself: `factories` then maps the task field to it, and its class_path is
only its name.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lrstudy.errors import UserInputError

# Task field -> (what the class must be, as said in messages; the base class's import path).
EXPECTED = {
    "module": ("a LightningModule", "lightning.pytorch.LightningModule"),
    "datamodule": ("a LightningDataModule", "lightning.pytorch.LightningDataModule"),
    "model": ("a torch.nn.Module", "torch.nn.Module"),
    "dataset": ("a torch.utils.data.Dataset", "torch.utils.data.Dataset"),
    "loss": ("a torch.nn.Module loss (called as loss(output, target))", "torch.nn.Module"),
}

# class_path -> the class or factory it resolved to, in this process. `build_model` looks user
# models up here, so the reference-model code paths (trial and population engines, range test)
# build a user's nn.Module the same way they build their own.
RESOLVED: dict[str, Callable[..., Any]] = {}


def search_dirs(source: str) -> tuple[str, ...]:
    """Where class paths are looked up first: the study file's folder, then the working dir."""
    out = []
    path = Path(source)
    if path.is_file():
        out.append(str(path.resolve().parent))
    out.append(os.getcwd())
    return tuple(dict.fromkeys(out))


def _on_path(dirs: tuple[str, ...]) -> None:
    for d in reversed(dirs):
        if d not in sys.path:
            sys.path.insert(0, d)


def _base(field: str) -> type:
    module, _, name = EXPECTED[field][1].rpartition(".")
    return getattr(importlib.import_module(module), name)


def import_class(path: str, where: str, dirs: tuple[str, ...]) -> Any:
    """Import `path` ("pkg.mod.Class"); a failure is one line naming the path and where we looked.

    Raises:
        UserInputError: no such module or attribute, or the module raised while importing.
    """
    _on_path(dirs)
    module_path, _, attr = path.rpartition(".")
    looked = ", ".join([*dirs, "installed packages"])
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as e:
        missing = e.name or module_path
        raise UserInputError(
            f"{where}: cannot import {path!r}: no module named {missing!r} (looked in {looked})"
        ) from None
    except Exception as e:  # noqa: BLE001 - the user's module failed at import: say how, once
        raise UserInputError(
            f"{where}: importing {module_path!r} failed: {type(e).__name__}: {e}"
        ) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(
                n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")
            )
            hint = f"; it defines: {', '.join(names[:8])}" if names else ""
            raise UserInputError(
                f"{where}: cannot import {path!r}: module {module_path!r} has no {attr!r}{hint}"
            )
        obj = getattr(obj, part)
    return obj


def check_kind(obj: Any, field: str, where: str) -> None:
    """A class must be of the kind the field expects; a plain function is a factory (trusted)."""
    if not isinstance(obj, type):
        if callable(obj):
            return
        raise UserInputError(f"{where}: {obj!r} is not a class; expected {EXPECTED[field][0]}")
    base = _base(field)
    if not issubclass(obj, base):
        got = " -> ".join(c.__name__ for c in obj.__mro__[:-1][:4])
        raise UserInputError(
            f"{where}: {obj.__module__}.{obj.__qualname__} is not {EXPECTED[field][0]} "
            f"(its classes: {got})"
        )
    if field == "model" and issubclass(obj, _base("module")):
        raise UserInputError(
            f"{where}: {obj.__qualname__} is a LightningModule: name it as task.module "
            f"(with task.datamodule), not task.model"
        )


def accepted_args(obj: Any) -> tuple[list[str], list[str], bool]:
    """(all argument names, required ones, takes **kwargs) of a class's constructor or a factory."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return [], [], True  # a builtin we cannot inspect: let the call itself judge
    names, required, var_kw = [], [], False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is p.VAR_POSITIONAL:
            continue
        else:
            names.append(p.name)
            if p.default is p.empty:
                required.append(p.name)
    return names, required, var_kw


def check_init_args(
    obj: Any, init_args: dict[str, Any], where: str, provided: tuple[str, ...] = ()
) -> None:
    """Every init arg must be one the constructor takes; every required one must be given.

    Args:
        provided: arguments lrstudy fills in itself (a swept `batch_size`).
    Raises:
        UserInputError: naming the misspelt argument and listing the allowed ones.
    """
    names, required, var_kw = accepted_args(obj)
    label = getattr(obj, "__qualname__", repr(obj))
    if not var_kw:
        for key in init_args:
            if key not in names:
                allowed = ", ".join(names) if names else "no arguments"
                raise UserInputError(
                    f"{where}.init_args: {key!r} is not allowed: {label} takes {allowed}"
                )
    missing = [n for n in required if n not in init_args and n not in provided]
    if missing:
        raise UserInputError(
            f"{where}.init_args: {missing[0]!r} is required by {label} and missing"
        )


def resolve(
    field: str,
    ref: Any,
    where: str,
    dirs: tuple[str, ...],
    factories: dict[str, Any] | None = None,
    provided: tuple[str, ...] = (),
) -> Any:
    """The class (or factory) a task field names, imported, kind-checked and args-checked."""
    obj = (factories or {}).get(field)
    if obj is None:
        obj = import_class(ref.class_path, f"{where}.class_path", dirs)
    check_kind(obj, field, where)
    check_init_args(obj, ref.init_args, where, provided)
    RESOLVED[ref.class_path] = obj
    return obj


def source_hash(objs: list[Any]) -> str:
    """sha256 (16 hex) of the source files that define these classes: a changed class shows."""
    h = hashlib.sha256()
    for obj in objs:
        try:
            path = inspect.getsourcefile(obj)
            h.update(Path(path).read_bytes() if path else b"")
        except (TypeError, OSError):
            try:  # a class defined in a notebook cell: its source text, if the cell is known
                h.update(inspect.getsource(obj).encode())
            except (TypeError, OSError):
                h.update(
                    f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}".encode()
                )
    return h.hexdigest()[:16]


def class_path_of(obj: Any) -> str:
    """The dotted name of a class or function given to the Python API (its class_path)."""
    module = getattr(obj, "__module__", None) or "__main__"
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or "factory"
    return f"{module}.{name}".replace("<locals>.", "").replace("<lambda>", "lambda")


def ensure_picklable(factories: dict[str, Any]) -> bytes:
    """The API's classes/factories as bytes for other processes (cloudpickle: notebook classes
    travel by value).

    Raises:
        UserInputError: one line naming what cannot be pickled, and why.
    """
    import cloudpickle

    for field, obj in factories.items():
        try:
            cloudpickle.dumps(obj)
        except Exception as e:  # noqa: BLE001 - any pickling failure is the user's object
            raise UserInputError(
                f"{field}={class_path_of(obj)}: cannot be sent to other worker processes "
                f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); use workers=1, or define "
                f"it at the top level of an importable module"
            ) from None
    return cloudpickle.dumps(factories)


_HASHES: dict[tuple[str, ...], str] = {}


def task_code_hash(spec: Any) -> str:
    """`source_hash` of the classes a study's task names (as resolved in this process)."""
    paths = tuple(ref.class_path for ref in spec.task.user_classes().values())
    if paths not in _HASHES:
        _HASHES[paths] = source_hash([RESOLVED[p] for p in paths if p in RESOLVED])
    return _HASHES[paths]
