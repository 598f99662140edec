"""Options checked when a config is built: a wrong value is a one-line error naming the option, not a
silently different run (an unknown ``prediction_type`` once trained on the epsilon target)."""

import dataclasses
import typing
from typing import Any, Literal


def cli_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def literal_choices(hint: Any) -> tuple | None:
    """The allowed values of a ``Literal[...]`` (or ``Literal[...] | None``) type hint, else None."""
    if typing.get_origin(hint) is Literal:
        return typing.get_args(hint)
    choices = [choice for arg in typing.get_args(hint) for choice in (literal_choices(arg) or ())]
    if choices and type(None) in typing.get_args(hint):
        return (*choices, None)
    return tuple(choices) or None


def check_choices(config: Any) -> None:
    """Raise ValueError for the first dataclass field whose value is not among its Literal's values."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        choices = literal_choices(hints[field.name])
        value = getattr(config, field.name)
        if choices is not None and value not in choices:
            listed = ", ".join(repr(c) for c in choices if c is not None)  # None: "the default", not a choice
            raise ValueError(f"{field.name} ({cli_name(field.name)}) must be one of {listed}; got {value!r}")


def check_range(name: str, value: float | None, low: float | None = None, high: float | None = None,
                low_inclusive: bool = True, high_inclusive: bool = True) -> None:
    """Raise ValueError unless ``value`` is None or within [low, high] (open at an end that is not inclusive)."""
    if value is None:
        return
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        bounds = f"{'>=' if low_inclusive else '>'} {low}" if high is None else \
            f"in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
        raise ValueError(f"{name} ({cli_name(name)}) must be {bounds}; got {value!r}")
