"""The one config model of ``deep``: frozen dataclasses whose fields declare their constraints,
one validator, one reader of config files and of config sections.

A config class derives from ``ConfigModel`` and is a ``@dataclass(frozen=True)``; a constrained
field is declared ``hidden: int = setting(64, POSITIVE)``, and a rule between fields is a
``Rule`` in the class attribute ``rules``. Making an instance runs ``validate``: every value
must have its annotated type (an integer is accepted for a float, a whole float for an
integer, a list for a tuple; the value is converted) and meet its field's checks, then every
rule must hold; otherwise ValueError ``"field: expected ..., got ..."``.

``from_mapping(cls, mapping, where)`` makes an instance from plain values (a section of a
config file, the ``config`` of a run folder's ``config.json``), refusing unknown keys, and
names ``where`` in every message; ``load_config`` also takes an instance, a JSON/YAML file or
None, plus single-field overrides. ``read_config_file`` is the one JSON/YAML reader of the
configs of ``deep``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="ConfigModel")
#: Key of a field's metadata that holds its checks.
CHECKS = "checks"


@dataclass(frozen=True)
class Check:
    """A constraint on one value: ``holds(value)``, described as ``expected`` in errors."""

    expected: str
    holds: Callable[[Any], bool]


def _finite(value: Any) -> bool:
    return math.isfinite(value)


POSITIVE = Check("a finite number > 0", lambda v: _finite(v) and v > 0)
NON_NEGATIVE = Check("a finite number >= 0", lambda v: _finite(v) and v >= 0)


def interval(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Check:
    """Values in the interval from ``low`` to ``high``, closed unless said open."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"

    def holds(v: Any) -> bool:
        above = v > low if low_open else v >= low
        below = v < high if high_open else v <= high
        return above and below

    return Check(f"a number in {left}{low:g}, {high:g}{right}", holds)


UNIT_INTERVAL = interval(0.0, 1.0)
#: A pair ``(low, high)`` of finite numbers, ``low <= high``.
FINITE_RANGE = Check("[low, high] with finite low <= high", lambda v: _finite(v[0]) and _finite(v[1]) and v[0] <= v[1])


def one_of(choices: Iterable[Any]) -> Check:
    """Values among ``choices``."""
    options = tuple(choices)
    return Check(f"one of {list(options)}", lambda v: v in options)


def each(check: Check) -> Check:
    """Sequences whose every element meets ``check``."""
    return Check(f"entries each {check.expected}", lambda v: all(check.holds(x) for x in v))


def optional(check: Check) -> Check:
    """None, or a value meeting ``check``."""
    return Check(f"null or {check.expected}", lambda v: v is None or check.holds(v))


def setting(default: Any, *checks: Check) -> Any:
    """A dataclass field with ``default`` whose value must meet every check in ``checks``."""
    return dataclasses.field(default=default, metadata={CHECKS: checks})


@dataclass(frozen=True)
class Rule:
    """A constraint between fields: ``holds(config)``; errors name ``fields`` and ``expected``."""

    fields: tuple[str, ...]
    expected: str
    holds: Callable[[Any], bool]


# ----------------------------------------------------------------------------- types
_NAMES = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
    str: ("a string", "strings"),
}


def _type_name(tp: Any) -> str:
    if tp in _NAMES:
        return _NAMES[tp][0]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"a list of {_NAMES[args[0]][1]}" if args[0] in _NAMES else "a list"
    if origin is tuple:
        return f"a list of {len(args)} {_NAMES[args[0]][1] if args[0] in _NAMES else 'values'}"
    if origin in (types.UnionType, typing.Union):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    return getattr(tp, "__name__", str(tp))


def _converted(value: Any, tp: Any) -> Any:
    """``value`` as a value of type ``tp`` (module docstring), or TypeError."""
    origin = typing.get_origin(tp)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            args = typing.get_args(tp)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_converted(v, args[0]) for v in value)
            if len(value) == len(args):
                return tuple(_converted(v, a) for v, a in zip(value, args))
    elif origin in (types.UnionType, typing.Union):
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _converted(value, option)
            except TypeError:
                continue
    else:
        return value
    raise TypeError(_type_name(tp))


def _numeric_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- the validator
@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def validate(config: Any) -> None:
    """Convert every field of the frozen dataclass ``config`` to its annotated type and check
    it, then check the class's ``rules`` (ValueError naming the field and what was expected)."""
    hints = _field_types(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        try:
            converted = _converted(value, hints[f.name])
        except TypeError:
            hint = " (a number written as text: drop the quotes; YAML reads 1e-3 as text, write 1.0e-3)" if _numeric_text(value) else ""
            raise ValueError(f"{f.name}: expected {_type_name(hints[f.name])}, got {value!r}{hint}") from None
        if converted is not value:
            object.__setattr__(config, f.name, converted)
        for check in f.metadata.get(CHECKS, ()):
            if not check.holds(converted):
                raise ValueError(f"{f.name}: expected {check.expected}, got {_shown(converted)}")
    for rule in getattr(type(config), "rules", ()):
        if not rule.holds(config):
            got = ", ".join(_shown(getattr(config, name)) for name in rule.fields)
            raise ValueError(f"{', '.join(rule.fields)}: expected {rule.expected}, got {got}")


def _shown(value: Any) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


class ConfigModel:
    """Base of the config dataclasses of ``deep``: instances validate themselves when made.
    ``rules`` holds the class's constraints between fields."""

    rules: ClassVar[tuple[Rule, ...]] = ()

    def __post_init__(self) -> None:
        validate(self)


# ----------------------------------------------------------------------------- reading
def from_mapping(cls: type[C], mapping: Any, where: str | None = None) -> C:
    """An instance of the config class ``cls`` from the plain values ``mapping`` (missing keys
    take their defaults). Unknown keys, wrong types and values out of range raise ValueError
    beginning with ``where`` (default: the class name)."""
    where = where or cls.__name__
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(mapping).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in set(mapping) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; expected names from {sorted(names)}")
    try:
        return cls(**mapping)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def read_config_file(source: str | os.PathLike) -> dict[str, Any]:
    """The top-level mapping of a JSON (``.json``) or YAML (``.yaml``/``.yml``) config file
    (ValueError naming the file otherwise)."""
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ValueError(f"{path}: expected a .json, .yaml or .yml config file")
    text = path.read_text()
    if suffix == ".json":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
    else:
        import yaml

        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not valid YAML ({exc})") from None
        values = {} if values is None else values
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(values).__name__}")
    return values


def load_config(cls: type[C], source: Any = None, **overrides: Any) -> C:
    """An instance of the config class ``cls`` from ``source`` (an instance, a mapping, a
    JSON/YAML file or None for the defaults) with ``overrides`` replacing single fields."""
    if isinstance(source, cls):
        if not overrides:
            return source
        values = {f.name: getattr(source, f.name) for f in dataclasses.fields(cls)}
        where = cls.__name__
    elif source is None:
        values, where = {}, cls.__name__
    elif isinstance(source, Mapping):
        values, where = dict(source), cls.__name__
    elif isinstance(source, (str, os.PathLike)):
        values, where = read_config_file(source), str(source)
    else:
        raise ValueError(f"{cls.__name__}: expected an instance, a mapping or a config file, got {type(source).__name__}")
    return from_mapping(cls, {**values, **overrides}, where)


def config_values(config: Any) -> dict[str, Any]:
    """The fields of a config instance as plain JSON values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
