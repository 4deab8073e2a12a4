"""store_by_slots: the cheaper __init__ builds exactly what the dataclass one builds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from callcenter.fastinit import store_by_slots


@dataclass(frozen=True, slots=True)
class Slow:
    a: str
    b: int = 2
    c: dict[str, str] = field(default_factory=dict)
    d: tuple[str, ...] = ()


@store_by_slots
@dataclass(frozen=True, slots=True)
class Fast:
    a: str
    b: int = 2
    c: dict[str, str] = field(default_factory=dict)
    d: tuple[str, ...] = ()


CASES: list[tuple[tuple[object, ...], dict[str, object]]] = [
    (("x",), {}),
    (("x", 5), {"d": ("y",)}),
    ((), {"a": "x", "c": {"k": "v"}}),
]


@pytest.mark.parametrize(("args", "kwargs"), CASES)
def test_same_instances_as_the_dataclass_init(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    fast, slow = Fast(*args, **kwargs), Slow(*args, **kwargs)  # type: ignore[arg-type]
    assert dataclasses.astuple(fast) == dataclasses.astuple(slow)
    assert repr(fast) == repr(slow).replace("Slow(", "Fast(")
    assert fast == Fast(*args, **kwargs)  # type: ignore[arg-type]


def test_defaults_frozen_and_argument_errors() -> None:
    first, second = Fast("x"), Fast("x")
    assert first.c == {} and first.c is not second.c  # a fresh default per instance
    assert Fast("x", d=("y",)) == Fast("x", 2, {}, ("y",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.a = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Fast()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Fast("x", nope=1)  # type: ignore[call-arg]


def test_refuses_classes_it_cannot_serve() -> None:
    @dataclass(frozen=True)
    class NoSlots:
        a: str

    with pytest.raises(TypeError, match="slots"):
        store_by_slots(NoSlots)
