"""One source for a command's defaults: the CLI reads each default from the function or dataclass
it calls (:func:`default_of`), so ``prnseg MODE --help``, the Python API and the run agree."""

from __future__ import annotations

import dataclasses
import inspect


def default_of(owner, name: str):
    """The default of field ``name`` of the dataclass ``owner`` (its ``default_factory`` called), or
    of parameter ``name`` of the function ``owner``; a ``KeyError`` when it has none."""
    if dataclasses.is_dataclass(owner):
        field = next((f for f in dataclasses.fields(owner) if f.name == name), None)
        if field is not None and field.default is not dataclasses.MISSING:
            return field.default
        if field is not None and field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
    else:
        param = inspect.signature(owner).parameters.get(name)
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    raise KeyError(f"{getattr(owner, '__qualname__', owner)}: {name!r} has no default")
