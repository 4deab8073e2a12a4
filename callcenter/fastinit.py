"""A cheaper `__init__` for frozen slots dataclasses built on hot paths.

A frozen dataclass's generated `__init__` assigns every field through `object.__setattr__`
(to get past its own frozen `__setattr__`), which costs about twice as much as storing through
the slot descriptors. `store_by_slots(cls)` gives the class an `__init__` with the same
signature, defaults and default factories that stores through the descriptors instead; the
instances are the same (equal, hashable, frozen, same repr).
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, TypeVar

C = TypeVar("C", bound=type)

_NO_VALUE = object()


def store_by_slots(cls: C) -> C:
    """Replace the dataclass `__init__` of `cls` (frozen, slots, no `__post_init__`,
    every field in `__init__`); returns `cls`, so it can be used as a decorator."""
    if "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: needs slots and no __post_init__")
    params = fields(cls)
    if not all(f.init for f in params):
        raise TypeError(f"{cls.__name__}: every field must be an __init__ parameter")
    namespace: dict[str, Any] = {"_NO_VALUE": _NO_VALUE}
    args: list[str] = []
    body: list[str] = []
    for i, f in enumerate(params):
        namespace[f"_set{i}"] = getattr(cls, f.name).__set__
        if f.default is not MISSING:
            namespace[f"_default{i}"] = f.default
            args.append(f"{f.name}=_default{i}")
            body.append(f"    _set{i}(self, {f.name})")
        elif f.default_factory is not MISSING:
            namespace[f"_factory{i}"] = f.default_factory
            args.append(f"{f.name}=_NO_VALUE")
            body.append(f"    _set{i}(self, _factory{i}() if {f.name} is _NO_VALUE else {f.name})")
        else:
            args.append(f.name)
            body.append(f"    _set{i}(self, {f.name})")
    source = f"def __init__(self, {', '.join(args)}):\n" + ("\n".join(body) or "    pass") + "\n"
    exec(source, namespace)  # the source is built from the field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    setattr(cls, "__init__", init)  # noqa: B010
    return cls
